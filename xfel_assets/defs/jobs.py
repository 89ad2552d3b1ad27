"""Asset jobs, one per job of the workflow model (a Dagster job cannot mix partitionings), and the stages of a run.

The jobs, their assets and the stages they belong to are declared with each workflow
(``xfel_core/workflows/*.py``, ``jobs=[Job(...)]`` and each asset's ``job``); nothing here names an asset.
"""

from __future__ import annotations

import dagster as dg

from xfel_core.config import BeamtimeConfig, run_module_key
from xfel_core.lineage import model
from xfel_core.workflows.euxfel import MODULE, RUN, RUN_MODULE

from xfel_assets.defs.assets import JOBS

#: Each job's assets (its selection), for the run requests that target them by asset.
JOB_SELECTIONS: dict[str, list[str]] = {job.name: names for job, names in JOBS}

ALL_JOBS = [dg.define_asset_job(job.name, selection=names, description=job.description) for job, names in JOBS]

#: The stages of a raw run's processing, in dependency order (a Dagster run cannot mix partitionings);
#: run_stage_work says which Dagster runs each stage is. Used by the new-run sensor's chains and by `materialize`.
RUN_STAGES = tuple(model.stages("euxfel"))


def run_stage_work(stage: str, runs: list[str], modules: list[str], darks: list[str] = (),
                   cfg: BeamtimeConfig | None = None) -> list[tuple[str, str]]:
    """(job name, partition key) of every Dagster run of one stage for ``runs``: per run, per run x module,
    and, for the module-partitioned calibration, per module of ``darks``. A job whose assets ``cfg``
    does not have (dssc_smalldata without a smalldata section) is left out; without ``cfg``, every job."""
    work = []
    for job, names in model.stage_jobs("euxfel", stage):
        specs = [model.asset(n) for n in names]
        if cfg is not None and not all(s.enabled(cfg) for s in specs):
            continue
        part = specs[0].partitioning
        keys = {RUN.name: list(runs), MODULE.name: list(darks),
                RUN_MODULE.name: [run_module_key(r, m) for r in runs for m in modules]}[part.name]
        work += [(job.name, k) for k in keys]
    return work


def job_assets(job: str) -> list[dg.AssetKey]:
    """The assets an asset job of ours materializes (its selection, a list of asset names)."""
    return [dg.AssetKey(a) for a in JOB_SELECTIONS[job]]
