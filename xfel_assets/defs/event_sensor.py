"""`new_event_run_sensor`: each complete new run of event files becomes a partition and is processed.

The completeness rule of the other sensors: the run has its files (pal: scan=*/p*.h5; generic:
its file), none changed for ``completeness.settle_seconds``, every file opens as HDF5, and the
files' names, sizes and modification times are the same as at the previous tick. The request is one asset backfill per run: event_smalldata, then
event_cube.
"""

from __future__ import annotations

import time

import dagster as dg
import h5py

from xfel_core import hashing
from xfel_core.config import EventsConfig
from xfel_core.readers.events import event_runs, run_files

from xfel_assets.defs.model_defs import observations
from xfel_assets.defs.partitions import EVENT_RUNS_PARTITION_SET
from xfel_assets.defs.resources import BeamtimeResource
from xfel_assets.defs.sensors import described_sensor, new_complete_keys
from xfel_assets.runtime.dagster_names import backfill_request

MAX_RUNS_PER_TICK = 20


def event_run_readiness(ev: EventsConfig, run: str, settle_s: float = 0.0) -> str | None:
    """None if the run's files settled (nothing changed for ``settle_s``) and every one opens as HDF5, else why not."""
    files = run_files(ev, run)
    if not files:
        return "no files yet"
    quiet = time.time() - max(p.stat().st_mtime for p in files)
    if quiet < settle_s:
        return f"last change {quiet:.0f} s ago: settling for {settle_s:g} s (completeness.settle_seconds)"
    for p in files:
        try:
            with h5py.File(p, "r"):
                pass
        except (OSError, ValueError) as e:
            return f"{p} does not open as HDF5 ({e})"
    return None


@described_sensor(minimum_interval_seconds=15, default_status=dg.DefaultSensorStatus.RUNNING,
           asset_selection=dg.AssetSelection.groups("events"))
def new_event_run_sensor(context: dg.SensorEvaluationContext, beamtime: BeamtimeResource) -> dg.SensorResult | dg.SkipReason:
    """Watch the event-file raw root; add each complete new run as a partition and make its small data and cube."""
    cfg = beamtime.load()
    if cfg.events is None:
        return dg.SkipReason(f"{cfg.source_file} has no events section")
    ev = cfg.events
    found = new_complete_keys(context, EVENT_RUNS_PARTITION_SET, ev.raw_root, "event raw root",
                              lambda: event_runs(ev), lambda r: event_run_readiness(ev, r, cfg.completeness.settle_seconds),
                              lambda r: hashing.files_fingerprint(run_files(ev, r)), MAX_RUNS_PER_TICK, "no new runs")
    if isinstance(found, dg.SkipReason):
        return found
    ready, new_cursor = found
    asset_graph = context.repository_def.asset_graph
    requests = [
        backfill_request([(a, r) for a in ("event_smalldata", "event_cube")], asset_graph, tags={"xfel/event_run": r})
        for r in ready
    ]
    context.log.info(f"new complete event runs: {ready}")
    return dg.SensorResult(
        run_requests=requests,
        asset_events=observations(cfg, "events", {EVENT_RUNS_PARTITION_SET: ready}),
        dynamic_partitions_requests=[dg.DynamicPartitionsDefinition(name=EVENT_RUNS_PARTITION_SET).build_add_request(ready)],
        cursor=new_cursor,
    )
