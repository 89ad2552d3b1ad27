"""The multiprocess executor, started so that a step does not pay seconds of start-up.

Steps are forked from a forkserver that has already imported numpy, h5py, EXtra-data, xarray
and our packages, instead of each step starting a fresh interpreter (spawn).
"""

from __future__ import annotations

import os

import dagster as dg

from xfel_core.config import beamtime_path_from_env, load_beamtime

PRELOAD_MODULES = ["xfel_assets.preload"]


def _max_concurrent() -> int:
    path = beamtime_path_from_env()
    if path.exists():
        return load_beamtime(path).execution.resolved_max_concurrent()
    return os.cpu_count() or 1


def make_executor(max_concurrent: int | None = None) -> dg.ExecutorDefinition:
    return dg.multiprocess_executor.configured(
        {
            "max_concurrent": max_concurrent or _max_concurrent(),
            "start_method": {"forkserver": {"preload_modules": PRELOAD_MODULES}},
        },
        name="xfel_multiprocess",
    )
