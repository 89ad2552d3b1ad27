"""The Dagster layer for real: definitions from workspace.yaml, materializing with the multiprocess
executor on a persistent instance, the sensor against a temporary raw root."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import dagster as dg
import numpy as np
import pytest
import xarray as xr

from conftest import execute_requests, new_run_sensor_tick, MODULES, make_beamtime, small_run
from xfel_core.config import load_beamtime

REPO = Path(__file__).resolve().parents[1]


def test_definitions_load_from_workspace_yaml(session_beamtime):
    """`dagster definitions validate` loads the code location exactly as `dagster dev` does."""
    out = subprocess.run(
        [str(Path(sys.executable).parent / "dagster"), "definitions", "validate", "-w", "workspace.yaml"],
        cwd=REPO, capture_output=True, text=True, timeout=180,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    from xfel_assets.definitions import defs

    keys = {k.to_user_string() for k in defs.resolve_asset_graph().get_all_asset_keys()}
    assert keys == {"raw_run", "scan_variable", "framemask", "dark", "preprocessed_module", "binned_cube",
                    "raw_run_files", "dark_run_files", "gain_map",
                    "insitu_frames", "roi_series", "attenuation_corrected_series", "insitu_files",
                    "event_smalldata", "event_cube", "event_run_files", "dssc_smalldata",
                    "smalldata_rois", "insitu_rois", "event_dark_files", "event_rois", "event_mask",
                    "run_table", "event_run_table", "insitu_run_table", "run_notes"}
    pdef = defs.resolve_assets_def("preprocessed_module").partitions_def
    assert isinstance(pdef, dg.MultiPartitionsDefinition)
    assert {d.name for d in pdef.partitions_defs} == {"run", "module"}


@pytest.fixture(scope="module")
def materialized_instance(tmp_path_factory):
    """Materialize the session beamtime through Dagster (multiprocess executor, persistent SQLite instance)."""
    from xfel_assets.cli.materialize import materialize_runs

    home = tmp_path_factory.mktemp("dagster_home")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DAGSTER_HOME", str(home))
        with dg.DagsterInstance.get() as instance:
            outcomes = materialize_runs(["r0002", "r0003"], instance, 2, dark_modules=["00", "01"])
            yield instance, outcomes


def test_materialize_all_assets_through_dagster(materialized_instance, session_beamtime):
    instance, outcomes = materialized_instance
    assert all(o.success for o in outcomes), [o.error for o in outcomes if not o.success]
    assert len(outcomes) == 2 + 2 + 2 * 2 + 2
    cfg = load_beamtime(session_beamtime)
    # Every partition is recorded as materialized, with typed metadata.
    assert set(instance.get_materialized_partitions(dg.AssetKey("binned_cube"))) == {"r0002", "r0003"}
    pm = instance.get_materialized_partitions(dg.AssetKey("preprocessed_module"))
    assert {str(k) for k in pm} == {"00|r0002", "01|r0002", "00|r0003", "01|r0003"}
    event = instance.get_latest_materialization_event(dg.AssetKey("preprocessed_module"))
    md = event.asset_materialization.metadata
    assert isinstance(md["frames_kept"], dg.IntMetadataValue)
    assert isinstance(md["output_path"], dg.PathMetadataValue)
    assert isinstance(md["frames_rejected_by_reason"], dg.TableMetadataValue)
    assert isinstance(md["frames_per_second"], dg.FloatMetadataValue)
    # Readable: sizes in kB / MB / GB, seconds to three significant digits, the version hashes in one table.
    assert re.fullmatch(r"\d[\d.]* (kB|MB|GB)", md["output_size"].value) and "output_size_bytes" not in md
    assert re.fullmatch(r"\d[\d.]* (kB|MB|GB)", md["read_from_disk"].value)
    assert len(f"{md['seconds'].value:g}".replace(".", "").lstrip("0")) <= 3
    assert "| lineage | `" in md["versions"].value and "| input dark | `" in md["versions"].value
    assert "lineage_version" not in md and "input_versions" not in md
    cube = instance.get_latest_materialization_event(dg.AssetKey("binned_cube")).asset_materialization.metadata
    assert cube["pump_probe"].value.startswith("![pump-probe curve")
    for run in ("r0002", "r0003"):
        ds = xr.open_dataset(cfg.output_path(run, "binned_cube"), engine="h5netcdf")
        assert ds["mean"].dims == ("scan_variable", "frame_type", "module", "y", "x")
        assert list(ds["module"].values) == MODULES
        assert int(ds["count"].sum()) > 0


def test_failed_partition_names_the_file_and_writes_nothing(materialized_instance, session_beamtime):
    """A truncated module file fails its step with the file named; no output file appears."""
    from xfel_assets.cli.materialize import materialize_runs

    instance, _ = materialized_instance
    cfg = load_beamtime(session_beamtime)
    bad = cfg.raw_root / "r0004"
    bad.mkdir()
    for f in (cfg.raw_root / "r0003").iterdir():  # r0003 copied as run 4 (files of another run are refused)
        shutil.copy2(f, bad / f.name.replace("-R0003-", "-R0004-"))
    victim = sorted(bad.glob("*DSSC01*.h5"))[0]
    victim.write_bytes(victim.read_bytes()[: victim.stat().st_size // 2])
    try:
        outcomes = materialize_runs(["r0004"], instance, 2, log=lambda *a: None)
        failed = [o for o in outcomes if not o.success]
        assert failed and all(o.partition == "r0004" for o in failed)
        assert victim.name in failed[0].error and "truncated" in failed[0].error
        assert not cfg.output_dir("r0004").exists() or not list(cfg.output_dir("r0004").glob("*.h5"))
    finally:
        shutil.rmtree(bad)


# ---------------------------------------------------------------- sensor


def _sensor_tick(instance, config_path: Path, cursor):
    return new_run_sensor_tick(instance, config_path, cursor)


def _requested(result) -> dict[str, set[str]]:
    """Asset -> partition keys requested by a sensor result's run requests (a run's, or a backfill's)."""
    out: dict[str, set[str]] = {}
    for req in result.run_requests:
        if req.asset_graph_subset is not None:  # a backfill request
            for key, ps in req.asset_graph_subset.partitions_subsets_by_asset_key.items():
                out.setdefault(key.to_user_string(), set()).update(str(k) for k in ps.get_partition_keys())
            continue
        for key in req.asset_selection:
            out.setdefault(key.to_user_string(), set()).add(req.partition_key)
    return out


def test_sensor_requests_complete_runs_once_and_never_half_written(tmp_path):
    root = tmp_path / "bt"
    config_path = make_beamtime(root, [small_run(2)], dark=None, completeness={"settle_seconds": 0})
    with dg.instance_for_test() as instance:
        # Tick 1 sees r0002 complete but waits a tick to be sure it is no longer changing.
        result, cursor = _sensor_tick(instance, config_path, None)
        assert isinstance(result, dg.SkipReason) and "waiting one tick" in result.skip_message
        # Meanwhile r0003 is being written: one module's files are not there yet.
        from xfel_core.demo.beamtime import write_run

        write_run(root / "raw", small_run(3))
        for p in (root / "raw" / "r0003").glob("*DSSC01*"):
            p.unlink()
        # A third run whose file is half-written (truncated).
        write_run(root / "raw", small_run(5))
        half = sorted((root / "raw" / "r0005").glob("*DSSC00*"))[0]
        half.write_bytes(half.read_bytes()[:2000])

        result, cursor = _sensor_tick(instance, config_path, cursor)
        assert isinstance(result, dg.SensorResult)
        assert result.dynamic_partitions_requests[0].partition_keys == ["r0002"]
        req = _requested(result)
        assert req == {"raw_run": {"r0002"}, "scan_variable": {"r0002"}, "framemask": {"r0002"}}  # the first stage
        assert "dark" not in req  # no dark run configured
        assert json.loads(cursor)["done"] == ["r0002"]

        # Same run again: not requested; the incomplete ones: not requested, with the reason.
        instance.add_dynamic_partitions("runs", ["r0002"])
        result, cursor = _sensor_tick(instance, config_path, cursor)
        assert isinstance(result, dg.SkipReason)
        assert "r0002: inputs: 0 of 1 Dagster runs launched" in result.skip_message  # not requested again
        assert "r0003: module 01 has no files" in result.skip_message
        assert "r0005" in result.skip_message and half.name in result.skip_message

        # r0003's missing module arrives: requested after one unchanged tick, r0005 still not.
        write_run(root / "raw", small_run(3))
        result, cursor = _sensor_tick(instance, config_path, cursor)
        assert isinstance(result, dg.SkipReason)
        result, cursor = _sensor_tick(instance, config_path, cursor)
        assert isinstance(result, dg.SensorResult)
        assert result.dynamic_partitions_requests[0].partition_keys == ["r0003"]


def test_sensor_includes_missing_darks(tmp_path):
    from conftest import dark_run

    config_path = make_beamtime(tmp_path / "bt", [small_run(2)], dark=dark_run(), completeness={"settle_seconds": 0})
    with dg.instance_for_test() as instance:
        _, cursor = _sensor_tick(instance, config_path, None)
        result, _ = _sensor_tick(instance, config_path, cursor)
        req = _requested(result)
        assert req["dark"] == {"00", "01"}
        assert "r0001" not in json.dumps(sorted(req["raw_run"]))  # the dark run is not a data run


def _drive(instance, config_path, cursor, ticks=8):
    """Tick the sensor and execute what it requests, until it requests nothing: (requests per tick, last result, cursor)."""
    stages = []
    for _ in range(ticks):
        result, cursor = _sensor_tick(instance, config_path, cursor)
        if isinstance(result, dg.SkipReason):
            return stages, result, cursor
        stages.append(_requested(result))
        execute_requests(instance, config_path, result)
    raise AssertionError(f"still requesting after {ticks} ticks: {stages}")


def test_sensor_launches_each_stage_once_the_one_before_succeeded(tmp_path):
    from conftest import dark_run

    config_path = make_beamtime(tmp_path / "bt", [small_run(2)], dark=dark_run(), completeness={"settle_seconds": 0})
    with dg.instance_for_test() as instance:
        _, cursor = _sensor_tick(instance, config_path, None)
        stages, last, cursor = _drive(instance, config_path, cursor)
        assert stages == [
            {"raw_run": {"r0002"}, "scan_variable": {"r0002"}, "framemask": {"r0002"}, "dark": {"00", "01"}},
            {"preprocessed_module": {"00|r0002", "01|r0002"}},
            {"binned_cube": {"r0002"}},
        ]
        assert "r0002" not in last.skip_message  # the chain has ended
        assert instance.get_materialized_partitions(dg.AssetKey("binned_cube")) == {"r0002"}
        runs = instance.get_runs(filters=dg.RunsFilter(tags={"xfel/run": "r0002"}))
        assert len(runs) == 6 and all(r.status == dg.DagsterRunStatus.SUCCESS for r in runs)
        assert {r.tags["xfel/stage"] for r in runs} == {"inputs", "modules", "cube"}


def test_a_failed_stage_ends_the_chain_and_says_which_run(tmp_path, monkeypatch):
    from xfel_core.euxfel import pipeline
    from xfel_core.exceptions import RunDataError

    config_path = make_beamtime(tmp_path / "bt", [small_run(2)], dark=None, completeness={"settle_seconds": 0})
    real = pipeline.make_preprocessed_module

    def broken(cfg, run, module):
        if module == 1:
            raise RunDataError(f"{cfg.run_dir(run)}/RAW-R0002-DSSC01-S00000.h5: image.data has NaNs")
        return real(cfg, run, module)

    monkeypatch.setattr(pipeline, "make_preprocessed_module", broken)
    with dg.instance_for_test() as instance:
        _, cursor = _sensor_tick(instance, config_path, None)
        stages, last, cursor = _drive(instance, config_path, cursor)
        assert len(stages) == 2 and "binned_cube" not in stages[-1]  # no cube of a run with a failed module
        failed = instance.get_runs(filters=dg.RunsFilter(statuses=[dg.DagsterRunStatus.FAILURE]))
        assert [r.tags["dagster/partition"] for r in failed] == ["01|r0002"]
        assert f"r0002: stopped, module_job 01|r0002 ({failed[0].run_id[:8]}) failure" in last.skip_message
        result, _ = _sensor_tick(instance, config_path, cursor)
        assert isinstance(result, dg.SkipReason) and "r0002" not in result.skip_message  # said once, then ended


def test_with_new_runs_backfill_a_run_is_one_asset_backfill(tmp_path):
    config_path = make_beamtime(tmp_path / "bt", [small_run(2)], dark=None, completeness={"settle_seconds": 0},
                                execution={"new_runs": "backfill"})
    with dg.instance_for_test() as instance:
        _, cursor = _sensor_tick(instance, config_path, None)
        result, cursor = _sensor_tick(instance, config_path, cursor)
        [req] = result.run_requests
        assert req.asset_graph_subset is not None and req.tags == {"xfel/run": "r0002"}
        assert _requested(result) == {"raw_run": {"r0002"}, "scan_variable": {"r0002"}, "framemask": {"r0002"},
                                      "preprocessed_module": {"00|r0002", "01|r0002"}, "binned_cube": {"r0002"}}
        assert json.loads(cursor)["chains"] == {}


def test_numbers_from_dagster_equal_direct_pipeline(materialized_instance, session_beamtime, tmp_path):
    """The cube made through Dagster equals the one the plain functions make."""
    from xfel_core.euxfel import pipeline

    cfg = load_beamtime(session_beamtime)
    other = cfg.model_copy(update={"processed_root": tmp_path / "processed"})
    for m in other.detector.modules:
        pipeline.make_dark(other, m)
    for step in (pipeline.make_raw_run, pipeline.make_scan_variable, pipeline.make_framemask):
        step(other, "r0002")
    for m in other.detector.modules:
        pipeline.make_preprocessed_module(other, "r0002", m)
    pipeline.make_binned_cube(other, "r0002")
    a = xr.open_dataset(cfg.output_path("r0002", "binned_cube"), engine="h5netcdf")
    b = xr.open_dataset(other.output_path("r0002", "binned_cube"), engine="h5netcdf")
    np.testing.assert_array_equal(a["mean"].values, b["mean"].values)
    np.testing.assert_array_equal(a["count"].values, b["count"].values)


def test_io_errors_are_retried_and_bad_data_is_not(tmp_path, monkeypatch):
    """A transient OSError is retried with backoff (retry policy); an XfelError fails at once, naming the file."""
    from xfel_assets.defs.assets import ALL_ASSETS
    from xfel_assets.defs.resources import resources_for
    from xfel_core.euxfel import pipeline
    from xfel_core.exceptions import RunDataError

    path = make_beamtime(tmp_path, [small_run(2)], dark=None)
    res = resources_for(path)
    real = pipeline.make_raw_run
    calls = []

    def flaky(cfg, run):
        calls.append(run)
        if len(calls) == 1:
            raise OSError(f"{cfg.run_dir(run)}: Input/output error (a storage hiccup)")
        return real(cfg, run)

    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("runs", ["r0002"])
        monkeypatch.setattr(pipeline, "make_raw_run", flaky)
        result = dg.materialize(ALL_ASSETS, selection=["raw_run"], partition_key="r0002", instance=instance,
                                resources=res)
        assert result.success and len(calls) == 2
        assert [e.event_type_value for e in result.all_events].count("STEP_UP_FOR_RETRY") == 1

        def corrupt(cfg, run):
            calls.append(run)
            raise RunDataError(f"{cfg.run_dir(run)}/RAW-R0002-DSSC00-S00000.h5: truncated")

        calls.clear()
        monkeypatch.setattr(pipeline, "make_raw_run", corrupt)
        result = dg.materialize(ALL_ASSETS, selection=["raw_run"], partition_key="r0002", instance=instance,
                                resources=res, raise_on_error=False)
        assert not result.success and len(calls) == 1  # not retried
        failure = next(e for e in result.all_events if e.is_step_failure)
        assert "RAW-R0002-DSSC00-S00000.h5: truncated" in failure.step_failure_data.error.message
