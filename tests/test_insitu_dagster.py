"""The in-situ assets through Dagster: per measurement and per sample, run config, failures, the sensor, the CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest

from test_dagster import _requested
from test_insitu import SHAPE, insitu_beamtime
from xfel_core.config import load_beamtime
from xfel_core.demo.insitu import write_insitu_sample
from xfel_core.insitu import layout
from xfel_core.insitu import pipeline as ip

MEASUREMENTS = ("m1", "m2")
FRAMES = 16


def resources(config_path: Path) -> dict:
    from xfel_assets.defs.resources import resources_for

    return resources_for(config_path)


def assets(*names: str):
    from xfel_assets.defs.assets import ALL_ASSETS

    return [a for a in ALL_ASSETS if a.key.to_user_string() in names]


@pytest.fixture
def beamtime(tmp_path):
    write_insitu_sample(tmp_path / "raw" / "insitu", "S1", MEASUREMENTS, FRAMES, SHAPE, seed=5)
    return insitu_beamtime(tmp_path, settle_seconds=0.0)


def test_assets_materialize_per_measurement_and_per_sample(beamtime):
    keys = [f"S1/S1_{m}" for m in MEASUREMENTS]
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("insitu_measurements", keys)
        instance.add_dynamic_partitions("insitu_samples", ["S1"])
        for key in keys:
            result = dg.materialize(assets("insitu_frames", "roi_series"), partition_key=key,
                                    resources=resources(beamtime), instance=instance)
            assert result.success
        result = dg.materialize(assets("attenuation_corrected_series"), partition_key="S1",
                                resources=resources(beamtime), instance=instance)
        assert result.success
        assert set(instance.get_materialized_partitions(dg.AssetKey("roi_series"))) == set(keys)
        assert set(instance.get_materialized_partitions(dg.AssetKey("attenuation_corrected_series"))) == {"S1"}

        md = instance.get_latest_materialization_event(dg.AssetKey("roi_series")).asset_materialization.metadata
        assert md["mean_image_with_rois"].value.startswith("![mean image with the ROIs](data:image/png;base64,")
        assert len(md["mean_image_with_rois"].value) < 1_000_000
        assert isinstance(md["frames"], dg.IntMetadataValue) and md["frames"].value == FRAMES
        md = instance.get_latest_materialization_event(
            dg.AssetKey("attenuation_corrected_series")).asset_materialization.metadata
        assert md["series"].value.startswith("![")
        assert isinstance(md["attenuator_changes"], dg.TableMetadataValue)
        assert md["measurements"].value == ", ".join(keys)
        checks = {e.check_name: e.passed for e in result.get_asset_check_evaluations()}
        assert checks == {"continuous_across_changes": True, "all_measurements_included": True}
        cfg = load_beamtime(beamtime)
        df = pd.read_parquet(layout.output_dir(cfg, "S1") / ip.SERIES_FILE)
        assert len(df) == len(keys) * FRAMES and df["time"].is_monotonic_increasing


def test_overwrite_is_asked_in_the_run_config_and_bad_tiffs_fail_naming_the_file(beamtime):
    key = "S1/S1_m1"
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("insitu_measurements", [key])
        assert dg.materialize(assets("insitu_frames"), partition_key=key, resources=resources(beamtime),
                              instance=instance).success
        text = beamtime.read_text().replace("median_filter: bad_pixels", "median_filter: all")
        beamtime.write_text(text)
        result = dg.materialize(assets("insitu_frames"), partition_key=key, resources=resources(beamtime),
                                instance=instance, raise_on_error=False)
        assert not result.success
        error = result.get_step_failure_events()[0].step_failure_data.error
        while error.cause is not None:
            error = error.cause
        assert "insitu_frames.h5 exists and was made from other" in error.message
        result = dg.materialize(assets("insitu_frames"), partition_key=key, resources=resources(beamtime),
                                instance=instance, run_config={"ops": {"insitu_frames": {"config": {"overwrite": True}}}})
        assert result.success

        victim = layout.tiff_files(beamtime.parent / "raw" / "insitu" / "S1" / "S1_m2")[5]
        victim.write_bytes(victim.read_bytes()[:300])
        instance.add_dynamic_partitions("insitu_measurements", ["S1/S1_m2"])
        result = dg.materialize(assets("insitu_frames"), partition_key="S1/S1_m2", resources=resources(beamtime),
                                instance=instance, raise_on_error=False)
        assert not result.success
        failure = result.get_step_failure_events()[0].step_failure_data
        assert victim.name in str(failure.error.to_string())
        # Bad data is not retried (the retry policy is for I/O errors).
        assert not [e for e in result.all_events if e.event_type_value == "STEP_UP_FOR_RETRY"]


def _tick(instance, config_path: Path, cursor):
    from xfel_assets.definitions import defs
    from xfel_assets.defs.insitu_sensor import new_measurement_sensor

    ctx = dg.build_sensor_context(instance=instance, cursor=cursor, definitions=defs, resources=resources(config_path))
    result = new_measurement_sensor(ctx)
    return result, ctx.cursor if not isinstance(result, dg.SensorResult) else result.cursor


def test_sensor_takes_a_measurement_only_once_it_is_complete(tmp_path):
    raw = tmp_path / "raw" / "insitu"
    write_insitu_sample(raw, "S1", ("m1",), 6, SHAPE, seed=6)
    config_path = insitu_beamtime(tmp_path, settle_seconds=30.0)
    old = time.time() - 120
    for p in (raw / "S1" / "S1_m1").iterdir():
        os.utime(p, (old, old))
    with dg.instance_for_test() as instance:
        result, cursor = _tick(instance, config_path, None)
        assert isinstance(result, dg.SkipReason) and "S1/S1_m1: complete, waiting one tick" in result.skip_message
        # Meanwhile: a measurement being acquired (its newest frame just written) and one with a half-written TIFF.
        write_insitu_sample(raw, "S1", ("m2",), 4, SHAPE, seed=7)
        write_insitu_sample(raw, "S2", ("m1",), 4, SHAPE, seed=8)
        half = layout.tiff_files(raw / "S2" / "S2_m1")[-1]
        half.write_bytes(half.read_bytes()[:500])
        for p in (raw / "S2" / "S2_m1").iterdir():
            os.utime(p, (old, old))

        result, cursor = _tick(instance, config_path, cursor)
        assert isinstance(result, dg.SensorResult)
        assert result.dynamic_partitions_requests[0].partition_keys == ["S1/S1_m1"]
        assert result.dynamic_partitions_requests[1].partition_keys == ["S1"]
        assert len(result.run_requests) == 1
        assert _requested(result) == {"insitu_frames": {"S1/S1_m1"}, "roi_series": {"S1/S1_m1"},
                         "attenuation_corrected_series": {"S1"}}
        assert json.loads(cursor)["done"] == ["S1/S1_m1"]

        instance.add_dynamic_partitions("insitu_measurements", ["S1/S1_m1"])
        result, cursor = _tick(instance, config_path, cursor)
        assert isinstance(result, dg.SkipReason)
        assert "S1/S1_m1" not in result.skip_message
        assert "S1/S1_m2: newest frame written" in result.skip_message
        assert f"S2/S2_m1: {half}" in result.skip_message and "truncated" in result.skip_message


def test_materialize_command_runs_the_insitu_assets(tmp_path):
    """`xfel-assets materialize --samples` on a fresh Dagster home: multiprocess runs, a summary table."""
    write_insitu_sample(tmp_path / "raw" / "insitu", "S1", MEASUREMENTS, 8, SHAPE, seed=9)
    config_path = insitu_beamtime(tmp_path)
    env = dict(os.environ, XFEL_BEAMTIME=str(config_path), DAGSTER_HOME=str(tmp_path / "home"))
    out = subprocess.run([str(Path(sys.executable).parent / "xfel-assets"), "materialize", "--samples", "S1"],
                         env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "4 of 4 Dagster runs succeeded" in out.stdout  # 2 measurements, the sample, the in-situ run table
    assert "attenuation_corrected_series.parquet" in out.stdout


def test_a_new_flatfield_shows_that_samples_frames_as_stale(tmp_path):
    """The observed in-situ files change (a new flat-field of S1): S1's insitu_frames turn stale, S2's do not."""
    from dagster._core.definitions.data_version import StaleStatus
    from dagster._utils.test.data_versions import get_stale_status_resolver

    from xfel_assets.defs.assets import ALL_ASSETS
    from xfel_assets.cli.backfill import record_source_versions

    raw = tmp_path / "raw" / "insitu"
    write_insitu_sample(raw, "S1", ("m1",), 4, SHAPE, seed=10)
    write_insitu_sample(raw, "S2", ("m1",), 4, SHAPE, seed=11)
    config_path = insitu_beamtime(tmp_path)
    keys = ["S1/S1_m1", "S2/S2_m1"]

    def status(key):
        return get_stale_status_resolver(instance, ALL_ASSETS).get_status(dg.AssetKey("insitu_frames"), key)

    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("insitu_measurements", keys)
        record_source_versions(instance, load_beamtime(config_path))
        for key in keys:
            assert dg.materialize(ALL_ASSETS, selection=["insitu_frames"], partition_key=key, instance=instance,
                                  resources=resources(config_path)).success
        assert {status(k) for k in keys} == {StaleStatus.FRESH}
        flat = layout.tiff_files(raw / "S1" / "flatfield")[0]
        flat.write_bytes(flat.read_bytes())  # rewritten: a new modification time
        os.utime(flat, (time.time() + 5, time.time() + 5))
        record_source_versions(instance, load_beamtime(config_path))  # what source_change_sensor does
        assert status("S1/S1_m1") == StaleStatus.STALE
        assert status("S2/S2_m1") == StaleStatus.FRESH
