"""`compute: slurm` without a cluster: its configuration, pools, and the job program's Pipes contract.

The jobs themselves run on a real cluster in test_slurm.py (marker slurm).
"""

from __future__ import annotations

import base64
import pickle
import sys

import dagster as dg
import pytest
import yaml

from conftest import dark_run, make_beamtime, small_run
from xfel_core.config import load_beamtime
from xfel_core.exceptions import ConfigError

SLURM = {"ssh": {"host": "login.example", "user": "jdoe"}, "python_env": "/opt/xfel-env",
         "remote_base": "/scratch/jdoe/dagster-slurm", "max_jobs": 6}


@pytest.fixture
def beamtime(tmp_path):
    return make_beamtime(tmp_path, [small_run(2)], dark=dark_run())


def with_text(path, text: str):
    path.write_text(path.read_text() + text)
    return path


def test_slurm_mode_settings_and_defaults(beamtime):
    data = yaml.safe_load(beamtime.read_text())
    data.update(compute="slurm", slurm=dict(SLURM, jobs={"preprocessed_module": {"mem": "16G"}}),
                execution={"max_concurrent": 2})
    beamtime.write_text(yaml.safe_dump(data))
    cfg = load_beamtime(beamtime)
    assert cfg.slurm.jobs.preprocessed_module.mem == "16G" and cfg.slurm.jobs.preprocessed_module.cpus == 2
    assert cfg.slurm.jobs.insitu_frames.time_limit == "01:00:00"
    assert cfg.slurm.ssh.port == 22
    # Steps of SLURM jobs only wait for them: as many at once as jobs may be on the cluster.
    assert cfg.resolved_max_concurrent() == 6
    assert load_beamtime(make_beamtime(beamtime.parent / "local", [small_run(2)])).compute == "local"


@pytest.mark.parametrize("text, message", [
    ("compute: slurm\n", r"slurm: required key is missing \(compute is slurm\)"),
    ("compute: cluster\n", r"compute: Input should be 'local' or 'slurm'"),
    ("compute: slurm\nslurm: {python_env: /e, remote_base: /r, ssh: {host: h}}\n", r"slurm\.ssh\.user: required key is missing"),
    # YAML 1.1 reads an unquoted 1:00:00 as the base-60 number 3600.
    ("compute: slurm\nslurm: {python_env: /e, remote_base: /r, ssh: {host: h, user: u}, "
     "jobs: {preprocessed_module: {time_limit: 1:00:00}}}\n", r"time_limit: .*3600: quote the time limit"),
    ("compute: slurm\nslurm: {python_env: /e, remote_base: /r, ssh: {host: h, user: u}, "
     "jobs: {event_smalldata: {mem: 16 GB}}}\n", r"slurm\.jobs\.event_smalldata\.mem: .*not a SLURM memory size"),
    ("compute: slurm\nslurm: {python_env: /e, remote_base: /r, ssh: {host: h, user: u}, "
     "jobs: {binned_cube: {cpus: 4}}}\n", r"slurm\.jobs\.binned_cube: unknown key"),
    # dagster-slurm writes these into shell commands unquoted: refused, not passed on.
    ("compute: slurm\nslurm: {python_env: /e, remote_base: \"/r/it's\", ssh: {host: h, user: u}}\n",
     r"slurm\.remote_base: .*not safe in a shell command"),
    ("compute: slurm\nslurm: {python_env: /e, remote_base: /r, partition: 'x;touch /tmp/p', ssh: {host: h, user: u}}\n",
     r"slurm\.partition: .*not safe in a shell command"),
])
def test_wrong_slurm_config_names_the_key(beamtime, text, message):
    with_text(beamtime, text)
    with pytest.raises(ConfigError, match=message):
        load_beamtime(beamtime)


def test_heavy_assets_use_the_slurm_pool_in_slurm_mode(beamtime, monkeypatch):
    from xfel_assets.defs.steps import MODULE_POOL, SLURM_POOL, heavy_pool

    assert heavy_pool(MODULE_POOL) == MODULE_POOL  # the session beamtime is local
    data = yaml.safe_load(beamtime.read_text())
    data.update(compute="slurm", slurm=SLURM)
    beamtime.write_text(yaml.safe_dump(data))
    monkeypatch.setenv("XFEL_BEAMTIME", str(beamtime))
    assert heavy_pool(MODULE_POOL) == SLURM_POOL and heavy_pool() == SLURM_POOL


def test_the_job_program_reports_the_result_or_the_named_error_through_pipes(beamtime):
    """slurm_payload.py run by Dagster Pipes as a subprocess (on the cluster, dagster-slurm runs it)."""
    from xfel_assets.runtime import slurm_payload

    def through_pipes(args: list) -> list:
        @dg.asset(required_resource_keys={"pipes"})
        def probe(context):  # (no annotations: this module's are strings, and Dagster reads them)
            messages = context.resources.pipes.run(command=[sys.executable, slurm_payload.__file__], context=context,
                                 extras={"function": "xfel_core.euxfel.pipeline:make_raw_run",
                                         "config_path": str(beamtime), "args": args}).get_custom_messages()
            return dg.MaterializeResult(metadata={"messages": dg.MetadataValue.json(messages)})

        result = dg.materialize([probe], resources={"pipes": dg.PipesSubprocessClient()})
        return result.asset_materializations_for_node("probe")[0].metadata["messages"].value

    [ok] = through_pipes(["r0002"])
    info = pickle.loads(base64.b64decode(ok["info"]))
    assert info["path"] == load_beamtime(beamtime).output_path("r0002", "raw_run") and info["path"].exists()
    assert ok["job_id"] == "" and ok["seconds"] > 0  # not in a SLURM job here
    [bad] = through_pipes(["r0009"])
    assert set(bad) == {"xfel_error", "job_id"} and "r0009" in bad["xfel_error"] and bad["job_id"] == ""


def test_slurm_job_slots_hold_the_cap_on_this_machine(tmp_path, monkeypatch):
    """Never more than slurm.max_jobs holders at once (Dagster's pool alone can let one more in on SQLite)."""
    import threading
    import time

    from xfel_assets.runtime.slurm import _job_slot
    from xfel_core.config import SlurmConfig

    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path))
    sc = SlurmConfig(**dict(SLURM, max_jobs=2))
    log = type("Log", (), {"info": staticmethod(lambda msg: None)})
    context = type("Context", (), {"log": log})()
    inside, most, lock = [0], [0], threading.Lock()

    def job():
        with _job_slot(context, sc):
            with lock:
                inside[0] += 1
                most[0] = max(most[0], inside[0])
            time.sleep(0.3)
            with lock:
                inside[0] -= 1

    threads = [threading.Thread(target=job) for _ in range(5)]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert most[0] == 2
    assert time.monotonic() - t0 >= 0.9  # five jobs of 0.3 s, two at a time: three rounds


def test_the_environment_script_quotes_every_value(tmp_path):
    """slurm.python_env may hold a quote or $(...): the layout script runs it as a path, never as a command."""
    import os
    import subprocess

    from xfel_assets.runtime.slurm import environment_script

    env = tmp_path / "it's $(touch PWNED) env"
    (env / "bin").mkdir(parents=True)
    (env / "bin" / "python").write_text("#!/bin/sh\n")
    (env / "bin" / "python").chmod(0o755)
    (env / "bin" / "activate").write_text("XFEL_ACTIVATED=yes\n")
    layout = tmp_path / "layout"
    out = subprocess.run(["bash", "-c", environment_script(str(env), str(layout))], cwd=tmp_path,
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert not (tmp_path / "PWNED").exists()
    assert os.path.realpath(layout / "env") == str(env)
    sourced = subprocess.run(["bash", "-c", f"source {layout}/activate.sh && echo $XFEL_ACTIVATED"], cwd=tmp_path,
                             capture_output=True, text=True)
    assert sourced.stdout.strip() == "yes" and not (tmp_path / "PWNED").exists()
    missing = subprocess.run(["bash", "-c", environment_script(str(tmp_path / "no'pe"), str(layout))], cwd=tmp_path,
                             capture_output=True, text=True)
    assert missing.returncode == 3 and "no Python at" in missing.stderr and "no'pe" in missing.stderr
