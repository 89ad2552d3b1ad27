"""Nothing wedges the platform: killed commands, busy pools, new homes, truncated files, bad scans.

Each case is reproduced as it happens to a user: real `xfel-assets` processes killed with signals,
a real Dagster instance on disk, files truncated while a step reads them.
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import h5py
import numpy as np
import pytest

from conftest import MODULES, make_beamtime, small_run
from xfel_assets.cli import HOME_READY, ensure_dagster_home
from xfel_assets.liveness import PID_TAG, fail_dead_runs, worker_alive, worker_tags
from xfel_assets.steps import MODULE_POOL
from xfel_core.config import load_beamtime
from xfel_core.demo.beamtime import RunSpec, beamtime_config, write_config, write_run

XFEL_ASSETS = str(Path(sys.executable).parent / "xfel-assets")


def env_for(config: Path, home: Path) -> dict:
    return dict(os.environ, XFEL_BEAMTIME=str(config), DAGSTER_HOME=str(home))


def descendants(pid: int) -> set[int]:
    """Every process below ``pid`` (children, grandchildren, ...), from /proc."""
    children: dict[int, list[int]] = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                stat = (d / "stat").read_text()
            except OSError:
                continue
            ppid = int(stat[stat.rfind(")") + 2:].split()[1])
            children.setdefault(ppid, []).append(int(d.name))
    out, todo = set(), [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            out.add(c)
            todo.append(c)
    return out


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return state[state.rfind(")") + 2] not in "ZX"


def cpu_seconds(pids: set[int]) -> float:
    """User + system CPU time of the processes (those still there)."""
    total = 0
    for pid in pids:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2:].split()
        total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


@pytest.fixture
def beamtime(tmp_path):
    """One run whose module steps read ~80 MB each (long enough to be caught mid-step), no dark."""
    spec = RunSpec(run_number=2, ntrains=40, frames_per_train=16, modules=MODULES, module_shape=(128, 512))
    write_run(tmp_path / "bt" / "raw", spec)
    config = write_config(tmp_path / "bt", beamtime_config(tmp_path / "bt", MODULES, (128, 512), dark_run=None,
                                                           frame_pattern=spec.frame_pattern))
    home = ensure_dagster_home(tmp_path / "home", max_runs=2, max_module_steps=2)
    return config, home


def catch_mid_module_step(proc: subprocess.Popen, instance: dg.DagsterInstance) -> bool:
    """Freeze the command's process group while a module step holds a pool slot; False if it ended first."""
    while proc.poll() is None:
        if instance.event_log_storage.get_concurrency_info(MODULE_POOL).claimed_slots:
            os.killpg(proc.pid, signal.SIGSTOP)
            if instance.event_log_storage.get_concurrency_info(MODULE_POOL).claimed_slots:
                return True
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
        for r in holders:
            run = instance.get_run_by_id(r)
            assert run.status == dg.DagsterRunStatus.FAILURE
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


def test_the_launcher_and_the_commands_fail_runs_whose_worker_is_gone(tmp_path):
    from xfel_assets.launcher import ForkserverRunLauncher
    from dagster._core.launcher.base import WorkerStatus
    from dagster._core.utils import make_new_run_id

    home = ensure_dagster_home(tmp_path / "home", max_runs=2)
    gone = subprocess.Popen(["sleep", "60"])
    dead_tags = worker_tags(gone.pid)
    gone.kill()
    gone.wait()
    with dg.DagsterInstance.from_config(str(home)) as instance:
        def run_with(tags):
            run = instance.add_run(dg.DagsterRun(job_name="module_job", run_id=make_new_run_id(),
                                                 status=dg.DagsterRunStatus.STARTED, tags=tags))
            return run

        dead, mine, untagged = run_with(dead_tags), run_with(worker_tags()), run_with({})
        other_host = run_with({**dead_tags, "xfel/worker_host": "node042"})
        launcher = ForkserverRunLauncher()
        assert launcher.check_run_worker_health(dead).status == WorkerStatus.FAILED
        for run in (mine, untagged, other_host):  # alive, or not ours to judge
            assert launcher.check_run_worker_health(run).status == WorkerStatus.RUNNING

        # A reused pid is not the same process: its start time differs.
        reused = run_with({**worker_tags(), "xfel/worker_start": "1"})
        assert worker_alive(reused.tags) is False

        instance.event_log_storage.set_concurrency_slots(MODULE_POOL, 2)
        assert instance.event_log_storage.claim_concurrency_slot(MODULE_POOL, dead.run_id, "preprocessed_module").is_claimed
        assert sorted(fail_dead_runs(instance)) == sorted([dead.run_id, reused.run_id])
        assert instance.get_run_by_id(dead.run_id).status == dg.DagsterRunStatus.FAILURE
        assert instance.get_run_by_id(mine.run_id).status == dg.DagsterRunStatus.STARTED
        assert not instance.event_log_storage.get_concurrency_info(MODULE_POOL).claimed_slots
        assert dead.tags[PID_TAG] == str(gone.pid)


def test_commands_starting_together_on_a_new_home_leave_it_usable(tmp_path):
    """Two commands at once on an empty home, repeated: both succeed and the home opens afterwards."""
    config = make_beamtime(tmp_path / "bt", [small_run(2)])
    code = ("import sys; from pathlib import Path; import dagster as dg; "
            "from xfel_assets.cli import ensure_dagster_home; "
            "h = ensure_dagster_home(Path(sys.argv[1]), 2); "
            "i = dg.DagsterInstance.from_config(str(h)); i.add_dynamic_partitions('runs', [sys.argv[2]]); "
            "print(len(i.get_runs()))")
    for attempt in range(4):
        home = tmp_path / f"home{attempt}"
        procs = [subprocess.Popen([sys.executable, "-c", code, str(home), f"r000{i}"], env=env_for(config, home),
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in (2, 3)]
        outs = [p.communicate(timeout=300) for p in procs]
        assert [p.returncode for p in procs] == [0, 0], outs
        assert (home / HOME_READY).exists()
        with dg.DagsterInstance.from_config(str(home)) as instance:
            assert sorted(instance.get_dynamic_partitions("runs")) == ["r0002", "r0003"]


def test_a_broken_home_is_reported_clearly(tmp_path):
    from xfel_core.exceptions import XfelError

    home = ensure_dagster_home(tmp_path / "home", 2)
    (home / HOME_READY).unlink()  # as if a command had died while creating it ...
    (home / "history" / "runs.db").write_bytes(b"half-written")  # ... leaving a damaged run database
    with pytest.raises(XfelError, match=r"the Dagster home .* cannot be opened .* move it aside"):
        ensure_dagster_home(home, 2)
    assert not (home / HOME_READY).exists()


TRUNCATE = """
import os, sys
from xfel_core.euxfel import pipeline
from xfel_core.config import load_beamtime
from xfel_core.demo.beamtime import RunSpec, beamtime_config, write_config, write_run
from xfel_core.exceptions import RawFileChangedError
from xfel_core.readers import frame_map

cfg = load_beamtime(sys.argv[1])
for make in (pipeline.make_raw_run, pipeline.make_scan_variable, pipeline.make_framemask):
    make(cfg, "r0002")
frame_map.WINDOW_FRAMES = 16
ready, seen = frame_map.ReadAhead.ready, []

def ready_then_truncate(self):
    ready(self)
    seen.append(1)
    if len(seen) == 2:  # a migration rewrites the file in place while the kernel is on it
        path = sys.argv[2]
        os.truncate(path, os.path.getsize(path) // 3)

frame_map.ReadAhead.ready = ready_then_truncate
try:
    pipeline.make_preprocessed_module(cfg, "r0002", 0)
except RawFileChangedError as e:
    print("RawFileChangedError:", e)
"""


def test_a_raw_file_truncated_during_a_mapped_read_fails_the_step_naming_it(tmp_path):
    config = make_beamtime(tmp_path / "bt", [small_run(2, ntrains=40, frames_per_train=8)])
    module_file = next((tmp_path / "bt" / "raw" / "r0002").glob("RAW-R0002-DSSC00-S*.h5"))
    out = subprocess.run([sys.executable, "-c", TRUNCATE, str(config), str(module_file)], capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, f"the step's process died (signal {-out.returncode}): {out.stderr[-2000:]}"
    assert f"RawFileChangedError: {module_file}: the file was truncated while it was read" in out.stdout
    assert issubclass(__import__("xfel_core.exceptions").exceptions.RawFileChangedError, OSError)  # retried


def test_only_io_errors_are_retried(tmp_path):
    from xfel_assets.steps import run_science

    calls = {"value": 0, "os": 0}

    def bug(_):
        calls["value"] += 1
        raise ValueError("attempt to get argmax of an empty sequence")

    def flaky(_):
        calls["os"] += 1
        if calls["os"] == 1:
            raise OSError("Resource temporarily unavailable")
        return {}

    policy = dg.RetryPolicy(max_retries=2, delay=0)

    @dg.asset(retry_policy=policy)
    def buggy():
        run_science(bug, None)

    @dg.asset(retry_policy=policy)
    def hiccup():
        run_science(flaky, None)

    with dg.instance_for_test() as instance:
        assert not dg.materialize([buggy], instance=instance, raise_on_error=False).success
        assert dg.materialize([hiccup], instance=instance, raise_on_error=False).success
    assert calls == {"value": 1, "os": 2}


def test_an_all_nan_scan_fails_first_and_keeps_the_previous_cube(tmp_path):
    from xfel_assets.backfill import failed_since_materialized
    from xfel_core.lineage.model import Scope
    from xfel_core.lineage.staleness import every_partition

    config = make_beamtime(tmp_path / "bt", [small_run(2)])
    home = ensure_dagster_home(tmp_path / "home", max_runs=2)
    env = env_for(config, home)
    first = subprocess.run([XFEL_ASSETS, "materialize"], env=env, capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stdout + first.stderr
    cfg = load_beamtime(config)
    cube = cfg.output_path("r0002", "binned_cube")
    before = hashlib.sha256(cube.read_bytes()).hexdigest()

    control = next((tmp_path / "bt" / "raw" / "r0002").glob("RAW-R0002-DA*-S*.h5"))
    with h5py.File(control, "r+") as f:  # the motor's readout lost: NaN in every train
        ds = f[f"CONTROL/{cfg.scan_variable.source}/{cfg.scan_variable.key}/value"]
        ds[...] = np.nan
    out = subprocess.run([XFEL_ASSETS, "materialize"], env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 1
    assert "FAILED  r0002" in out.stdout and "previous, not current: " + str(cube) in out.stdout
    assert "has no finite value (12 trains, all NaN or missing)" in out.stdout
    assert "Stack Trace" not in out.stdout + out.stderr  # the traces go to the log file, named at the end
    log = Path(out.stdout.split("stack traces: ")[1].split()[0])
    assert "Stack Trace" in log.read_text()
    assert hashlib.sha256(cube.read_bytes()).hexdigest() == before

    with dg.DagsterInstance.from_config(str(home)) as instance:
        failed = instance.get_runs(filters=dg.RunsFilter(statuses=[dg.DagsterRunStatus.FAILURE]))
        assert len(failed) == 1
        restarts = instance.get_records_for_run(failed[0].run_id, of_type=dg.DagsterEventType.STEP_UP_FOR_RETRY)
        assert not restarts.records  # a data error: not retried
        stale = failed_since_materialized(instance, every_partition(cfg, Scope(runs=["r0002"])))
        assert [(s.asset, s.key) for s in stale] == [("scan_variable", "r0002")]


def test_a_missing_middle_sequence_file_is_flagged(tmp_path):
    from xfel_core.euxfel import pipeline

    config = make_beamtime(tmp_path / "bt", [small_run(2, ntrains=15, trains_per_sequence=5), small_run(3)])
    cfg = load_beamtime(config)
    assert pipeline.make_raw_run(cfg, "r0003")["checks"]["modules_cover_run"].passed
    files = sorted((tmp_path / "bt" / "raw" / "r0002").glob("RAW-R0002-DSSC00-S*.h5"))
    assert len(files) >= 3
    with h5py.File(files[1], "r") as f:
        lost = int((f["INDEX/trainId"][()] > 0).sum())
    files[1].unlink()  # a half-copied run: a middle sequence file of module 00 never arrived
    check = pipeline.make_raw_run(cfg, "r0002")["checks"]["modules_cover_run"]
    assert not check.passed
    assert f"module 00 has {(15 - lost) / 15:.1%} of the run's trains" in check.description
    assert "module 00 lacks sequence file(s) S00001" in check.description


@pytest.mark.daemon
def test_two_backfills_at_once_share_one_daemon_and_do_the_work_once(tmp_path):
    config = make_beamtime(tmp_path / "bt", [small_run(2), small_run(3)])
    home = ensure_dagster_home(tmp_path / "home", max_runs=2)
    env = env_for(config, home)
    procs = [subprocess.Popen([XFEL_ASSETS, "backfill"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True) for _ in range(2)]
    try:
        outs = [p.communicate(timeout=600)[0] for p in procs]
    finally:
        from xfel_assets.daemon import running_daemon
        left = running_daemon(home)
        if left is not None and any(p.poll() is None for p in procs):
            os.killpg(left[0], signal.SIGKILL)
    assert [p.returncode for p in procs] == [0, 0], outs
    assert sum("starting a Dagster daemon" in o for o in outs) == 1, outs
    assert sum("already covers these partitions and is running: following it" in o for o in outs) == 1, outs
    with dg.DagsterInstance.from_config(str(home)) as instance:
        assert len(instance.get_backfills()) == 1
        runs = instance.get_runs()
        partitions = [(r.job_name, r.tags.get("dagster/partition"), tuple(sorted(r.asset_selection or ())))
                      for r in runs]
        assert len(partitions) == len(set(partitions)), "a partition was run twice"
        for asset in ("binned_cube", "scan_variable"):
            for run in ("r0002", "r0003"):
                mats = instance.fetch_materializations(
                    dg.AssetRecordsFilter(asset_key=dg.AssetKey(asset), asset_partitions=[run]), limit=10).records
                assert len(mats) == 1, (asset, run, len(mats))
    from xfel_assets.daemon import running_daemon
    assert running_daemon(home) is None  # the last backfill stopped the daemon


@pytest.mark.daemon
def test_a_second_daemon_refuses_and_a_backfill_notices_its_daemon_died(tmp_path):
    from xfel_assets.backfill import daemon_command
    from xfel_assets.daemon import running_daemon

    config = make_beamtime(tmp_path / "bt", [small_run(2)])
    home = ensure_dagster_home(tmp_path / "home", max_runs=2)
    env = env_for(config, home)
    log = open(tmp_path / "backfill.log", "w")
    proc = subprocess.Popen([XFEL_ASSETS, "backfill"], env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 180
        with dg.DagsterInstance.from_config(str(home)) as instance:
            while running_daemon(home) is None or not instance.get_backfills():
                assert proc.poll() is None and time.monotonic() < deadline, (tmp_path / "backfill.log").read_text()
                time.sleep(0.2)
        pid, owner = running_daemon(home)
        assert owner == "backfill"
        second = subprocess.run(daemon_command(home / "workspace.yaml"), env=env, capture_output=True, text=True,
                                timeout=120)
        assert second.returncode != 0 and f"a Dagster daemon already runs on {home} (pid {pid}, started by backfill)" in second.stderr
        os.killpg(pid, signal.SIGKILL)  # the daemon dies (OOM killer, an admin's kill)
        assert proc.wait(timeout=120) == 1
        text = (tmp_path / "backfill.log").read_text()
        assert f"the Dagster daemon (pid {pid}) that executes this backfill has ended" in text
        assert "it goes on when a daemon runs again" in text
    finally:
        if proc.poll() is None:
            proc.kill()
        log.close()
        left = running_daemon(home)
        if left is not None:  # the test failed before it killed the daemon: do not leave it running
            os.killpg(left[0], signal.SIGKILL)


def test_a_stalled_backfill_says_who_holds_the_slots(tmp_path):
    import io

    from xfel_assets.backfill import Progress, follow, pool_waits

    home = ensure_dagster_home(tmp_path / "home", max_runs=2)
    with dg.DagsterInstance.from_config(str(home)) as instance:
        instance.event_log_storage.set_concurrency_slots(MODULE_POOL, 1)
        assert instance.event_log_storage.claim_concurrency_slot(MODULE_POOL, "holder-run", "dark").is_claimed
        assert pool_waits(instance) is None  # nobody waits
        assert not instance.event_log_storage.claim_concurrency_slot(MODULE_POOL, "waiting-run", "module").is_claimed
        why = pool_waits(instance)
        assert why.startswith("waiting for pool xfel_module_steps: 1 of 1 slots held by dark of run holder-r")
    polls = iter([Progress("REQUESTED")] * 4 + [Progress("COMPLETED")])
    out = io.StringIO()
    follow(lambda: next(polls), "bf", poll_s=0, out=out, waiting=lambda: why, stalled_s=0)
    assert out.getvalue().count(why) == 1  # said once, not at every poll
