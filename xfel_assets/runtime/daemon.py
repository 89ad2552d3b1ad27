"""`python -m xfel_assets.daemon run -w workspace.yaml`: the Dagster daemon with a shorter loop interval, one per home.

Dagster's daemons (backfills above all) wait 30 s between rounds. An asset backfill of runs x
modules advances one level of the asset graph per round (run inputs and darks, then modules,
then cubes), so a 30 s wait costs a whole-beamtime reprocessing minutes of idling. This entry
point sets the interval from $XFEL_DAEMON_INTERVAL_S (default 5 s), reloads its code location only
when its files changed (:func:`xfel_assets.runtime.dagster_patches.patch_daemon`) and then runs Dagster's own
daemon command line; `xfel-assets backfill` starts it when no daemon is running.

Two daemons on one home would launch every run twice: the daemon holds an exclusive lock on
``$DAGSTER_HOME/.xfel-daemon.lock`` (with its pid in it) for its lifetime, and a second one exits at
once, saying which daemon runs.
"""

from __future__ import annotations

import fcntl
import os
import signal
import sys
import threading
import time
from pathlib import Path

from dagster._daemon.cli import main as dagster_daemon_main

from xfel_assets.runtime.dagster_patches import patch_daemon

INTERVAL_ENV = "XFEL_DAEMON_INTERVAL_S"
#: Set to "backfill" by `xfel-assets backfill` for a daemon it starts: the last backfill using it stops it.
OWNER_ENV = "XFEL_DAEMON_OWNER"
DEFAULT_INTERVAL_S = 5
SENSOR_LOOP_S = 1
LOCK_NAME = ".xfel-daemon.lock"
#: The fingerprint of the files the daemon's code location was loaded from (written by the daemon).
CODE_FILE = ".xfel-daemon-code"
#: Reload the code location at least this often even when no file changed (s).
WORKSPACE_RELOAD_S = 600


def lock_path(home: Path) -> Path:
    return home / LOCK_NAME


def running_daemon(home: Path) -> tuple[int, str] | None:
    """(pid, owner) of the xfel-assets daemon running on this home, None if there is none (its lock is free)."""
    path = lock_path(home)
    if not path.exists():
        return None
    with open(path) as f:
        try:
            fcntl.flock(f, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            pid, _, owner = f.read().strip().partition(" ")
            return (int(pid) if pid.isdigit() else -1), owner
        fcntl.flock(f, fcntl.LOCK_UN)
        return None


def hold_lock(home: Path):
    """Take the home's daemon lock for this process's lifetime (the open file is returned); exits if it is held."""
    f = open(lock_path(home), "a+")
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.seek(0)
        pid, _, owner = f.read().strip().partition(" ")
        sys.exit(f"xfel_assets.daemon: a Dagster daemon already runs on {home} (pid {pid}, started by {owner}); "
                 "one per Dagster home, or every run is launched twice")
    f.truncate(0)
    f.write(f"{os.getpid()} {os.environ.get(OWNER_ENV, 'user')}")
    f.flush()
    return f


#: Users of a daemon that backfills started: each backfill holds this file's lock shared while it runs.
USERS_LOCK = ".xfel-daemon-users.lock"
#: Held while a command starts a daemon or decides to use the running one.
START_LOCK = ".xfel-daemon-start.lock"
#: Seconds between a backfill-started daemon's looks for a backfill still using it.
ORPHAN_CHECK_S = 10


def end_when_unused(home: Path, check_s: float = ORPHAN_CHECK_S) -> None:
    """A daemon that backfills started ends itself once none holds the users' lock (the last one was killed).

    The backfill that ends last stops it; a backfill killed with SIGKILL cannot, and its daemon (several
    hundred MB) would idle on. The start lock, held from the decision to the end of the process, keeps a
    new backfill from taking this daemon as running while it stops.
    """
    def watch() -> None:
        while True:
            time.sleep(check_s)
            start = open(home / START_LOCK, "a+")
            fcntl.flock(start, fcntl.LOCK_EX)
            with open(home / USERS_LOCK, "a+") as users:
                try:
                    fcntl.flock(users, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:  # a backfill uses this daemon
                    fcntl.flock(start, fcntl.LOCK_UN)
                    start.close()
                    continue
            print("xfel_assets.daemon: no backfill uses this daemon any more (the one that started it ended "
                  "without stopping it); stopping", file=sys.stderr, flush=True)
            os.killpg(os.getpgrp(), signal.SIGTERM)  # its session (code servers too); the start lock stays held to the end
            return

    threading.Thread(target=watch, name="end-when-unused", daemon=True).start()


def fail_runs_of_dead_processes() -> None:
    """Fail the runs a killed daemon or worker left unfinished (run monitoring checks STARTED runs only, later)."""
    import dagster as dg

    from xfel_assets.runtime.liveness import fail_dead_runs

    with dg.DagsterInstance.get() as instance:
        fail_dead_runs(instance, say=lambda msg: print(msg, flush=True))


def main() -> None:
    home = os.environ.get("DAGSTER_HOME")
    _lock = hold_lock(Path(home)) if home else None  # held until the process ends
    if home and os.environ.get(OWNER_ENV) == "backfill":
        end_when_unused(Path(home))
    code_file = Path(home) / CODE_FILE if home else None
    if code_file is not None:
        code_file.unlink(missing_ok=True)  # a killed daemon's: this one writes its own once loaded
    patch_daemon(interval_s=float(os.environ.get(INTERVAL_ENV) or DEFAULT_INTERVAL_S), sensor_loop_s=SENSOR_LOOP_S,
                 workspace_reload_s=WORKSPACE_RELOAD_S, code_file=code_file)
    from xfel_assets.runtime.launcher import warm_up

    threading.Thread(target=warm_up, name="forkserver-warm-up", daemon=True).start()
    if home:
        threading.Thread(target=fail_runs_of_dead_processes, name="dead-runs", daemon=True).start()
    sys.argv[0] = "dagster-daemon"
    dagster_daemon_main()


if __name__ == "__main__":
    main()
