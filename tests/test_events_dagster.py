"""The event assets through Dagster for both input kinds, and the event-run sensor."""

from __future__ import annotations

import dagster as dg
import pytest
import xarray as xr

from test_dagster import _requested
from test_events import beamtime
from test_insitu_dagster import resources
from xfel_core.events import pipeline as ep
from xfel_core.readers.event_h5 import run_file as generic_run_file


@pytest.mark.parametrize("layout", ["pal", "generic"])
def test_event_assets_materialize_through_dagster(tmp_path, layout):
    from xfel_assets.defs.assets import ALL_ASSETS

    cfg, _ = beamtime(tmp_path, layout)
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("event_runs", ["r0002"])
        result = dg.materialize(ALL_ASSETS, selection=["event_smalldata", "event_cube"], partition_key="r0002",
                                resources=resources(cfg.source_file), instance=instance)
        assert result.success
        md = instance.get_latest_materialization_event(dg.AssetKey("event_smalldata")).asset_materialization.metadata
        assert md["events"].value == (236 if layout == "pal" else 240)
        rules = {r["rule"]: r["shots"] for r in (rec.data for rec in md["shots_rejected_by_rule"].records)}
        assert rules["i0_band"] == 2 and rules["saturated"] == 1 and rules["empty"] == 1
        assert md["mean_radial_profile"].value.startswith("![mean radial profile](data:image/png;base64,")
        cube_md = instance.get_latest_materialization_event(dg.AssetKey("event_cube")).asset_materialization.metadata
        assert cube_md["has_difference"].value is True
    ds = xr.open_dataset(ep.output_path(cfg, "r0002", ep.CUBE_FILE), engine="h5netcdf")
    assert int(ds["count"].sum()) == md["kept"].value - int((xr.open_dataset(
        ep.output_path(cfg, "r0002", ep.SMALLDATA_FILE), engine="h5netcdf")["scan_point"] < 0).sum())


def test_event_run_sensor_takes_complete_runs_once(tmp_path):
    from xfel_assets.definitions import defs
    from xfel_assets.defs.event_sensor import new_event_run_sensor

    cfg, _ = beamtime(tmp_path, "generic", runs=(2, 3))
    cfg.source_file.write_text(cfg.source_file.read_text() + "completeness: {settle_seconds: 0}\n")
    broken = generic_run_file(cfg.events, 3)
    broken.write_bytes(broken.read_bytes()[:1000])

    def tick(cursor):
        ctx = dg.build_sensor_context(instance=instance, cursor=cursor, definitions=defs,
                                      resources=resources(cfg.source_file))
        result = new_event_run_sensor(ctx)
        return result, ctx.cursor if not isinstance(result, dg.SensorResult) else result.cursor

    with dg.instance_for_test() as instance:
        from xfel_assets.defs.event_sensor import event_run_readiness

        assert "settling for 30 s" in event_run_readiness(cfg.events, "r0002", 30.0)  # just written
        result, cursor = tick(None)
        assert isinstance(result, dg.SkipReason) and "r0002: complete, waiting one tick" in result.skip_message
        assert "r0001" not in result.skip_message  # the dark run is not a data run
        result, cursor = tick(cursor)
        assert isinstance(result, dg.SensorResult)
        assert result.dynamic_partitions_requests[0].partition_keys == ["r0002"]
        assert _requested(result) == {"event_smalldata": {"r0002"}, "event_cube": {"r0002"}}
        instance.add_dynamic_partitions("event_runs", ["r0002"])
        result, cursor = tick(cursor)
        assert isinstance(result, dg.SkipReason)
        assert f"r0003: {broken} does not open as HDF5" in result.skip_message and "r0002" not in result.skip_message
