"""The executor: the multiprocess executor for runs with several heavy steps, else the run's own process.

Heavy steps are those in the module pool (they read whole detector modules) or the SLURM pool. A run with several
of them runs them in parallel processes forked from a forkserver that has already imported
numpy, h5py, EXtra-data, xarray and our packages. Any other run (a backfill's run of one asset
partition; a run's raw_run, scan_variable and framemask, a few tenths of a second each) runs its
steps in the run's own process: a forkserver of its own would cost that run 4-5 s (measured)
for nothing worth running in parallel.
"""

from __future__ import annotations

import os

import dagster as dg
from dagster._core.definitions.executor_definition import (
    MULTI_PROC_CONFIG,
    _core_multiprocess_executor_creation,
    multiple_process_executor_requirements,
)
from dagster._core.executor.base import Executor
from dagster._core.executor.in_process import InProcessExecutor

from xfel_assets.defs.resources import config_at_load
from xfel_assets.defs.steps import HEAVY_POOLS
from xfel_assets.runtime.dagster_patches import patch_run_execution

PRELOAD_MODULES = ["xfel_assets.runtime.preload"]


patch_run_execution()


class HeavyStepsExecutor(Executor):
    """Delegates a run to the multiprocess executor if it has several module steps, else to the in-process one."""

    def __init__(self, multi: Executor, single: Executor):
        self._multi, self._single = multi, single

    def execute(self, plan_context, execution_plan):
        heavy = [k for k in execution_plan.step_keys_to_execute
                 if execution_plan.get_step_by_key(k).pool in HEAVY_POOLS]
        return (self._multi if len(heavy) > 1 else self._single).execute(plan_context, execution_plan)

    @property
    def retries(self):
        return self._multi.retries

    @property
    def step_dependency_config(self):
        return self._multi.step_dependency_config


@dg.executor(name="xfel_executor", config_schema=MULTI_PROC_CONFIG,
             requirements=multiple_process_executor_requirements())
def xfel_executor(init_context) -> Executor:
    """Multiprocess for several module steps, else in-process (same configuration as `multiprocess`)."""
    multi = _core_multiprocess_executor_creation(init_context.executor_config)
    single = InProcessExecutor(retries=multi.retries, marker_to_close=None,
                               step_dependency_config=multi.step_dependency_config)
    return HeavyStepsExecutor(multi, single)


def _max_concurrent() -> int:
    cfg = config_at_load()
    return cfg.resolved_max_concurrent() if cfg is not None else os.cpu_count() or 1


def make_executor(max_concurrent: int | None = None) -> dg.ExecutorDefinition:
    return xfel_executor.configured(
        {
            "max_concurrent": max_concurrent or _max_concurrent(),
            "start_method": {"forkserver": {"preload_modules": PRELOAD_MODULES}},
        },
        name="xfel_multiprocess",
    )
