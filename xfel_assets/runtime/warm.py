"""Everything a Dagster run or step of ours needs, imported and warmed once in a process that forks them.

Forked runs and steps inherit the imported packages and the resolved Dagster repository instead
of paying for them each time. (Compiling the numba kernel here would be inherited too, but
numba's compiled state does not survive the fork: the kernel loads from its disk cache per step.)
Only the serial kernel is warmed: no thread is started here, so a process may fork after it.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import dagster as dg


def warm() -> None:
    """Import what runs and steps use, resolve the repository, load the serial kernel, open a throw-away instance."""
    import dagster._cli.api  # noqa: F401  (the run worker's entry point, used by the run launcher)
    import matplotlib.figure  # noqa: F401  (previews: xfel_core imports matplotlib only where it draws)

    from xfel_core import binning_kernel
    from xfel_core.euxfel import pipeline  # noqa: F401

    from xfel_assets.definitions import defs
    from xfel_assets.defs.beamtime import config_at_load

    defs.get_repository_def()
    # The libraries that only one workflow's steps import where they use them, for the beamtimes that
    # have that workflow (every one if there is no beamtime yet). Measured over numpy, xarray and pandas:
    # pyFAI 2.9 s of CPU, scipy.stats 1.5 s, scipy.ndimage 0.4 s, paid by every forkserver otherwise.
    cfg = config_at_load()
    if cfg is None or cfg.events is not None:
        import pyFAI.integrator.azimuthal  # noqa: F401  (event-file profiles)
        import scipy.stats  # noqa: F401  (the linear-model shot rule)
    if cfg is None or cfg.events is not None or cfg.insitu is not None:
        import scipy.ndimage  # noqa: F401  (hot pixels, bad pixels)
    binning_kernel.warm_up()
    _warm_instance()


def _warm_instance() -> None:
    """Open a throw-away SQLite instance: the storage and migration modules that every run and step opens
    its instance with are imported here once (2 s per run, measured, when each forked process did it)."""
    with tempfile.TemporaryDirectory(prefix="xfel-preload-") as d:
        (Path(d) / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
        with dg.DagsterInstance.from_config(d):
            pass
    try:
        import dagster_postgres  # noqa: F401  (the PostgreSQL storage's modules, where it is installed)
    except ImportError:
        pass
