"""`python -m xfel_assets.daemon run -w workspace.yaml`: the Dagster daemon with a shorter loop interval, one per home.

Dagster's daemons (backfills above all) wait DEFAULT_DAEMON_INTERVAL_SECONDS (30 s, a constant of
dagster._daemon.controller, read at every loop) between rounds. An asset backfill of runs x
modules advances one level of the asset graph per round (run inputs and darks, then modules,
then cubes), so a 30 s wait costs a whole-beamtime reprocessing minutes of idling. This entry
point sets the interval from $XFEL_DAEMON_INTERVAL_S (default 5 s) and then runs Dagster's own
daemon command line unchanged; `xfel-assets backfill` starts it when no daemon is running.

Dagster's daemon also replaces its code server every 60 s (RELOAD_WORKSPACE_INTERVAL), to pick up
edited code: a full load of the definitions each minute (5-10 s of CPU here, and a new process).
Ours reloads when our packages' source, the beamtime file or one of its workflow files changed
(checked every 5 s), and at least every WORKSPACE_RELOAD_S.

Two daemons on one home would launch every run twice: the daemon holds an exclusive lock on
``$DAGSTER_HOME/.xfel-daemon.lock`` (with its pid in it) for its lifetime, and a second one exits at
once, saying which daemon runs.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import sys
import threading
from pathlib import Path

import yaml

import dagster._daemon.controller as controller
import dagster._daemon.sensor as sensor_daemon
from dagster._daemon.cli import main as dagster_daemon_main

INTERVAL_ENV = "XFEL_DAEMON_INTERVAL_S"
#: Set to "backfill" by `xfel-assets backfill` for a daemon it starts: the last backfill using it stops it.
OWNER_ENV = "XFEL_DAEMON_OWNER"
DEFAULT_INTERVAL_S = 5
SENSOR_LOOP_S = 1
LOCK_NAME = ".xfel-daemon.lock"
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


def workspace_fingerprint(beamtime: str | None) -> str:
    """A hash of what the code location loads: our packages' source, the beamtime file and its workflow files."""
    from .launcher import source_fingerprint

    h = hashlib.sha1(source_fingerprint().encode())
    if beamtime:
        path = Path(beamtime)
        try:
            h.update(f"{path.stat().st_mtime_ns}".encode())
            data = yaml.safe_load(path.read_text()) or {}
        except (OSError, yaml.YAMLError) as e:  # the code location reports the file's problem itself
            h.update(repr(e).encode())
            data = {}
        workflows = data.get("workflows") if isinstance(data, dict) else None
        for w in workflows if isinstance(workflows, list) else []:
            try:
                h.update(f"{w}:{(path.parent / str(w)).stat().st_mtime_ns}".encode())
            except OSError:
                h.update(f"{w}:missing".encode())
    return h.hexdigest()


_dagster_freshness = controller.DagsterDaemonController.check_workspace_freshness


def check_workspace_freshness(self, last_workspace_update_time: float) -> float:
    """Dagster's workspace refresh, done only when the code location's files changed (or after WORKSPACE_RELOAD_S)."""
    fp = workspace_fingerprint(os.environ.get("XFEL_BEAMTIME"))
    if fp != getattr(self, "_xfel_fingerprint", fp):
        last_workspace_update_time = 0.0  # changed: reload now
    self._xfel_fingerprint = fp
    return _dagster_freshness(self, last_workspace_update_time)


def main() -> None:
    home = os.environ.get("DAGSTER_HOME")
    _lock = hold_lock(Path(home)) if home else None  # noqa: F841  (held until the process ends)
    controller.DEFAULT_DAEMON_INTERVAL_SECONDS = int(os.environ.get(INTERVAL_ENV) or DEFAULT_INTERVAL_S)
    sensor_daemon.MIN_INTERVAL_LOOP_TIME = SENSOR_LOOP_S
    controller.RELOAD_WORKSPACE_INTERVAL = WORKSPACE_RELOAD_S
    controller.DagsterDaemonController.check_workspace_freshness = check_workspace_freshness
    from .launcher import warm_up

    threading.Thread(target=warm_up, name="forkserver-warm-up", daemon=True).start()
    sys.argv[0] = "dagster-daemon"
    dagster_daemon_main()


if __name__ == "__main__":
    main()
