"""xfel_core: the science and the I/O of xfel-assets (plain Python, never imports Dagster)."""

import os
from pathlib import Path

__version__ = "0.1.0"

# numba writes its compiled kernels beside their source by default: into the installed package (read-only for
# users of a shared install, and left behind in a clone). Ours go to the user's cache, unless set otherwise.
os.environ.setdefault("NUMBA_CACHE_DIR", str(Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
                                             / "xfel-assets" / "numba"))
