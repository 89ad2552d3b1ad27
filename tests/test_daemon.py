"""The real thing: the Dagster daemon runs new_run_sensor, which launches the backfill of a new run."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import dagster as dg
import pytest
import xarray as xr

from conftest import dark_run, make_beamtime, small_run
from xfel_assets.cli.home import ensure_dagster_home
from xfel_assets.runtime.daemon_control import daemon_command, stop_process_group
from xfel_core.config import load_beamtime
from xfel_core.demo.insitu import insitu_config, write_insitu_sample

pytestmark = pytest.mark.daemon

REPO = Path(__file__).resolve().parents[1]


def test_daemon_sensors_materialize_a_new_run_and_a_new_insitu_measurement(tmp_path):
    write_insitu_sample(tmp_path / "bt" / "raw" / "insitu", "S1", ("m1",), 6, (64, 128), seed=4)
    insitu = dict(insitu_config("raw/insitu", (64, 128)), settle_seconds=0.0)
    config_path = make_beamtime(tmp_path / "bt", [small_run(2)], dark=dark_run(), insitu=insitu,
                                completeness={"settle_seconds": 0})
    home = ensure_dagster_home(tmp_path / "home", max_runs=2)
    env = dict(os.environ, DAGSTER_HOME=str(home), XFEL_BEAMTIME=str(config_path))
    log = open(tmp_path / "daemon.log", "w")
    daemon = subprocess.Popen(daemon_command(Path("workspace.yaml")), cwd=REPO, env=env, stdout=log,
                              stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 300
        with dg.DagsterInstance.from_config(str(home)) as instance:
            while time.monotonic() < deadline:
                if ("r0002" in instance.get_materialized_partitions(dg.AssetKey("binned_cube"))
                        and "S1" in instance.get_materialized_partitions(dg.AssetKey("attenuation_corrected_series"))):
                    break
                assert daemon.poll() is None, (tmp_path / "daemon.log").read_text()[-3000:]
                time.sleep(3)
            else:
                raise AssertionError("no binned_cube or attenuation_corrected_series after 300 s:\n" + (tmp_path / "daemon.log").read_text()[-3000:])
            assert instance.get_dynamic_partitions("runs") == ["r0002"]  # the dark run r0001 is not a data run
            assert set(instance.get_materialized_partitions(dg.AssetKey("dark"))) == {"00", "01"}
            done = {str(k) for k in instance.get_materialized_partitions(dg.AssetKey("preprocessed_module"))}
            assert done == {"00|r0002", "01|r0002"}
            assert instance.get_dynamic_partitions("insitu_measurements") == ["S1/S1_m1"]
            assert set(instance.get_materialized_partitions(dg.AssetKey("roi_series"))) == {"S1/S1_m1"}
        cfg = load_beamtime(config_path)
        ds = xr.open_dataset(cfg.output_path("r0002", "binned_cube"), engine="h5netcdf")
        assert int(ds["count"].sum()) > 0
    finally:
        stop_process_group(daemon)
        log.close()
