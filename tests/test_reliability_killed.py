"""Nothing wedges the platform when a command is killed: its pool slots are freed, no worker is left behind.

Split from test_reliability.py (its helpers and fixture) so that the two files run on both workers.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time

import dagster as dg
import pytest
import sqlalchemy.exc

from conftest import MODULES
from test_reliability import XFEL_ASSETS, alive, cpu_seconds, descendants, env_for
from xfel_assets.cli.home import ensure_dagster_home
from xfel_assets.defs.steps import MODULE_POOL
from xfel_assets.runtime.liveness import worker_alive
from xfel_core.config import load_beamtime
from xfel_core.demo.beamtime import RunSpec, beamtime_config, write_config, write_run


SPEC = RunSpec(run_number=2, ntrains=40, frames_per_train=16, modules=MODULES, module_shape=(128, 512))


@pytest.fixture(scope="module")
def raw_once(tmp_path_factory):
    """The run's raw files, written once for this file's tests (4.5 s of CPU each time)."""
    raw = tmp_path_factory.mktemp("killed") / "raw"
    write_run(raw, SPEC)
    return raw


@pytest.fixture
def beamtime(tmp_path, raw_once):
    """One run whose module steps read ~80 MB each (long enough to be caught mid-step), no dark."""
    shutil.copytree(raw_once, tmp_path / "bt" / "raw")
    config = write_config(tmp_path / "bt", beamtime_config(tmp_path / "bt", MODULES, (128, 512), dark_run=None,
                                                           frame_pattern=SPEC.frame_pattern))
    home = ensure_dagster_home(tmp_path / "home", max_runs=2, max_module_steps=2)
    return config, home


def catch_mid_module_step(proc: subprocess.Popen, instance: dg.DagsterInstance) -> bool:
    """Freeze the command's process group while a module step holds a pool slot; False if it ended first.

    A process frozen in the middle of a write to the Dagster database holds its lock: the read after the
    freeze then finds the database locked, and the group is let go and caught again later."""
    def claimed() -> bool:
        return bool(instance.event_log_storage.get_concurrency_info(MODULE_POOL).claimed_slots)

    while proc.poll() is None:
        if claimed():
            os.killpg(proc.pid, signal.SIGSTOP)
            try:
                if claimed():
                    return True
            except sqlalchemy.exc.OperationalError as e:
                if "database is locked" not in str(e) and "locking protocol" not in str(e):
                    os.killpg(proc.pid, signal.SIGCONT)  # never leave the group frozen
                    raise
            os.killpg(proc.pid, signal.SIGCONT)
        time.sleep(0.005)
    return False


@pytest.mark.parametrize("kill", ["process_group", "parent_only"])
def test_a_killed_materialize_frees_its_slots_and_leaves_no_workers(beamtime, tmp_path, kill):
    config, home = beamtime
    env = env_for(config, home)
    with dg.DagsterInstance.from_config(str(home)) as instance:
        for _attempt in range(5):
            log = open(tmp_path / "killed.log", "w")
            proc = subprocess.Popen([XFEL_ASSETS, "materialize", "--runs", "r0002"], env=env, stdout=log,
                                    stderr=subprocess.STDOUT, start_new_session=True)
            if catch_mid_module_step(proc, instance):
                break
            proc.wait()
        else:
            raise AssertionError("never caught a module step running")
        workers = descendants(proc.pid)
        assert workers, "materialize runs its Dagster runs in worker processes"
        if kill == "process_group":  # as a closed terminal or an OOM kill of the group does
            os.killpg(proc.pid, signal.SIGKILL)
        else:  # kill -9 of the command alone: its forkserver and workers must not outlive it
            os.kill(proc.pid, signal.SIGKILL)
            os.killpg(proc.pid, signal.SIGCONT)
        proc.wait()
        log.close()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and any(alive(p) for p in workers):
            time.sleep(0.2)
        assert not [p for p in workers if alive(p)], "workers outlived the killed command"

        holders = {s.run_id for s in instance.event_log_storage.get_concurrency_info(MODULE_POOL).claimed_slots}
        assert holders, "the killed step's slot is still held (the wedge this test reproduces)"
        stuck = [instance.get_run_by_id(r) for r in holders]
        assert all(r.status == dg.DagsterRunStatus.STARTED for r in stuck)
        assert all(worker_alive(r.tags) is False for r in stuck)

        # The next command proceeds: it fails the dead runs, frees their slots and does the work.
        out = subprocess.run([XFEL_ASSETS, "materialize", "--runs", "r0002"], env=env, capture_output=True,
                             text=True, timeout=600)
        assert out.returncode == 0, out.stdout + out.stderr
        assert "was left STARTED by a killed process: marked failed" in out.stdout
        from xfel_assets.cli.backfill import failed_steps

        for r in holders:
            run = instance.get_run_by_id(r)
            assert run.status == dg.DagsterRunStatus.FAILURE
            # Its killed step is named with the reason (backfill's failure list and --stale-only read this).
            killed = failed_steps(instance, r)
            assert killed and all(why.startswith("never ended: ") and "killed" in why for why in killed.values()), killed
        assert not instance.event_log_storage.get_concurrency_info(MODULE_POOL).claimed_slots
        assert "r0002" in instance.get_materialized_partitions(dg.AssetKey("binned_cube"))


def test_steps_waiting_for_slots_sleep_and_say_who_holds_them(beamtime, tmp_path):
    config, home = beamtime
    config.write_text(config.read_text().replace("execution:\n", "execution:\n  max_module_steps: 1\n"))
    assert load_beamtime(config).execution.max_module_steps == 1
    env = env_for(config, home)
    with dg.DagsterInstance.from_config(str(home)) as instance:
        instance.event_log_storage.set_concurrency_slots(MODULE_POOL, 1)
        # Another machine's step holds the only slot (no run of ours: nothing to fail).
        assert instance.event_log_storage.claim_concurrency_slot(MODULE_POOL, "elsewhere", "its_step").is_claimed
        log_path = tmp_path / "waiting.log"
        with open(log_path, "w") as log:
            proc = subprocess.Popen([XFEL_ASSETS, "materialize", "--runs", "r0002"], env=env, stdout=log,
                                    stderr=subprocess.STDOUT, start_new_session=True)
        try:
            deadline = time.monotonic() + 300
            # The command says what it waits for (and the module steps are then waiting) ...
            while "waiting for pool xfel_module_steps" not in log_path.read_text():
                assert proc.poll() is None and time.monotonic() < deadline, log_path.read_text()
                time.sleep(0.5)
            # ... without spinning: busy-waiting steps burn ~6 s of CPU each in 6 s; sleeping ones a few polls.
            tree = descendants(proc.pid) | {proc.pid}
            before = cpu_seconds(tree)
            time.sleep(6)
            used = cpu_seconds(tree) - before
            assert used < 1.5, f"{used:.2f} s of CPU in 6 s of waiting for a pool slot"
            assert "its_step of run elsewher" in log_path.read_text()
            instance.event_log_storage.free_concurrency_slots_for_run("elsewhere")
            assert proc.wait(timeout=300) == 0, log_path.read_text()
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
