"""Nothing wedges the platform: killed commands, busy pools, new homes, truncated files, bad scans.

Killed commands are in test_reliability_killed.py, the daemon's cases in test_reliability_daemon.py.
Each case is reproduced as it happens to a user: real `xfel-assets` processes killed with signals,
a real Dagster instance on disk, files truncated while a step reads them.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import h5py
import numpy as np
import pytest

from conftest import make_beamtime, small_run
from xfel_assets.cli.home import HOME_READY, ensure_dagster_home
from xfel_assets.defs.steps import MODULE_POOL
from xfel_assets.runtime.liveness import PID_TAG, fail_dead_runs, worker_alive, worker_tags
from xfel_core.config import load_beamtime

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


def test_the_launcher_and_the_commands_fail_runs_whose_worker_is_gone(tmp_path):
    from xfel_assets.runtime.launcher import ForkserverRunLauncher
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
            "from xfel_assets.cli.home import ensure_dagster_home; "
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
    from xfel_assets.defs.steps import run_science

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
    from xfel_assets.cli.backfill import failed_since_materialized
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
