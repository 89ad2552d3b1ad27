"""Imported once by a forkserver (the run launcher's, the executor's, materialize's): everything a run or step needs.

Forked runs and steps inherit the imported packages and the resolved Dagster repository instead
of paying for them each time. (Compiling the numba kernel here would be inherited too, but
numba's compiled state does not survive the fork: the kernel loads from its disk cache per step.)
Every process forked from here ends when the process that started the forkserver ends: a killed
command or run worker leaves no workers behind.
"""

import os
import tempfile
from pathlib import Path

import dagster as dg
import dagster._cli.api  # the run worker's entry point, used by the run launcher
import matplotlib.figure  # noqa: F401  (previews: xfel_core imports matplotlib only where it draws)
import numpy as np

from xfel_core import binning_kernel, frame_kernel
from xfel_core.euxfel import pipeline  # noqa: F401

from xfel_assets.definitions import defs
from xfel_assets.defs.beamtime import config_at_load
from xfel_assets.runtime.liveness import exit_with_process

defs.get_repository_def()
# The libraries that only one workflow's steps import where they use them, for the beamtimes that
# have that workflow (every one if there is no beamtime yet). Measured over numpy, xarray and pandas:
# pyFAI 2.9 s of CPU, scipy.stats 1.5 s, scipy.ndimage 0.4 s, paid by every forkserver otherwise.
_cfg = config_at_load()
if _cfg is None or _cfg.events is not None:
    import pyFAI.integrator.azimuthal  # noqa: F401  (event-file profiles)
    import scipy.stats  # the linear-model shot rule
    frame_kernel.warm_up()  # the event small data's kernels into numba's disk cache
    from xfel_core.events.anomalies import median3x3

    median3x3(np.zeros((3, 3)))  # (the hot pixels' median)
if _cfg is None or _cfg.events is not None or _cfg.insitu is not None:
    import scipy.ndimage  # noqa: F401  (hot pixels, bad pixels)
binning_kernel.warm_up()


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


_warm_instance()

_CLIENT = os.getppid()  # this forkserver's parent: the command, daemon or run worker it forks for
os.register_at_fork(after_in_child=lambda: exit_with_process(_CLIENT))
