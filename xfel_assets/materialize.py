"""Materialize every asset of some runs through Dagster, without the daemon (used by `make demo`).

Each Dagster run goes through the multiprocess executor (forkserver with preloaded modules), up
to ``max_concurrent`` Dagster runs at once, stage by stage in dependency order: the run inputs
(raw_run, scan_variable, framemask) and any missing darks, then every module of every run,
then the binned cubes. The daemon-driven ways (the sensor, backfills from the UI) run the same
assets.
"""

from __future__ import annotations

import multiprocessing
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass

import dagster as dg

from .definitions import defs
from .partitions import RUNS_PARTITION_SET, module_partitions, run_module_key, run_module_partitions


def run_inputs_job_def() -> dg.JobDefinition:
    return defs.resolve_job_def("run_inputs_job")


def dark_job_def() -> dg.JobDefinition:
    return defs.resolve_job_def("dark_job")


def module_job_def() -> dg.JobDefinition:
    return defs.resolve_job_def("module_job")


def cube_job_def() -> dg.JobDefinition:
    return defs.resolve_job_def("cube_job")


#: Console logging of warnings and errors only; every event still goes to the instance (the UI).
QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}


@dataclass
class StepOutcome:
    job: str
    partition: str
    success: bool
    seconds: float
    run_id: str
    error: str = ""


def _root_message(err) -> str:
    """The message of the innermost cause of a step's error (ours, naming the file), not Dagster's wrapper."""
    while err.cause is not None:
        err = err.cause
    return err.message.strip()


JOB_FNS = {f.__name__: f for f in (run_inputs_job_def, dark_job_def, module_job_def, cube_job_def)}


def _execute(job_fn_name: str, partition: str, tags: dict) -> StepOutcome:
    """One Dagster run, in a worker process (execute_job is not safe to call from threads)."""
    t0 = time.perf_counter()
    job_fn = JOB_FNS[job_fn_name]
    with dg.DagsterInstance.get() as instance:
        result = dg.execute_job(dg.reconstructable(job_fn), instance=instance, tags=tags, run_config=QUIET)
    error = ""
    if not result.success:
        failures = [e for e in result.all_events if e.is_step_failure]
        error = "; ".join(_root_message(e.step_failure_data.error) for e in failures) or "run failed"
    return StepOutcome(job_fn.__name__.removesuffix("_def"), partition, result.success,
                      time.perf_counter() - t0, result.run_id, error)


def materialize_runs(runs: list[str], instance: dg.DagsterInstance, max_concurrent: int,
                     dark_modules: list[str] | None = None, log=print,
                     stage_seconds: dict[str, float] | None = None) -> list[StepOutcome]:
    """Materialize all assets of ``runs`` (and the darks of ``dark_modules``); returns every Dagster run's outcome.

    ``instance`` must be the persistent instance of $DAGSTER_HOME: the worker processes open it too.
    """
    instance.add_dynamic_partitions(RUNS_PARTITION_SET,
                                    [r for r in runs if not instance.has_dynamic_partition(RUNS_PARTITION_SET, r)])
    modules = module_partitions.get_partition_keys()
    outcomes: list[StepOutcome] = []
    # Worker processes come from a forkserver that has Dagster and our packages imported.
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["dagster", "xfel_assets.definitions"])
    with ProcessPoolExecutor(max_workers=max_concurrent, mp_context=ctx) as pool:

        def stage(name: str, work: list[tuple[str, str, dict]]) -> list[StepOutcome]:
            if not work:
                return []
            t0 = time.perf_counter()
            done = list(pool.map(_execute, *zip(*work)))
            failed = [o for o in done if not o.success]
            if stage_seconds is not None:
                stage_seconds[name] = time.perf_counter() - t0
            log(f"{name}: {len(done) - len(failed)}/{len(done)} Dagster runs succeeded in {time.perf_counter() - t0:.1f} s")
            for o in failed:
                log(f"  FAILED {o.job} {o.partition}: {o.error}")
            outcomes.extend(done)
            return failed

        failed = stage("run inputs and darks",
                       [("run_inputs_job_def", r, {"dagster/partition": r}) for r in runs]
                       + [("dark_job_def", m, {"dagster/partition": m}) for m in (dark_modules or [])])
        bad_runs = set(runs) if any(o.job == "dark_job" for o in failed) else {o.partition for o in failed}
        module_work = []
        for r in runs:
            if r in bad_runs:
                continue
            for m in modules:
                key = run_module_key(r, m)
                module_work.append(("module_job_def", str(key),
                                    dict(run_module_partitions.get_tags_for_partition_key(key))))
        failed = stage("modules", module_work)
        bad_runs |= {o.partition.split("|")[1] for o in failed}
        stage("binned cubes", [("cube_job_def", r, {"dagster/partition": r}) for r in runs if r not in bad_runs])
    return outcomes
