"""The Dagster instance on PostgreSQL: a whole-beamtime backfill and the sensor's new runs at the same time."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import dagster as dg
import pytest

from conftest import SHAPE
from test_backfill import MODULES2, check_full_backfill_with_a_corrupt_run, write_beamtime
from xfel_assets.cli.home import POSTGRES_ENV, ensure_dagster_home
from xfel_assets.runtime.daemon_control import daemon_command, stop_process_group
from xfel_core.config import load_beamtime, run_key
from xfel_core.demo.beamtime import RunSpec, write_run

pytestmark = pytest.mark.daemon

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = REPO / "deploy" / "postgres"


@pytest.fixture
def postgres_url():
    """A PostgreSQL server started by our script for this test, and stopped by the other script."""
    # Outside pytest's private tmp folders: the server runs as the postgres user when we are root.
    folder = Path(tempfile.mkdtemp(prefix="xfel-pg-"))
    folder.chmod(0o755)
    out = subprocess.run([str(SCRIPTS / "start-local-postgres.sh"), str(folder), "55433"],
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout + out.stderr
    try:
        yield out.stdout.strip().splitlines()[-1]
    finally:
        subprocess.run([str(SCRIPTS / "stop-local-postgres.sh"), str(folder)], timeout=60)
        shutil.rmtree(folder, ignore_errors=True)


def test_backfill_and_sensor_runs_together_on_postgres(tmp_path, postgres_url, monkeypatch):
    monkeypatch.setenv(POSTGRES_ENV, postgres_url)
    runs = [run_key(n) for n in range(2, 5)]
    config, _ = write_beamtime(tmp_path / "bt", list(range(2, 5)), darks=[1])
    home = ensure_dagster_home(tmp_path / "home", max_runs=2, max_module_steps=2)
    assert "postgres_url" in (home / "dagster.yaml").read_text()
    env = dict(os.environ, DAGSTER_HOME=str(home), XFEL_BEAMTIME=str(config))
    with dg.DagsterInstance.from_config(str(home)) as instance:
        assert type(instance.run_storage).__name__ == "PostgresRunStorage"
        instance.add_dynamic_partitions("runs", runs)  # the backfill's runs: not the sensor's to take

    log = open(tmp_path / "daemon.log", "w")
    daemon = subprocess.Popen(daemon_command(home / "workspace.yaml"), env=env, stdout=log,
                              stderr=subprocess.STDOUT, start_new_session=True)
    try:
        with dg.DagsterInstance.from_config(str(home)) as instance:
            # Up before the command looks for it (else the command starts a second daemon).
            deadline = time.monotonic() + 120
            while "BACKFILL" not in instance.get_daemon_heartbeats():
                assert time.monotonic() < deadline and daemon.poll() is None, \
                    (tmp_path / "daemon.log").read_text()[-3000:]
                time.sleep(1)
        # New runs arrive while the backfill goes on: the sensor adds and processes them.
        new = [30]
        for n in new:
            write_run(tmp_path / "bt" / "raw", RunSpec(run_number=n, ntrains=6, frames_per_train=4,
                                                        modules=MODULES2, module_shape=SHAPE, scan_points=3))
        check_full_backfill_with_a_corrupt_run(config, home, runs, bad="r0004", env={POSTGRES_ENV: postgres_url},
                                               darks_once=False)
        deadline = time.monotonic() + 300
        with dg.DagsterInstance.from_config(str(home)) as instance:
            while time.monotonic() < deadline:
                done = set(instance.get_materialized_partitions(dg.AssetKey("binned_cube")))
                if {run_key(n) for n in new} <= done:
                    break
                assert daemon.poll() is None, (tmp_path / "daemon.log").read_text()[-3000:]
                time.sleep(3)
            else:
                raise AssertionError("the sensor's runs were not processed:\n"
                                     + (tmp_path / "daemon.log").read_text()[-3000:])
            pm = {str(k) for k in instance.get_materialized_partitions(dg.AssetKey("preprocessed_module"))}
            assert {f"{m:02d}|{run_key(n)}" for n in new for m in MODULES2} <= pm
            assert set(instance.get_dynamic_partitions("runs")) == set(runs) | {run_key(n) for n in new}
        cfg = load_beamtime(config)
        assert cfg.output_path(run_key(new[0]), "binned_cube").exists()
    finally:
        stop_process_group(daemon)
        log.close()
