"""`new_measurement_sensor`: each complete new in-situ measurement becomes a partition and is processed.

A measurement folder is taken only when it is complete, by the rule of the run sensor: every
TIFF opens with a Pilatus header and its image data inside the file, the sample has flat-field
frames, the folder's file names, sizes and modification times are the same as at the previous
tick, and its newest file is at least ``insitu.settle_seconds`` old (an acquisition in
progress writes a frame every few seconds). The request is one asset backfill per sample:
insitu_frames and roi_series of its new measurements, then its attenuation_corrected_series.
"""

from __future__ import annotations

import time
from zoneinfo import ZoneInfo

import dagster as dg

from xfel_core import hashing
from xfel_core.config import InsituConfig
from xfel_core.exceptions import XfelError
from xfel_core.insitu import layout
from xfel_core.readers.tiff import read_headers

from xfel_assets.defs.model_defs import observations
from xfel_assets.defs.partitions import MEASUREMENTS_PARTITION_SET, SAMPLES_PARTITION_SET
from xfel_assets.defs.resources import BeamtimeResource
from xfel_assets.defs.sensors import described_sensor, new_complete_keys
from xfel_assets.runtime.dagster_names import backfill_request

#: Measurements checked per tick, so that one evaluation stays well inside the sensor's 60 s limit.
MAX_MEASUREMENTS_PER_TICK = 20


def measurement_readiness(ins: InsituConfig, key: str, now: float) -> str | None:
    """None if the measurement's TIFFs are all complete and readable and old enough, else why not."""
    sample, _ = layout.split_measurement_key(key)
    files = layout.tiff_files(layout.measurement_dir(ins, key))
    try:
        layout.flatfield_dir(ins, sample)
        newest = max(p.stat().st_mtime for p in files)
        if now - newest < ins.settle_seconds:
            return f"newest frame written {now - newest:.0f} s ago (< settle_seconds {ins.settle_seconds:g})"
        read_headers(files, ZoneInfo(ins.timezone))
    except (XfelError, OSError, ValueError) as e:
        return str(e)
    return None


def measurement_asset_partitions(keys: list[str], sample: str) -> set[tuple[str, str]]:
    """(asset, partition key) of what new measurements of a sample make: their frames and ROI series, the sample's series."""
    return {(a, k) for a in ("insitu_frames", "roi_series") for k in keys} | {("attenuation_corrected_series", sample)}


@described_sensor(minimum_interval_seconds=15, default_status=dg.DefaultSensorStatus.RUNNING,
           asset_selection=dg.AssetSelection.groups("insitu"))
def new_measurement_sensor(context: dg.SensorEvaluationContext, beamtime: BeamtimeResource) -> dg.SensorResult | dg.SkipReason:
    """Watch the in-situ sample folders; add each complete new measurement (and its sample) as partitions and process them."""
    cfg = beamtime.load()
    if cfg.insitu is None:
        return dg.SkipReason(f"{cfg.source_file} has no insitu section")
    ins = cfg.insitu
    now = time.time()
    found = new_complete_keys(
        context, MEASUREMENTS_PARTITION_SET, ins.raw_root, "in-situ raw root", lambda: layout.all_measurement_keys(ins),
        lambda k: measurement_readiness(ins, k, now),
        lambda k: hashing.files_fingerprint(layout.tiff_files(layout.measurement_dir(ins, k))),
        MAX_MEASUREMENTS_PER_TICK, "no new measurement folders")
    if isinstance(found, dg.SkipReason):
        return found
    ready, new_cursor = found

    by_sample: dict[str, list[str]] = {}
    for key in ready:
        by_sample.setdefault(layout.split_measurement_key(key)[0], []).append(key)
    asset_graph = context.repository_def.asset_graph
    requests = [
        backfill_request(measurement_asset_partitions(keys, sample), asset_graph, tags={"xfel/sample": sample})
        for sample, keys in by_sample.items()
    ]
    new_samples = sorted(set(by_sample) - set(context.instance.get_dynamic_partitions(SAMPLES_PARTITION_SET)))
    context.log.info(f"new complete measurements: {ready}")
    return dg.SensorResult(
        run_requests=requests,
        asset_events=observations(cfg, "insitu", {MEASUREMENTS_PARTITION_SET: ready}),
        dynamic_partitions_requests=[
            dg.DynamicPartitionsDefinition(name=MEASUREMENTS_PARTITION_SET).build_add_request(ready),
            *([dg.DynamicPartitionsDefinition(name=SAMPLES_PARTITION_SET).build_add_request(new_samples)]
              if new_samples else []),
        ],
        cursor=new_cursor,
    )
