"""Materialize every asset of some runs (and in-situ measurements) through Dagster, without the daemon (used by `make demo`).

Each Dagster run goes through the multiprocess executor (forkserver with preloaded modules), up
to ``max_concurrent`` Dagster runs at once, stage by stage in dependency order: the run inputs
(raw_run, scan_variable, framemask) and any missing darks, then every module of every run,
then the binned cubes. The daemon-driven ways (the sensor, backfills from the UI) run the same
assets.
"""

from __future__ import annotations

import multiprocessing
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass

import dagster as dg

from xfel_core.config import BeamtimeConfig
from xfel_core.insitu.layout import split_measurement_key
from xfel_core.lineage import model

from xfel_assets.definitions import defs
from xfel_assets.defs.beamtime import config_at_load
from xfel_assets.defs.jobs import JOB_SELECTIONS, RUN_STAGES, run_stage_work
from xfel_assets.defs.partitions import (
    EVENT_RUNS_PARTITION_SET,
    MEASUREMENTS_PARTITION_SET,
    RUNS_PARTITION_SET,
    SAMPLES_PARTITION_SET,
    module_partitions,
)
from xfel_assets.defs.steps import HEAVY_POOLS
from xfel_assets.runtime.liveness import fail_dead_runs, pool_waits, worker_tags


def job_def(name: str) -> dg.JobDefinition:
    """One of our asset jobs, resolved (the worker processes rebuild it by name: see _execute)."""
    return defs.resolve_job_def(name)


#: No console logging (a failed step's stack trace is ~80 lines): every event still goes to the
#: instance (the web UI), and the command writes the failures' traces to a log file.
QUIET = {"loggers": {"console": {"config": {"log_level": "CRITICAL"}}}}


@dataclass
class StepOutcome:
    job: str
    partition: str
    success: bool
    seconds: float
    run_id: str
    error: str = ""
    trace: str = ""  # the failed steps' errors with their stack traces


def _root_message(err) -> str:
    """The message of the innermost cause of a step's error (ours, naming the file), not Dagster's wrapper."""
    while err.cause is not None:
        err = err.cause
    return err.message.strip()


def _execute(job: str, partition: str) -> StepOutcome:
    """One Dagster run of the job for ``partition``, in a worker process (execute_job is not safe to call from threads)."""
    t0 = time.perf_counter()
    parts = job_def(job).partitions_def
    # A run x module key: a tag per dimension; an unpartitioned job (a run table): none.
    tags = dict(parts.get_tags_for_partition_key(partition)) if parts is not None else {}
    recon = dg.build_reconstructable_job(__name__, job_def.__name__, reconstructable_args=(job,))
    result = dg.execute_job(recon, instance=_worker_instance(), tags={**tags, **worker_tags()}, run_config=QUIET)
    error = trace = ""
    if not result.success:
        failures = [e for e in result.all_events if e.is_step_failure]
        error = "; ".join(f"{e.step_key}: {_root_message(e.step_failure_data.error)}" for e in failures) or "run failed"
        trace = "\n".join(f"step {e.step_key}:\n{e.step_failure_data.error.to_string()}" for e in failures)
    return StepOutcome(job, partition, result.success,
                      time.perf_counter() - t0, result.run_id, error, trace)


_instance: dg.DagsterInstance | None = None


def _worker_instance() -> dg.DagsterInstance:
    """This worker process's Dagster instance, opened at its first run and kept for the others (opening one
    checks every storage's schema: 5 % of a demo's CPU when done per run, measured)."""
    global _instance
    if _instance is None:
        _instance = dg.DagsterInstance.get()
    return _instance


def _add_partitions(instance: dg.DagsterInstance, name: str, keys: list[str]) -> None:
    known = set(instance.get_dynamic_partitions(name))
    instance.add_dynamic_partitions(name, [k for k in keys if k not in known])


#: Seconds between the checks of a stage that is still running: who holds the pools' slots it waits for.
WAIT_REPORT_S = 10.0


CRASH_MESSAGE = ("its worker process died twice (killed by a signal: out of memory, or a raw file truncated while "
                 "it was memory-mapped); its Dagster runs are marked failed")


class _Stages:
    """Stages of Dagster runs in a pool of worker processes; each stage waits for the one before."""

    def __init__(self, max_concurrent: int, log, stage_seconds: dict[str, float] | None,
                 pools: tuple[str, ...] = ()):
        # Worker processes come from a forkserver that has Dagster and our packages imported; they
        # end when this process ends (xfel_assets/runtime/preload.py).
        self.ctx = multiprocessing.get_context("forkserver")
        self.ctx.set_forkserver_preload(["xfel_assets.runtime.preload"])
        self.max_concurrent = max_concurrent
        self.pool = self._new_pool()
        self.log, self.stage_seconds, self.pools = log, stage_seconds, pools
        self.outcomes: list[StepOutcome] = []

    def _new_pool(self) -> ProcessPoolExecutor:
        return ProcessPoolExecutor(max_workers=self.max_concurrent, mp_context=self.ctx)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.pool.shutdown()

    def _report_waits(self) -> None:
        """Say which runs hold the slots that this command's steps wait for (dead ones are failed first)."""
        with dg.DagsterInstance.get() as instance:
            why = pool_waits(instance, self.pools, say=self.log)
        if why:
            self.log(why)

    def _restart_after_crash(self) -> set[tuple[str, str]]:
        """A new worker pool after one died; (job, partition) of the runs its death left failed."""
        self.pool.shutdown(wait=True)  # the executor has already ended the other workers
        self.pool = self._new_pool()
        with dg.DagsterInstance.get() as instance:
            ids = set(fail_dead_runs(instance))
            return {(r.job_name, r.tags.get("dagster/partition", "")) for r in
                    instance.get_runs(filters=dg.RunsFilter(run_ids=list(ids)))} if ids else set()

    def run(self, name: str, work: list[tuple[str, str]]) -> list[StepOutcome]:
        """Run (job name, partition) items; returns the failed ones.

        A worker that dies (a signal: out of memory, SIGBUS from a raw file truncated while mapped)
        breaks the whole pool: its runs are marked failed, a new pool runs the items not done, and an
        item that was running in a dead worker twice fails, saying so.
        """
        if not work:
            return []
        t0 = time.perf_counter()
        done: list[StepOutcome] = []
        todo, crashes = list(work), {}
        for _ in range(len(work) + 3):
            futures = {self.pool.submit(_execute, *item): item for item in todo}
            todo, pending = [], set(futures)
            while pending:
                finished, pending = wait(pending, timeout=WAIT_REPORT_S, return_when=FIRST_COMPLETED)
                if not finished:
                    self._report_waits()
                for f in finished:
                    try:
                        done.append(f.result())
                    except BrokenProcessPool:
                        todo.append(futures[f])
            if not todo:
                break
            died = self._restart_after_crash()
            again = []
            for item in todo:
                job = item[0]
                if (job, item[1]) in died:
                    crashes[item[1], job] = crashes.get((item[1], job), 0) + 1
                if crashes.get((item[1], job), 0) >= 2:
                    done.append(StepOutcome(job, item[1], False, 0.0, "", CRASH_MESSAGE))
                else:
                    again.append(item)
            todo = again
            if not todo:
                break
        else:
            done += [StepOutcome(item[0], item[1], False, 0.0, "", CRASH_MESSAGE) for item in todo]
        failed = [o for o in done if not o.success]
        if self.stage_seconds is not None:
            self.stage_seconds[name] = time.perf_counter() - t0
        assets = ", ".join(dict.fromkeys(a for job, _ in work for a in JOB_SELECTIONS[job]))
        self.log(f"{name} ({assets}): {len(done) - len(failed)}/{len(done)} Dagster runs succeeded in "
                 f"{time.perf_counter() - t0:.1f} s")
        for o in failed:
            self.log(f"  FAILED {o.job} {o.partition}: {o.error}")
        self.outcomes.extend(done)
        return failed


def _made_before(assets: list[str]) -> set[str]:
    """The assets that ``assets`` are made from, directly or not (the workflow model's inputs)."""
    todo, seen = list(assets), set()
    while todo:
        for inp in model.asset(todo.pop()).inputs:
            if inp.name not in seen and isinstance(model.node(inp.name), model.AssetSpec):
                seen.add(inp.name)
                todo.append(inp.name)
    return seen


def materialize_runs(runs: list[str], instance: dg.DagsterInstance, max_concurrent: int,
                     dark_modules: list[str] | None = None, log=print,
                     stage_seconds: dict[str, float] | None = None, cfg: BeamtimeConfig | None = None,
                     ) -> list[StepOutcome]:
    """Materialize all assets of ``runs`` (and the darks of ``dark_modules``), stage by stage (the model's
    RUN_STAGES), the assets ``cfg`` has (default: the definitions' beamtime); returns every Dagster run's outcome.

    A Dagster run whose inputs failed (or were left out) is left out: a run's failed raw_run stops its
    modules and cube, a module's failed dark every run's module.
    ``instance`` must be the persistent instance of $DAGSTER_HOME: the worker processes open it too.
    """
    cfg = cfg or config_at_load()
    _add_partitions(instance, RUNS_PARTITION_SET, runs)
    modules = module_partitions.get_partition_keys()
    not_made: dict[str, set[str]] = {}  # run (EVERY_RUN: all of them) -> its assets that failed or were left out
    with _Stages(max_concurrent, log, stage_seconds, HEAVY_POOLS) as stages:
        for i, stage in enumerate(RUN_STAGES):
            todo = []
            for job, key in run_stage_work(stage, runs, modules, (dark_modules or []) if i == 0 else [], cfg):
                run = key.split("|")[-1]
                lost = not_made.get(run, set()) | not_made.get(EVERY_RUN, set())
                if lost & _made_before(JOB_SELECTIONS[job]):
                    not_made.setdefault(run, set()).update(JOB_SELECTIONS[job])
                else:
                    todo.append((job, key))
            for o in stages.run(stage, todo):
                run = o.partition.split("|")[-1]
                not_made.setdefault(run if run in runs else EVERY_RUN, set()).update(JOB_SELECTIONS[o.job])
    return stages.outcomes


#: In the bookkeeping of materialize_runs: a failure of a partition of no run (a module's dark).
EVERY_RUN = "*"


def materialize_insitu(measurements: list[str], instance: dg.DagsterInstance, max_concurrent: int,
                       log=print) -> list[StepOutcome]:
    """Materialize insitu_frames and roi_series of ``measurements``, then the series of their samples."""
    samples = sorted({split_measurement_key(k)[0] for k in measurements})
    _add_partitions(instance, MEASUREMENTS_PARTITION_SET, measurements)
    _add_partitions(instance, SAMPLES_PARTITION_SET, samples)
    (measurement_stage, [(measurement_job, _)]), (sample_stage, [(sample_job, _)]) = _stage_jobs("insitu")
    with _Stages(max_concurrent, log, None, HEAVY_POOLS) as stages:
        failed = stages.run(measurement_stage, [(measurement_job.name, k) for k in measurements])
        bad = {split_measurement_key(o.partition)[0] for o in failed}
        stages.run(sample_stage, [(sample_job.name, s) for s in samples if s not in bad])
    return stages.outcomes


def materialize_event_runs(runs: list[str], instance: dg.DagsterInstance, max_concurrent: int,
                           log=print) -> list[StepOutcome]:
    """Materialize event_smalldata and event_cube of runs of event files (one Dagster run each)."""
    _add_partitions(instance, EVENT_RUNS_PARTITION_SET, runs)
    [(stage, jobs)] = _stage_jobs("events")
    with _Stages(max_concurrent, log, None, HEAVY_POOLS) as stages:
        stages.run(stage, [(job.name, r) for job, _ in jobs for r in runs])
    return stages.outcomes


#: The workflows made after the others, from their outputs: the user variables, then the run tables.
AFTER = ("variables", "run_table")


def materialize_after(cfg: BeamtimeConfig, keys: dict[str, list[str]], instance: dg.DagsterInstance,
                      max_concurrent: int, log=print, failed: list[StepOutcome] = ()) -> list[StepOutcome]:
    """The user variables of these runs (``keys`` by partitioning name: run, event_run, measurement), then
    the run tables. A variable that fails fails its own Dagster run; the tables are made all the same.

    A run's variables job that reads (directly or not) an output whose Dagster run failed (``failed``) is
    left out, and said: it could only fail again, as a second failure of the same cause."""
    present = {w.name for w in model.workflows()}
    keys = {**keys, model.BEAMTIME.name: [None]}
    lost: dict[str, set[str]] = {}  # run key: the assets that failed for it
    for o in failed:
        lost.setdefault(o.partition.split("|")[-1], set()).update(JOB_SELECTIONS.get(o.job, ()))
    with _Stages(max_concurrent, log, None, HEAVY_POOLS) as stages:
        for wf in (w for w in AFTER if w in present):
            for stage, jobs in _stage_jobs(wf):
                specs = {job.name: [model.asset(a) for a in names] for job, names in jobs}
                todo = []
                for job, ss in specs.items():
                    if not all(s.enabled(cfg) for s in ss):
                        continue
                    for k in keys.get(ss[0].partitioning.name, []):
                        why = lost.get(k, set()) & _made_before([s.name for s in ss])
                        if why:
                            log(f"  {job} [{k}] left out: it reads {', '.join(sorted(why))}, which failed")
                        else:
                            todo.append((job, k))
                stages.run(stage, todo)
    return stages.outcomes


def make_overviews(names: list[str]) -> list[StepOutcome]:
    """Make these overviews (run tables) in this process, one Dagster run each of the job that makes it."""
    jobs = {n: j.name for j, names in model.jobs() for n in names}
    return [_execute(jobs[n], None) for n in names]


def _stage_jobs(workflow: str) -> list[tuple[str, list]]:
    """(stage, its jobs with their assets) of a workflow, in dependency order."""
    return [(st, model.stage_jobs(workflow, st)) for st in model.stages(workflow)]
