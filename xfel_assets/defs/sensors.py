"""Sensors: new runs become partitions and are processed; changed sources are observed.

`new_run_sensor`: add a `run` partition for every complete new raw run and materialize all its assets.

A run folder is taken only when it is complete (:func:`xfel_core.completeness.run_completeness`:
files of every module and the control data, a settle time, complete train indexes, the
facility's marker or command, contiguous sequences and modules covering the control data's
trains; with no settle time, the folder's file names, sizes and modification times the same as at
the previous tick). A run whose raw files change after it was processed (a late file, a rewrite) is
processed again once it is complete again. Its assets are materialized in dependency order, in
the stages of :data:`~xfel_assets.defs.jobs.RUN_STAGES` (raw_run, scan_variable, framemask and the
missing darks; preprocessed_module of every module; binned_cube): each stage's Dagster runs are
requested by the tick after the stage before has succeeded (:mod:`xfel_assets.defs.run_chains`), or
with ``execution.new_runs: backfill`` as one asset backfill. What each run waits for is the
tick's skip reason (Overview > Sensors in the web UI).
"""

from __future__ import annotations

import inspect
import json
import time
from collections.abc import Callable
from pathlib import Path

import dagster as dg

from xfel_core.completeness import run_completeness
from xfel_core.config import BeamtimeConfig
from xfel_core.euxfel.run_summary import data_runs
from xfel_core.exceptions import XfelError
from xfel_core.outputs import read_attrs
from xfel_core.workflows.euxfel import raw_run_version

from xfel_assets.defs import run_chains
from xfel_assets.defs.assets import CONFIG, SPECS, SPECS_BY_NAME
from xfel_assets.defs.jobs import RUN_STAGES, job_assets, run_stage_work
from xfel_assets.defs.model_defs import observation, observations, source_versions
from xfel_assets.defs.partitions import RUNS_PARTITION_SET
from xfel_assets.defs.resources import BeamtimeResource, config_at_load
from xfel_assets.runtime.dagster_names import backfill_request, unfinished_backfill_targets
from xfel_assets.runtime.dagster_patches import patch_sensor_instance

#: Runs taken per tick, so that one evaluation stays well inside the sensor's 60 s limit.
MAX_RUNS_PER_TICK = 20
#: Seconds between two looks for processed runs whose raw files changed.
REDO_CHECK_S = 15.0


patch_sensor_instance()


def described_sensor(**kwargs):
    """``dg.sensor`` with the function's docstring as the description the web UI shows (Automation > Sensors)."""
    def wrap(fn):
        return dg.sensor(description=inspect.cleandoc(fn.__doc__), **kwargs)(fn)
    return wrap


def run_readiness(cfg: BeamtimeConfig, run: str) -> str | None:
    """None if the run folder is complete (the completeness rule), else what it waits for."""
    return run_completeness(cfg, run)


def recorded_raw_version(cfg: BeamtimeConfig, run: str) -> str | None:
    """The raw files' version that the run's raw_run output was made from (None if there is none)."""
    try:
        return json.loads(read_attrs(cfg.output_path(run, "raw_run")).get("input_versions", "{}")).get("raw")
    except ValueError:
        return None


def runs_in_backfills(instance: dg.DagsterInstance) -> set[str]:
    """The runs that an unfinished asset backfill makes outputs of (a backfill adds its runs as partitions
    before it makes them: the sensor must not take them for runs whose outputs are gone)."""
    runs = {SPECS_BY_NAME[asset].partitioning.dynamic_keys(key).get(RUNS_PARTITION_SET)
            for _, target in unfinished_backfill_targets(instance) for asset, key in target if asset in SPECS_BY_NAME}
    return runs - {None}


def changed_runs(cfg: BeamtimeConfig, runs: list[str], redone: dict[str, str]) -> list[tuple[str, str]]:
    """(run, raw version now) of known runs whose raw files are not those their outputs were made from, and
    not those the sensor last asked to process either.

    That is a processed run whose files changed since (a late sequence file, a rewrite), and a run whose
    outputs are gone or were never made (a run deleted and copied again under its number, a run whose
    processing failed) once its files differ from those it was last asked for: a failed run is not
    retried on the same files at every look, and a run still being processed is not asked for twice.
    """
    out = []
    for run in runs:
        now = raw_run_version(cfg, run)
        if now != recorded_raw_version(cfg, run) and redone.get(run) != now:
            out.append((run, now))
    return out


def _interval(key: str, without_config: int) -> int:
    """A sensor's seconds between ticks from the beamtime's ``completeness`` section (``key``)."""
    cfg = config_at_load()
    return getattr(cfg.completeness, key) if cfg is not None else without_config


def read_cursor(context: dg.SensorEvaluationContext, partitions_set: str) -> tuple[dict[str, str], list[str], set[str]]:
    """(pending fingerprints, keys taken, keys known: taken or already partitions) from a sensor's cursor."""
    state = json.loads(context.cursor) if context.cursor else {}
    pending, done = state.get("pending", {}), state.get("done", [])
    return pending, done, set(context.instance.get_dynamic_partitions(partitions_set)) | set(done)


def cursor_json(pending: dict[str, str], done: list[str], ready: list[str]) -> str:
    return json.dumps({"pending": pending, "done": sorted(set(done) | set(ready))})


def complete_and_unchanged(candidates: list[str], readiness: Callable[[str], str | None],
                           fingerprint: Callable[[str], str], pending: dict[str, str],
                           settled: bool = False) -> tuple[list[str], list[str]]:
    """The completeness rule of the sensors: (ready, why the others wait).

    A candidate is ready when it is complete and readable now (``readiness`` gives None) and its
    files' fingerprint equals the one seen at the previous tick (kept in ``pending``, updated here);
    with ``settled`` (``readiness`` already requires a settle time with no change) at once.
    """
    ready, waiting = [], []
    for key in candidates:
        why = readiness(key)
        if why:
            pending.pop(key, None)
            waiting.append(f"{key}: {why}")
            continue
        if settled:
            ready.append(key)
            continue
        fp = fingerprint(key)
        if pending.get(key) == fp:
            ready.append(key)
            pending.pop(key)
        else:
            pending[key] = fp
            waiting.append(f"{key}: complete, waiting one tick to see it unchanged")
    return ready, waiting


def new_complete_keys(context: dg.SensorEvaluationContext, partitions_set: str, root: Path, root_label: str,
                      all_keys: Callable[[], list[str]], readiness: Callable[[str], str | None],
                      fingerprint: Callable[[str], str], limit: int,
                      nothing: str, settled: bool = False) -> tuple[list[str], str] | dg.SkipReason:
    """The sensors' common pass: keys not yet partitions that are complete and unchanged since the
    previous tick, as (ready keys, new cursor); or why there are none (the cursor is kept then)."""
    if not root.is_dir():
        return dg.SkipReason(f"{root_label} {root} does not exist")
    pending, done, known = read_cursor(context, partitions_set)
    candidates = [k for k in all_keys() if k not in known]
    ready, waiting = complete_and_unchanged(candidates[:limit], readiness, fingerprint, pending, settled)
    new_cursor = cursor_json(pending, done, ready)
    if not ready:
        context.update_cursor(new_cursor)
        detail = "; ".join(waiting) if waiting else f"{nothing} in {root}"
        return dg.SkipReason(f"nothing new to process: {detail}")
    return ready, new_cursor


def run_asset_partitions(run: str, modules: list[str], missing_darks: list[str],
                         cfg: BeamtimeConfig) -> set[tuple[dg.AssetKey, str]]:
    """(asset, partition key) of every asset partition of all the stages of a new run (the missing darks; dssc_smalldata if configured)."""
    return {(asset, key)
            for stage in RUN_STAGES
            for job, key in run_stage_work(stage, [run], modules, missing_darks, cfg)
            for asset in job_assets(job)}


@described_sensor(minimum_interval_seconds=_interval("sensor_interval_s", 15), default_status=dg.DefaultSensorStatus.RUNNING,
           asset_selection=dg.AssetSelection.all())
def new_run_sensor(context: dg.SensorEvaluationContext, beamtime: BeamtimeResource) -> dg.SensorResult | dg.SkipReason:
    """Watch the raw root; add each complete new run as a partition and materialize all its assets, stage by
    stage; redo a processed run whose raw files changed, once it is complete again."""
    cfg = beamtime.load()
    state = json.loads(context.cursor) if context.cursor else {}
    redone: dict[str, str] = state.get("redone", {})
    chains: dict[str, dict] = state.get("chains", {})
    found = new_complete_keys(context, RUNS_PARTITION_SET, cfg.raw_root, "raw root", lambda: data_runs(cfg),
                              lambda r: run_readiness(cfg, r), lambda r: raw_run_version(cfg, r),
                              MAX_RUNS_PER_TICK, "no new run folders", cfg.completeness.settle_seconds > 0)
    if isinstance(found, dg.SkipReason) and not cfg.raw_root.is_dir():
        return found
    ready, new_cursor = ([], context.cursor or cursor_json({}, [], [])) if isinstance(found, dg.SkipReason) else found
    waiting = [found.skip_message] if isinstance(found, dg.SkipReason) else []

    # Runs processed before whose raw files changed since (a late sequence file, a rewrite): every
    # REDO_CHECK_S, not every tick (it reads every processed run's folder and raw_run file).
    redo = []
    known = context.instance.get_dynamic_partitions(RUNS_PARTITION_SET)
    recheck = time.time() - state.get("redo_checked", 0.0) >= REDO_CHECK_S
    if recheck:
        state["redo_checked"] = time.time()
        busy = set(ready) | set(chains) | runs_in_backfills(context.instance)
        for run, version in changed_runs(cfg, [r for r in known if r not in busy], redone):
            why = run_readiness(cfg, run)
            if why:
                waiting.append(f"{run} (its raw files are not those it was processed from): {why}")
            else:
                redo.append(run)
                redone[run] = version

    requests, events = [], []
    # The runs being processed: the next stage of each whose stage before has succeeded.
    for run, chain in list(chains.items()):
        reqs, why, ended = run_chains.advance(context.instance, cfg, run, chain, chains)
        requests += reqs
        if why:
            waiting.append(why)
            (context.log.warning if ended else context.log.debug)(why)
        if ended:
            del chains[run]
    for run in ready:  # the files they are taken with: a later change, or their outputs gone, redoes them
        redone[run] = raw_run_version(cfg, run)
    if ready or redo:
        requests += start_runs(context, cfg, ready + redo, chains)
        events = observations(cfg, "euxfel", {RUNS_PARTITION_SET: ready + redo})
    if ready:
        context.log.info(f"new complete runs: {ready}")
    if redo:
        context.log.info(f"runs whose raw files are not those they were processed from, redone: {redo}")
    cursor = json.dumps({**json.loads(new_cursor), "redone": redone, "chains": chains,
                         "redo_checked": state.get("redo_checked", 0.0)})
    if not requests and not ready:
        context.update_cursor(cursor)
        return dg.SkipReason("; ".join(waiting) or "nothing new to process")
    if context.cursor_updated:  # new_complete_keys has set it (no new run): so must we, not the result
        context.update_cursor(cursor)
        cursor = None
    return dg.SensorResult(
        run_requests=requests,
        # The raw files as seen now (unchanged for one tick): what raw_run will be made from.
        asset_events=events,
        dynamic_partitions_requests=[dg.DynamicPartitionsDefinition(name=RUNS_PARTITION_SET).build_add_request(ready)],
        cursor=cursor,
    )


def start_runs(context: dg.SensorEvaluationContext, cfg: BeamtimeConfig, runs: list[str],
               chains: dict[str, dict]) -> list[dg.RunRequest]:
    """The requests that start processing ``runs`` (the darks that no run has yet go with the first):
    the first stage of a chain each (``chains`` gets them), or one asset backfill each."""
    darks = [m for m in run_chains.missing_darks(context.instance, cfg) if m not in run_chains.darks_in_flight(chains)]
    requests = []
    for i, run in enumerate(runs):
        if cfg.execution.new_runs == "backfill":
            requests.append(backfill_request(run_asset_partitions(run, cfg.module_keys, darks if i == 0 else [], cfg),
                                             context.repository_def.asset_graph, tags={run_chains.RUN_TAG: run}))
        else:
            chains[run] = run_chains.new_chain(run)
            requests += run_chains.stage_requests(chains[run], run, 0, cfg, darks if i == 0 else [])
    return requests


@described_sensor(minimum_interval_seconds=30, default_status=dg.DefaultSensorStatus.RUNNING)
def source_change_sensor(context: dg.SensorEvaluationContext, beamtime: BeamtimeResource) -> dg.SensorResult | dg.SkipReason:
    """Record new data versions of the observed sources (raw runs, dark runs, gain maps, in-situ TIFFs, event files, ROI files) when they change.

    The web UI then shows every partition made from the old versions as stale ("upstream data
    changed"). Only changed partitions are recorded; the cursor holds the versions last seen.
    """
    cfg = beamtime.load()
    try:
        now = source_versions(context.instance, cfg)
    except (XfelError, OSError) as e:
        return dg.SkipReason(f"cannot read the sources: {e}")
    before = json.loads(context.cursor) if context.cursor else {}
    events = [observation(asset, key, v) for asset, parts in now.items() for key, v in parts.items()
              if before.get(asset, {}).get(str(key)) != v]
    if not events:
        return dg.SkipReason("no source changed")
    context.log.info(f"{len(events)} source partitions have new data versions")
    return dg.SensorResult(asset_events=events,
                           cursor=json.dumps({a: {str(k): v for k, v in parts.items()} for a, parts in now.items()}))


def refresh_sensors() -> list[dg.AutomationConditionSensorDefinition]:
    """The sensor that makes the variables and run tables again when their inputs change (``refresh`` in the model).

    Dagster's automation evaluates each asset's condition (:func:`xfel_assets.defs.model_defs.refresh_condition`)
    at every tick: a new run's variables follow its cube, the run tables follow every run.
    """
    # The tables of workflows the beamtime has (an event run table without event files would fail every tick).
    names = [a.name for a in SPECS if a.refresh and (CONFIG is None or a.enabled(CONFIG))]
    if not names:
        return []
    return [dg.AutomationConditionSensorDefinition(
        "refresh_sensor", target=dg.AssetSelection.assets(*names), default_status=dg.DefaultSensorStatus.RUNNING,
        minimum_interval_seconds=_interval("refresh_interval_s", 30),
        description="Makes the user variables of a run when its outputs are made or change, and the run tables "
                    "after any run's outputs, variables or notes change.")]
