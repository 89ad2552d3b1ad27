"""xfel_core: the science and the I/O of xfel-assets (plain Python, never imports Dagster)."""

import os
from pathlib import Path

__version__ = "0.1.0"

#: The user's cache of xfel-assets: numba's compiled kernels, the code versions found (xfel_core.lineage.versions).
CACHE_DIR = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "xfel-assets"
# numba writes its compiled kernels beside their source by default: into the installed package (read-only for
# users of a shared install, and left behind in a clone). Ours go to the user's cache, unless set otherwise.
os.environ.setdefault("NUMBA_CACHE_DIR", str(CACHE_DIR / "numba"))
