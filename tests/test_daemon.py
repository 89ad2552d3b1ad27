"""The real thing: the Dagster daemon runs new_run_sensor, which launches the backfill of a new run."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest
import xarray as xr

from conftest import dark_run, make_beamtime, small_run
from xfel_assets.cli.home import ensure_dagster_home
from xfel_assets.runtime.daemon_control import daemon_command, stop_process_group
from xfel_core.config import load_beamtime
from xfel_core.demo.insitu import insitu_config, write_insitu_sample

pytestmark = pytest.mark.daemon

REPO = Path(__file__).resolve().parents[1]


VARIABLES = '''
from xfel_core.variables import variable

@variable(title="Frames in the cube")
def cube_frames(binned_cube):
    return int(binned_cube["count"].sum())

@variable(title="Frames", workflow="insitu")
def measured_frames(run):
    return len(run.headers)
'''


def table_rows(path: Path, column: str) -> dict:
    """A run table's column by the table's first column (the run or measurement), {} while it is not made."""
    if not path.exists():
        return {}
    df = pd.read_parquet(path)
    return {} if column not in df else dict(zip(df.iloc[:, 0], df[column]))


def test_daemon_sensors_materialize_a_new_run_and_a_new_insitu_measurement(tmp_path):
    """The new-run and new-measurement sensors take them; the refresh sensor then makes their user variables
    and the run tables."""
    write_insitu_sample(tmp_path / "bt" / "raw" / "insitu", "S1", ("m1",), 6, (64, 128), seed=4)
    insitu = dict(insitu_config("raw/insitu", (64, 128)), settle_seconds=0.0)
    (tmp_path / "bt").mkdir(exist_ok=True)
    (tmp_path / "bt" / "variables.py").write_text(VARIABLES)
    config_path = make_beamtime(tmp_path / "bt", [small_run(2)], dark=dark_run(), insitu=insitu,
                                completeness={"settle_seconds": 0, "refresh_interval_s": 2}, variables="variables.py")
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
        frames = int(ds["count"].sum())
        assert frames > 0
        tables = cfg.processed_root / "run_table"
        while time.monotonic() < deadline:
            if (table_rows(tables / "run_table.parquet", "Frames in the cube").get("r0002") == frames
                    and table_rows(tables / "insitu_run_table.parquet", "Frames").get("S1/S1_m1") == 6):
                break
            assert daemon.poll() is None, (tmp_path / "daemon.log").read_text()[-3000:]
            time.sleep(2)
        else:
            raise AssertionError("the refresh sensor made no run table with the new run's variables:\n"
                                 + (tmp_path / "daemon.log").read_text()[-3000:])
    finally:
        stop_process_group(daemon)
        log.close()
