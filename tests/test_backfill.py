"""`xfel-assets backfill` with the real Dagster daemon: a whole beamtime, a corrupt file, then --stale-only after a new dark."""

from __future__ import annotations

import collections
import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest
import xarray as xr
import yaml

from conftest import PATTERN, SHAPE
from test_science import assert_cube_matches, reference_cube
from xfel_core.config import load_beamtime, run_key
from xfel_core.demo.beamtime import RunSpec, beamtime_config, write_config, write_run

pytestmark = pytest.mark.daemon

#: Two modules: enough for a run of several module partitions, few Dagster runs per beamtime.
MODULES2 = [0, 1]
CLI = str(Path(sys.executable).parent / "xfel-assets")


def write_beamtime(root: Path, runs: list[int], darks: list[int]) -> tuple[Path, dict]:
    """Small runs of 2 modules and dark runs; the config uses the first dark."""
    gens = {n: write_run(root / "raw", RunSpec(run_number=n, ntrains=6, frames_per_train=4, modules=MODULES2,
                                               module_shape=SHAPE, scan_points=3)) for n in runs}
    for d in darks:
        gens[d] = write_run(root / "raw", RunSpec(run_number=d, ntrains=4, frames_per_train=4, modules=MODULES2,
                                                  module_shape=SHAPE, dark=True))
    cfg = beamtime_config(root, MODULES2, SHAPE, dark_run=darks[0], frame_pattern=PATTERN)
    cfg["execution"] = {"max_module_steps": 2, "retries": 1, "retry_delay_s": 0.5}
    cfg["ignore_runs"] = list(darks)  # the other dark runs are not data
    return write_config(root, cfg), gens


def backfill(config: Path, home: Path, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ, **(env or {}), DAGSTER_HOME=str(home), XFEL_BEAMTIME=str(config))
    out = subprocess.run([CLI, "backfill", "--beamtime", str(config), "--timeout", "900", *args],
                         capture_output=True, text=True, env=env, timeout=1200)
    print(out.stdout[-4000:], out.stderr[-4000:])
    return out


def materialization_counts(instance: dg.DagsterInstance, asset: str, runs: list[str] | None = None) -> collections.Counter:
    """Materializations per partition key (of ``runs`` only, if given)."""
    records = instance.fetch_materializations(dg.AssetKey(asset), limit=10000).records
    keys = (str(r.partition_key) for r in records)
    return collections.Counter(k for k in keys if runs is None or k.split("|")[-1] in runs)


def who_made(instance: dg.DagsterInstance, asset: str, counts: collections.Counter) -> str:
    """For an assertion message: the runs behind every partition materialized more than once."""
    lines = []
    records = instance.fetch_materializations(dg.AssetKey(asset), limit=10000).records
    for key in [k for k, n in counts.items() if n > 1]:
        for r in records:
            if str(r.partition_key) == key:
                run = instance.get_run_by_id(r.run_id)
                events = collections.Counter(e.dagster_event.event_type_value for e in instance.all_logs(r.run_id)
                                             if e.dagster_event)
                lines.append(f"{asset} {key}: run {r.run_id[:8]} {run.status.value} {dict(run.tags)} "
                             f"storage id {r.storage_id} events {dict(events)}")
    return "\n".join(lines)


def corrupt(run_dir: Path) -> Path:
    """Cut a module file in half, as a copy that died mid-transfer."""
    f = sorted(run_dir.glob("RAW-*-DSSC01-S*.h5"))[0]
    data = f.read_bytes()
    f.write_bytes(data[: len(data) // 2])
    return f


def check_full_backfill_with_a_corrupt_run(config: Path, home: Path, runs: list[str], bad: str, env=None,
                                           darks_once: bool = True):
    """Every partition materialized once except the corrupt run's, which fail and are reported."""
    cfg = load_beamtime(config)
    bad_file = corrupt(cfg.run_dir(bad))
    out = backfill(config, home, "--runs", f"{runs[0]}-{runs[-1]}", env=env)
    assert out.returncode == 1
    n_total = len(MODULES2) + len(runs) * (4 + len(MODULES2))
    n_bad = 4 + len(MODULES2)  # the bad run's raw_run, scan_variable, framemask, modules and cube
    assert f"{n_total - n_bad} of {n_total} partitions done, {n_bad} failed" in out.stdout
    assert f"FAILED raw_run [{bad}]" in out.stdout and bad_file.name in out.stdout
    good = [r for r in runs if r != bad]
    with dg.DagsterInstance.from_config(str(home)) as instance:
        for asset in ("raw_run", "scan_variable", "framemask", "binned_cube"):
            counts = materialization_counts(instance, asset, runs)
            assert counts == {r: 1 for r in good}, who_made(instance, asset, counts)
        pm = materialization_counts(instance, "preprocessed_module", runs)
        assert pm == {f"{m:02d}|{r}": 1 for r in good for m in MODULES2}
        darks = materialization_counts(instance, "dark")
        assert set(darks) == {f"{m:02d}" for m in MODULES2}
        if darks_once:  # (a sensor's new run may ask for a dark that the backfill is still making)
            assert set(darks.values()) == {1}
    return bad_file


def test_backfill_whole_beamtime_then_stale_only_after_a_new_dark(tmp_path):
    runs = [run_key(n) for n in range(2, 5)]  # 3 runs x 2 modules
    config, gens = write_beamtime(tmp_path / "bt", list(range(2, 5)), darks=[1, 30])
    home = tmp_path / "home"
    check_full_backfill_with_a_corrupt_run(config, home, runs, bad="r0004")
    with dg.DagsterInstance.from_config(str(home)) as instance:
        # The daemon the command started and stopped left no heartbeat: the next backfill need not
        # wait for one to know that no daemon runs.
        assert instance.get_daemon_heartbeats() == {}

    # The run is copied again in full, and the detector group releases a new dark run.
    write_run(tmp_path / "bt" / "raw", gens[4].spec)
    data = yaml.safe_load(config.read_text())
    data["dark_run"] = 30
    config.write_text(yaml.safe_dump(data))

    out = backfill(config, home, "--runs", "r0002,r0004", "--stale-only")
    assert out.returncode == 0, out.stdout + out.stderr
    # darks 2, r0002: 2 modules and the cube, r0004: all 6 of its partitions.
    assert "backfill of 11 partitions (raw_run 1, scan_variable 1, framemask 1, dark 2, " \
           "preprocessed_module 4, binned_cube 2) over 2 runs (r0002,r0004)" in out.stdout
    assert "11 of 11 partitions done, 0 failed" in out.stdout
    with dg.DagsterInstance.from_config(str(home)) as instance:
        assert materialization_counts(instance, "dark") == {f"{m:02d}": 2 for m in MODULES2}
        raw = materialization_counts(instance, "raw_run")
        assert raw == {r: 1 for r in runs}  # raw data did not change for the others; r0004 made once now
        pm = materialization_counts(instance, "preprocessed_module")
        assert pm == {f"{m:02d}|{r}": 2 if r == "r0002" else 1 for r in runs for m in MODULES2}
        cube = materialization_counts(instance, "binned_cube")
        assert cube == {r: 2 if r == "r0002" else 1 for r in runs}

    cfg = load_beamtime(config)
    ds = xr.open_dataset(cfg.output_path("r0002", "binned_cube"), engine="h5netcdf")
    assert_cube_matches(ds, reference_cube(gens[2], gens[30], cfg))
    assert ds.attrs["dark_run"] == "r0030"
    # Nothing else is stale in these runs; r0003 still holds results of the old dark (not asked for).
    out = backfill(config, home, "--runs", "r0002,r0004", "--stale-only")
    assert out.returncode == 0 and "nothing is stale in 2 runs" in out.stdout
    ds3 = xr.open_dataset(cfg.output_path("r0003", "binned_cube"), engine="h5netcdf")
    assert ds3.attrs["dark_run"] == "r0001"
