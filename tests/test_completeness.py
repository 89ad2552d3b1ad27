"""When a raw run is complete: runs copied file by file in the orders runs really arrive in.

Each order is replayed into an empty run folder one file at a time; after every file the rule
must say the run waits, until the last file is there.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import sys
from pathlib import Path

import dagster as dg
import h5py
import numpy as np
import pytest

from conftest import execute_requests, make_beamtime, new_run_sensor_tick, small_run
from xfel_core.completeness import run_completeness
from xfel_core.config import load_beamtime
from xfel_core.demo.beamtime import write_run
from xfel_core.lineage import staleness

LATER = 10_000.0  # seconds after the newest change: the folder has settled


def source_run(tmp_path: Path) -> Path:
    """A complete run r0002: 2 modules x 4 sequence files and the control data in 3 (it is smaller)."""
    src = tmp_path / "source"
    write_run(src, small_run(2, ntrains=15, trains_per_sequence=5))
    return src / "r0002"


def config_for(tmp_path: Path, **completeness):
    path = make_beamtime(tmp_path / "bt", [], completeness={"settle_seconds": 0, "content_wait_seconds": 1e9,
                                                            **completeness})
    (tmp_path / "bt" / "raw" / "r0002").mkdir(parents=True, exist_ok=True)
    return load_beamtime(path)


def by_name(files, *parts):
    return [f for f in files if all(p in f.name for p in parts)]


def orders(files: list[Path]) -> dict[str, list[Path]]:
    da, m0, m1 = by_name(files, "DA"), by_name(files, "DSSC00"), by_name(files, "DSSC01")
    return {
        "control_last": m0 + m1 + da,
        "control_first_then_module_by_module": da + m0 + m1,
        "sequence_by_sequence": [f for group in itertools.zip_longest(da, m0, m1) for f in group if f is not None],
        "a_middle_sequence_last": [f for f in da + m0 + m1 if f != m1[1]] + [m1[1]],
        "module_files_before_the_control_data_one_sequence_apart": m0[:2] + m1[:1] + m0[2:] + m1[1:] + da,
    }


ORDERS = ["control_last", "control_first_then_module_by_module", "sequence_by_sequence", "a_middle_sequence_last",
          "module_files_before_the_control_data_one_sequence_apart"]


@pytest.mark.parametrize("order", ORDERS)
def test_a_run_copied_file_by_file_waits_until_the_last_file(tmp_path, order):
    src = source_run(tmp_path)
    cfg = config_for(tmp_path)
    dest = cfg.run_dir("r0002")
    files = sorted(src.iterdir())
    sequence = orders(files)[order]
    assert sorted(sequence) == files
    for i, f in enumerate(sequence):
        shutil.copy2(f, dest / f.name)
        why = run_completeness(cfg, "r0002", now=os.stat(dest).st_mtime + LATER)
        if i < len(sequence) - 1:
            assert why is not None, f"{order}: taken with {i + 1} of {len(files)} files"
        else:
            assert why is None, why


def test_the_reasons_name_what_is_missing(tmp_path):
    src = source_run(tmp_path)
    cfg = config_for(tmp_path)
    dest = cfg.run_dir("r0002")
    files = sorted(src.iterdir())
    later = lambda: os.stat(dest).st_mtime + LATER  # noqa: E731
    for f in by_name(files, "DSSC"):
        shutil.copy2(f, dest / f.name)
    assert "no control-data file" in run_completeness(cfg, "r0002", now=later())
    for f in by_name(files, "DA"):
        shutil.copy2(f, dest / f.name)
    (dest / "RAW-R0002-DSSC01-S00001.h5").unlink()
    assert "sequence files missing: DSSC01 S00001" in run_completeness(cfg, "r0002", now=later())
    shutil.copy2(src / "RAW-R0002-DSSC01-S00001.h5", dest)
    (dest / "RAW-R0002-DSSC01-S00003.h5").unlink()  # one sequence short: the trains tell
    why = run_completeness(cfg, "r0002", now=later())
    assert "module 01 has" in why and "of the run's trains" in why, why
    (dest / "RAW-R0002-DSSC01-S00002.h5").unlink()
    assert "the modules' files end at different sequences (DSSC00 S00003, DSSC01 S00001)" in \
        run_completeness(cfg, "r0002", now=later())
    for name in ("RAW-R0002-DSSC01-S00002.h5", "RAW-R0002-DSSC01-S00003.h5"):
        shutil.copy2(src / name, dest)
    (dest / "RAW-R0002-DA01-S00002.h5").unlink()  # the control data's last file still coming
    assert "the control data has" in run_completeness(cfg, "r0002", now=later())
    shutil.copy2(src / "RAW-R0002-DA01-S00002.h5", dest)
    assert run_completeness(cfg, "r0002", now=later()) is None
    # Settling: a change a second ago.
    assert "settling for 30 s" in run_completeness(cfg.model_copy(update={"completeness": cfg.completeness.model_copy(
        update={"settle_seconds": 30})}), "r0002", now=os.stat(dest).st_mtime + 1)


def test_a_copy_that_keeps_the_source_times_still_settles(tmp_path):
    """rsync -a and cp -p set the files' and the folder's modification times into the past; the settle time
    counts from the last real change (the status-change time) all the same."""
    import time

    cfg = config_for(tmp_path, settle_seconds=30)
    src = source_run(tmp_path)
    dest = cfg.run_dir("r0002")
    for f in src.iterdir():
        shutil.copy2(f, dest / f.name)
    past = time.time() - 3600
    for p in [*dest.iterdir(), dest]:
        os.utime(p, (past, past))
    assert "settling for 30 s" in run_completeness(cfg, "r0002")
    assert run_completeness(cfg, "r0002", now=time.time() + 31) is None


def test_a_file_being_written_waits(tmp_path):
    cfg = config_for(tmp_path)
    src = source_run(tmp_path)
    dest = cfg.run_dir("r0002")
    for f in src.iterdir():
        shutil.copy2(f, dest / f.name)
    # The DAQ has written the index of 5 trains of this file but the data of only 3.
    growing = dest / "RAW-R0002-DSSC00-S00002.h5"
    with h5py.File(growing, "r+") as f:
        name = f["INDEX"].visit(lambda n: n if n.endswith("image/count") else None)
        f[f"INDEX/{name}"][-1] += 100
    why = run_completeness(cfg, "r0002", now=os.stat(dest).st_mtime + LATER)
    assert why is not None and "train index points past the data written" in why and growing.name in why


def test_a_settled_run_short_of_a_file_is_processed_after_the_content_wait(tmp_path):
    """A module that really lost a file (not one still coming) must not block the run forever."""
    src = source_run(tmp_path)
    cfg = config_for(tmp_path, content_wait_seconds=600)
    dest = cfg.run_dir("r0002")
    for f in src.iterdir():
        if f.name != "RAW-R0002-DSSC01-S00001.h5":
            shutil.copy2(f, dest / f.name)
    newest = os.stat(dest).st_mtime
    assert "waiting up to 600 s" in run_completeness(cfg, "r0002", now=newest + 60)
    assert run_completeness(cfg, "r0002", now=newest + 601) is None


def test_the_facility_marker_and_command(tmp_path):
    src = source_run(tmp_path)
    marker_cfg = config_for(tmp_path, marker="../.migrated/{run}.done")
    dest = marker_cfg.run_dir("r0002")
    for f in src.iterdir():
        shutil.copy2(f, dest / f.name)
    assert "no marker" in run_completeness(marker_cfg, "r0002", now=os.stat(dest).st_mtime + LATER)
    (dest.parent / ".migrated").mkdir()
    (dest.parent / ".migrated" / "r0002.done").touch()
    assert run_completeness(marker_cfg, "r0002", now=os.stat(dest).st_mtime + LATER) is None

    script = tmp_path / "migration_state.py"
    script.write_text("import sys, pathlib\nprint(pathlib.Path(sys.argv[1], 'STATE').read_text())\n")
    cmd_cfg = marker_cfg.model_copy(update={"completeness": marker_cfg.completeness.model_copy(
        update={"marker": None, "command": f"{sys.executable} {script} {{run_dir}}"})})
    (dest / "STATE").write_text("copying")
    assert "says 'copying'" in run_completeness(cmd_cfg, "r0002", now=os.stat(dest).st_mtime + LATER)
    (dest / "STATE").write_text("complete\n")
    assert run_completeness(cmd_cfg, "r0002", now=os.stat(dest).st_mtime + LATER) is None


def _tick(instance, config_path, cursor):
    return new_run_sensor_tick(instance, config_path, cursor)


def test_a_run_whose_raw_files_change_after_processing_is_redone_once_complete(tmp_path, monkeypatch):
    from xfel_assets.defs import sensors

    monkeypatch.setattr(sensors, "REDO_CHECK_S", 0.0)  # look at every tick (the daemon: every 15 s)

    config_path = make_beamtime(tmp_path / "bt", [small_run(2)], completeness={"settle_seconds": 0})
    cfg = load_beamtime(config_path)
    with dg.instance_for_test() as instance:
        _, cursor = _tick(instance, config_path, None)
        result, cursor = _tick(instance, config_path, cursor)
        assert result.dynamic_partitions_requests[0].partition_keys == ["r0002"]
        while isinstance(result, dg.SensorResult):  # processed, stage by stage
            execute_requests(instance, config_path, result)
            result, cursor = _tick(instance, config_path, cursor)
        assert instance.get_materialized_partitions(dg.AssetKey("binned_cube")) == {"r0002"}

        # A file is rewritten after processing (a migration's late copy): the run is redone, once.
        module = sorted(cfg.run_dir("r0002").glob("*DSSC01*"))[0]
        copy = module.with_name(".copy.h5")
        shutil.copy2(module, copy)
        with h5py.File(copy, "r+") as f:
            f.attrs["rewritten"] = np.arange(1000)
        copy.rename(module)
        result, cursor = _tick(instance, config_path, cursor)
        assert isinstance(result, dg.SensorResult)
        assert [r.tags["xfel/run"] for r in result.run_requests] == ["r0002"]
        assert not result.dynamic_partitions_requests[0].partition_keys  # already a partition
        assert "r0002" in json.loads(cursor)["redone"]
        result, cursor = _tick(instance, config_path, cursor)
        assert isinstance(result, dg.SkipReason)  # asked once; raw_run is remade from the new files


def test_a_run_deleted_and_copied_again_under_its_number_is_processed_again(tmp_path, monkeypatch):
    """Raw and processed folders of a processed run deleted, the run written again: the sensor said "no new run
    folders" for ever. It is taken once complete; a run whose processing failed is not retried on the same files."""
    from xfel_assets.defs import sensors

    monkeypatch.setattr(sensors, "REDO_CHECK_S", 0.0)
    config_path = make_beamtime(tmp_path / "bt", [small_run(2)], completeness={"settle_seconds": 0})
    cfg = load_beamtime(config_path)
    with dg.instance_for_test() as instance:
        _, cursor = _tick(instance, config_path, None)
        result, cursor = _tick(instance, config_path, cursor)
        while isinstance(result, dg.SensorResult):
            execute_requests(instance, config_path, result)
            result, cursor = _tick(instance, config_path, cursor)
        first = cfg.output_path("r0002", "binned_cube").stat().st_mtime_ns

        shutil.rmtree(cfg.run_dir("r0002"))
        shutil.rmtree(cfg.output_path("r0002", "binned_cube").parent)
        result, cursor = _tick(instance, config_path, cursor)
        assert isinstance(result, dg.SkipReason) and "r0002" in result.skip_message  # its folder is gone: waits
        write_run(cfg.raw_root, small_run(2, seed=7))
        result, cursor = _tick(instance, config_path, cursor)
        assert isinstance(result, dg.SensorResult), result
        assert [r.tags["xfel/run"] for r in result.run_requests] == ["r0002"]
        while isinstance(result, dg.SensorResult):
            execute_requests(instance, config_path, result)
            result, cursor = _tick(instance, config_path, cursor)
        assert cfg.output_path("r0002", "binned_cube").stat().st_mtime_ns != first
        assert staleness.find_stale(cfg) == []

        # Its processing fails (its outputs are removed as a failed step leaves none): not asked again for the same files.
        shutil.rmtree(cfg.output_path("r0002", "binned_cube").parent)
        result, cursor = _tick(instance, config_path, cursor)
        assert isinstance(result, dg.SkipReason), result


def test_a_run_a_backfill_is_making_is_not_taken_for_a_run_whose_outputs_are_gone(tmp_path, monkeypatch):
    """Seen with a slow machine: a backfill adds its runs as partitions, then makes them; a sensor tick in between
    found known runs without outputs and processed them a second time, alongside the backfill."""
    import xfel_assets.cli.backfill as bf
    from xfel_assets.cli.home import ensure_dagster_home
    from xfel_assets.defs import sensors
    from xfel_assets.defs.partitions import RUNS_PARTITION_SET
    from xfel_assets.runtime.graphql import GraphQL

    monkeypatch.setattr(sensors, "REDO_CHECK_S", 0.0)
    config_path = make_beamtime(tmp_path / "bt", [small_run(2), small_run(3)], completeness={"settle_seconds": 0})
    home = ensure_dagster_home(tmp_path / "home", max_runs=2)
    with dg.DagsterInstance.from_config(str(home)) as instance:
        instance.add_dynamic_partitions(RUNS_PARTITION_SET, ["r0002", "r0003"])
        with GraphQL(instance, home / "workspace.yaml") as gql:
            bf.launch(gql, {"raw_run": ["r0002"], "preprocessed_module": ["00|r0003"]}, "a backfill not yet started")
        assert sensors.runs_in_backfills(instance) == {"r0002", "r0003"}
        cursor = None
        for _ in range(2):
            result, cursor = _tick(instance, config_path, cursor)
            assert isinstance(result, dg.SkipReason) and not json.loads(cursor).get("chains"), cursor


@pytest.mark.daemon
def test_the_daemon_takes_runs_copied_file_by_file_once_complete_and_redoes_a_changed_one(tmp_path):
    """The real daemon and sensor; two runs copied file by file in two orders, pauses longer than the
    sensor's interval; each run is processed once, only after its last file; a rewritten file redoes it."""
    import subprocess
    import time

    from xfel_assets.runtime.daemon_control import daemon_command, stop_process_group
    from xfel_assets.cli.home import ensure_dagster_home

    src = tmp_path / "source"
    for n in (2, 3):
        write_run(src, small_run(n, ntrains=10, trains_per_sequence=5))
    config_path = make_beamtime(tmp_path / "bt", [], completeness={
        "settle_seconds": 0, "content_wait_seconds": 1e6, "sensor_interval_s": 1})
    raw = tmp_path / "bt" / "raw"
    home = ensure_dagster_home(tmp_path / "home", max_runs=2)
    env = dict(os.environ, DAGSTER_HOME=str(home), XFEL_BEAMTIME=str(config_path))
    log = open(tmp_path / "daemon.log", "w")
    daemon = subprocess.Popen(daemon_command(home / "workspace.yaml"), env=env, stdout=log, stderr=subprocess.STDOUT,
                              start_new_session=True)
    plans = {"r0002": orders(sorted((src / "r0002").iterdir()))["control_last"],
             "r0003": orders(sorted((src / "r0003").iterdir()))["a_middle_sequence_last"]}
    complete_at = {}

    def cube_times(instance, run):
        return [r.timestamp for r in instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=dg.AssetKey("binned_cube"), asset_partitions=[run]), limit=10).records]

    def wait_for(instance, what, deadline_s=300):
        deadline = time.monotonic() + deadline_s
        while not what():
            assert daemon.poll() is None, (tmp_path / "daemon.log").read_text()[-3000:]
            assert time.monotonic() < deadline, (tmp_path / "daemon.log").read_text()[-3000:]
            time.sleep(1)

    try:
        with dg.DagsterInstance.from_config(str(home)) as instance:
            # The sensor is ticking (it says the raw root is empty) before the first file arrives.
            wait_for(instance, lambda: "SENSOR" in instance.get_daemon_heartbeats(), 120)
            for step in range(max(len(p) for p in plans.values())):
                for run, plan in plans.items():
                    if step < len(plan):
                        (raw / run).mkdir(parents=True, exist_ok=True)
                        shutil.copy2(plan[step], raw / run / plan[step].name)
                        if step == len(plan) - 1:
                            complete_at[run] = time.time()
                time.sleep(3)  # longer than the sensor's interval (1 s): an "unchanged for one tick" rule is fooled
                for run in plans:
                    if run not in complete_at:  # never taken while incomplete
                        assert not instance.has_dynamic_partition("runs", run), run
            wait_for(instance, lambda: all(cube_times(instance, r) for r in plans))
            for run in plans:
                first_raw = instance.fetch_materializations(
                    dg.AssetRecordsFilter(asset_key=dg.AssetKey("raw_run"), asset_partitions=[run]), limit=10).records
                assert len(first_raw) == 1 and first_raw[0].timestamp > complete_at[run]
                assert len(cube_times(instance, run)) == 1

            # A migration rewrites one file of r0002 after it was processed: the run is redone once.
            module = sorted((raw / "r0002").glob("*DSSC00*"))[0]
            copy = module.with_name(".incoming.h5")
            shutil.copy2(module, copy)
            with h5py.File(copy, "r+") as f:
                f.attrs["migrated_again"] = 1
            copy.rename(module)
            wait_for(instance, lambda: len(cube_times(instance, "r0002")) == 2)
            time.sleep(8)  # several more ticks: nothing more is requested
            assert len(cube_times(instance, "r0002")) == 2 and len(cube_times(instance, "r0003")) == 1
    finally:
        stop_process_group(daemon)
        log.close()

