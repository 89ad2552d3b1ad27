"""Nothing wedges the platform around its daemon: two backfills share one, a second one refuses, a dead one is noticed.

Split from test_reliability.py (its helpers) so that the two files run on both workers.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time

import dagster as dg
import pytest
from conftest import make_beamtime, small_run
from test_reliability import XFEL_ASSETS, env_for

from xfel_assets.cli.home import ensure_dagster_home
from xfel_assets.defs.steps import MODULE_POOL


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
        from xfel_assets.runtime.daemon import running_daemon
        left = running_daemon(home)
        if left is not None and any(p.poll() is None for p in procs):
            os.killpg(left[0], signal.SIGKILL)
    assert [p.returncode for p in procs] == [0, 0], outs
    assert sum("starting a Dagster daemon" in o for o in outs) == 1, outs
    assert sum("already covers these partitions and is running: following it" in o for o in outs) == 1, outs
    with dg.DagsterInstance.from_config(str(home)) as instance:
        assert len(instance.get_backfills()) == 1
        runs = instance.get_runs()
        # Each command makes the run table after its backfill (and the daemon's refresh sensor may too): that
        # overview more than once, the backfill's work once.
        assert [r.job_name for r in runs].count("run_table_job") >= 2
        partitions = [(r.job_name, r.tags.get("dagster/partition"), tuple(sorted(r.asset_selection or ())))
                      for r in runs if r.job_name != "run_table_job"]
        assert len(partitions) == len(set(partitions)), "a partition was run twice"
        for asset in ("binned_cube", "scan_variable"):
            for run in ("r0002", "r0003"):
                mats = instance.fetch_materializations(
                    dg.AssetRecordsFilter(asset_key=dg.AssetKey(asset), asset_partitions=[run]), limit=10).records
                assert len(mats) == 1, (asset, run, len(mats))
    from xfel_assets.runtime.daemon import running_daemon
    assert running_daemon(home) is None  # the last backfill stopped the daemon


@pytest.mark.daemon
def test_a_second_daemon_refuses_and_a_backfill_notices_its_daemon_died(tmp_path):
    from xfel_assets.runtime.daemon import running_daemon
    from xfel_assets.runtime.daemon_control import daemon_command
    from xfel_assets.runtime.liveness import PID_TAG, START_TAG, worker_tags

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
        start = worker_tags(pid)[START_TAG]
        second = subprocess.run(daemon_command(home / "workspace.yaml"), env=env, capture_output=True, text=True,
                                timeout=120)
        assert second.returncode != 0 and f"a Dagster daemon already runs on {home} (pid {pid}, started by backfill)" in second.stderr
        os.killpg(pid, signal.SIGKILL)  # the daemon dies (OOM killer, an admin's kill)
        assert proc.wait(timeout=120) == 1
        text = (tmp_path / "backfill.log").read_text()
        assert f"the Dagster daemon (pid {pid}) that executes this backfill has ended" in text
        assert "it goes on when a daemon runs again" in text
        # A run the killed daemon launched whose worker never started (a kill between the two): the next daemon
        # fails it at once, naming the daemon (run monitoring would wait its start timeout, holding the queue).
        with dg.DagsterInstance.from_config(str(home)) as instance:
            orphan = dg.DagsterRun(job_name="module_job", status=dg.DagsterRunStatus.STARTING,
                                   tags={**worker_tags(role="launcher"), PID_TAG: str(pid), START_TAG: start})
            instance.add_run(orphan)

        # The same command resumes it (a daemon of its own); whatever the kill cut, every failed partition is
        # named with its reason, and `backfill --stale-only` then leaves nothing stale (seen: the killed partitions
        # failed with no reason and --stale-only found nothing to redo).
        resumed = subprocess.run([XFEL_ASSETS, "backfill"], env=env, capture_output=True, text=True, timeout=600)
        done = re.search(r"backfill \S+: \w+, (\d+) of (\d+) partitions done, (\d+) failed", resumed.stdout)
        assert done, resumed.stdout + resumed.stderr
        reasons = re.findall(r"^  FAILED (.+?) \[(\S+)\]: (.+)$", resumed.stdout, re.M)  # a step, or "(run of ...)"
        assert (int(done[3]) > 0) == bool(reasons) and all(why.strip() for *_, why in reasons), resumed.stdout
        with dg.DagsterInstance.from_config(str(home)) as instance:
            failed = instance.get_run_by_id(orphan.run_id)
            assert failed.status == dg.DagsterRunStatus.FAILURE
            assert f"the daemon that launched the run (process {pid} on" in str(instance.all_logs(orphan.run_id))
        again = subprocess.run([XFEL_ASSETS, "backfill", "--stale-only"], env=env, capture_output=True, text=True,
                               timeout=600)
        assert again.returncode == 0, again.stdout + again.stderr
        stale = subprocess.run([XFEL_ASSETS, "stale"], env=env, capture_output=True, text=True, timeout=300)
        assert "0 of " in stale.stdout and "every output was made with the current code" in stale.stdout, stale.stdout
    finally:
        if proc.poll() is None:
            proc.kill()
        log.close()
        left = running_daemon(home)
        if left is not None:  # the test failed before it killed the daemon: do not leave it running
            os.killpg(left[0], signal.SIGKILL)


def test_a_stalled_backfill_says_who_holds_the_slots(tmp_path):
    import io

    from xfel_assets.cli.backfill import Progress, follow, pool_waits

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


def test_the_code_location_is_reloaded_when_its_files_change_and_ticks_share_one_instance(tmp_path):
    """Dagster's daemon replaced its code server every minute and opened an instance per sensor tick
    (xfel_assets/runtime/dagster_patches.py): ours reloads when a file it loads changed, and shares one instance."""
    from xfel_assets.runtime.dagster_patches import patch_sensor_instance, workspace_fingerprint

    config = make_beamtime(tmp_path / "bt", [])
    first = workspace_fingerprint(str(config))
    assert workspace_fingerprint(str(config)) == first  # nothing changed: no reload
    st = config.stat()
    os.utime(config, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    second = workspace_fingerprint(str(config))
    assert second != first
    extra = tmp_path / "bt" / "extra.py"
    extra.write_text("# a workflow file\n")
    config.write_text(config.read_text() + "workflows: [extra.py]\n")
    third = workspace_fingerprint(str(config))
    os.utime(extra, ns=(extra.stat().st_atime_ns, extra.stat().st_mtime_ns + 10**9))
    assert workspace_fingerprint(str(config)) not in (second, third)  # its workflow file was edited

    patch_sensor_instance()
    home = ensure_dagster_home(tmp_path / "home", max_runs=1)
    with dg.DagsterInstance.from_config(str(home)) as instance:
        ticks = [dg.SensorEvaluationContext(instance_ref=instance.get_ref(), last_tick_completion_time=None,
                                            last_run_key=None, cursor=None, repository_name=None) for _ in range(2)]
        assert ticks[0].instance is ticks[1].instance
        assert ticks[0].instance.get_runs() == []  # a working instance of that home


def test_the_backfill_loop_waits_at_least_as_long_as_its_round_took():
    """Dagster sleeps max(0, interval - round) after each backfill round: ours never less than the round."""
    from xfel_assets.runtime.dagster_patches import _RoundInterval

    interval = _RoundInterval(2.0)
    assert max(0, interval - 0.5) == 1.5  # a quick round: the next starts 2 s after this one did
    assert max(0, interval - 3.0) == 3.0  # a 3 s round (a large backfill): 3 s of rest, not none
    assert float(interval) == 2.0 and interval > 1  # a float wherever Dagster reads it as one
