"""A new raw run's processing as a chain of Dagster runs that the new-run sensor launches stage by stage.

A Dagster run holds one partition key, and a raw run's assets have three partitionings (run, run
x module, module), so its processing is several Dagster runs: the stages of
:data:`~xfel_assets.defs.jobs.RUN_STAGES`. An asset backfill would order them too, but it advances one
stage per backfill-daemon round (30 s in Dagster's own daemon). Here the sensor requests each
stage's runs itself as soon as the stage before has succeeded, so a run's result follows its last
file by the settle time plus the sensor's interval per stage. The runs go through the run queue
(its concurrency limits) and the executors' pools like any other.

A chain is kept in the sensor's cursor, ``{"id", "stage", "n", "darks", "since"}``; its Dagster runs
carry the tags ``xfel/chain`` (the id) and ``xfel/stage``, so what a chain has done is read from the
instance, and a tick that is lost or repeated requests nothing twice (each request has a run key).
"""

from __future__ import annotations

import time
import uuid

import dagster as dg

from xfel_core.config import BeamtimeConfig

from xfel_assets.defs.jobs import RUN_STAGES, job_assets, run_stage_work

CHAIN_TAG = "xfel/chain"
STAGE_TAG = "xfel/stage"
RUN_TAG = "xfel/run"
#: The job of the stage whose assets the run materializes (the run itself is Dagster's implicit asset job).
JOB_TAG = "xfel/job"
STAGE_NAMES = list(RUN_STAGES)

_UNFINISHED = {dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.NOT_STARTED, dg.DagsterRunStatus.STARTING,
               dg.DagsterRunStatus.STARTED, dg.DagsterRunStatus.CANCELING}
#: A stage whose requested runs do not all exist after this long is requested again (same run keys).
MISSING_RUNS_AFTER_S = 120.0


def new_chain(run: str) -> dict:
    """The cursor entry of a chain about to start its first stage."""
    return {"id": f"{run}-{uuid.uuid4().hex[:8]}", "stage": -1, "n": 0, "darks": [], "since": time.time()}


def stage_requests(chain: dict, run: str, stage: int, cfg: BeamtimeConfig, darks: list[str]) -> list[dg.RunRequest]:
    """The run requests of ``stage`` of a chain (updates the chain's cursor entry): each the assets of one of
    the stage's jobs for one partition, with checks."""
    name = STAGE_NAMES[stage]
    work = run_stage_work(name, [run], cfg.module_keys, darks, cfg)
    chain.update(stage=stage, n=len(work), since=time.time(), darks=list(darks) if name == "inputs" else [])
    return [dg.RunRequest(run_key=f"{chain['id']}/{job}/{key}", partition_key=key, asset_selection=job_assets(job),
                          tags={RUN_TAG: run, CHAIN_TAG: chain["id"], STAGE_TAG: name, JOB_TAG: job})
            for job, key in work]


def _stage_runs(instance: dg.DagsterInstance, chain: dict) -> list[dg.DagsterRun]:
    return instance.get_runs(filters=dg.RunsFilter(tags={CHAIN_TAG: chain["id"], STAGE_TAG: STAGE_NAMES[chain["stage"]]}))


def darks_in_flight(chains: dict[str, dict]) -> set[str]:
    """Modules whose dark an open chain's first stage is making."""
    return {m for ch in chains.values() if STAGE_NAMES[ch["stage"]] == "inputs" for m in ch["darks"]}


def missing_darks(instance: dg.DagsterInstance, cfg: BeamtimeConfig) -> list[str]:
    """Modules that have no dark of the configured dark run (none if no dark run is configured): never
    materialized, or made from another dark run (``dark_run`` was changed: a run taken now needs the new one)."""
    if cfg.dark_run is None:
        return []
    done = set(instance.get_materialized_partitions(dg.AssetKey("dark")))
    return [m for m in cfg.module_keys if m not in done or not cfg.output_path(cfg.dark_run_key, "dark", int(m)).exists()]


def advance(instance: dg.DagsterInstance, cfg: BeamtimeConfig, run: str, chain: dict,
            chains: dict[str, dict]) -> tuple[list[dg.RunRequest], str | None, bool]:
    """One tick of a chain: (run requests of its next stage, what it waits for or why it stopped, ended).

    A stage goes on when all its runs succeeded; a failed or canceled run ends the chain (the run
    stays as it is, as after a failed backfill; `backfill --stale-only` or the UI redoes it).
    """
    stage = STAGE_NAMES[chain["stage"]]
    runs = _stage_runs(instance, chain)
    if len(runs) < chain["n"]:
        if time.time() - chain["since"] > MISSING_RUNS_AFTER_S:  # the requests were lost (a daemon restart)
            return stage_requests(chain, run, chain["stage"], cfg, chain["darks"]), None, False
        return [], f"{run}: {stage}: {len(runs)} of {chain['n']} Dagster runs launched", False
    bad = [r for r in runs if r.status in (dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED)]
    if bad:
        what = ", ".join(f"{r.tags.get(JOB_TAG, r.job_name)} {r.tags.get('dagster/partition', '')} ({r.run_id[:8]})" for r in bad)
        return [], f"{run}: stopped, {what} {bad[0].status.value.lower()}", True
    left = [r for r in runs if r.status in _UNFINISHED]
    if left:
        return [], f"{run}: {stage}: {len(runs) - len(left)} of {len(runs)} Dagster runs done", False
    if chain["stage"] + 1 == len(STAGE_NAMES):
        return [], None, True
    if STAGE_NAMES[chain["stage"] + 1] == "modules":
        lacking = missing_darks(instance, cfg)
        if lacking:
            if darks_in_flight(chains) - set(chain["darks"]) or _dark_runs_unfinished(instance):
                return [], f"{run}: waiting for the darks of modules {', '.join(lacking)}", False
            return [], f"{run}: stopped, no dark of modules {', '.join(lacking)} (dark_job failed; see its runs)", True
    return stage_requests(chain, run, chain["stage"] + 1, cfg, []), None, False


def _dark_runs_unfinished(instance: dg.DagsterInstance) -> bool:
    """Whether a Dagster run that makes darks is not finished (ours, a backfill's or one launched from the UI)."""
    dark = dg.AssetKey("dark")
    return any(r.job_name == "dark_job" or dark in (r.asset_selection or ())
               for r in instance.get_runs(filters=dg.RunsFilter(statuses=list(_UNFINISHED))))
