"""The daemon a command relies on: is one alive on the home, start ours (one per home), watch it, stop it when its last user ends."""

from __future__ import annotations

import fcntl
import os
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import dagster as dg

from xfel_assets.runtime import daemon as daemon_mod


def daemon_running(instance: dg.DagsterInstance, interval_s: float = 30) -> bool:
    """Whether a Dagster daemon with a backfill loop is alive on this instance.

    Daemons send a heartbeat every 30 s and leave the last one behind when they stop, so a recent
    heartbeat is confirmed by waiting for the next one. (A daemon started seconds ago that has not
    sent its first heartbeat is not seen: two daemons on one instance launch every run twice.)
    """
    def last() -> float | None:
        hb = instance.get_daemon_heartbeats().get("BACKFILL")
        return None if hb is None else hb.timestamp

    seen = last()
    if seen is None or time.time() - seen > interval_s + 15:
        return False
    deadline = time.monotonic() + interval_s + 10
    while time.monotonic() < deadline:
        time.sleep(1)
        now = last()
        if now is not None and now > seen:
            return True
    return False


def daemon_command(workspace_file: Path) -> list[str]:
    """The Dagster daemon with our shorter loop interval (xfel_assets/runtime/daemon.py)."""
    return [sys.executable, "-m", "xfel_assets.daemon", "run", "-w", str(workspace_file)]


class DaemonDied(RuntimeError):
    """The daemon that executes the backfill has ended while the backfill is not finished."""


@dataclass
class DaemonWatch:
    """The daemon a backfill relies on: ours (by its lock on the home) or a foreign one (by its heartbeats)."""

    instance: dg.DagsterInstance
    home: Path
    log_path: Path | None
    xfel_pid: int | None  # None: a foreign daemon (dagster dev), watched by its heartbeats

    def check(self) -> None:
        """Raise DaemonDied if the daemon is gone."""
        if self.xfel_pid is not None:
            if daemon_mod.running_daemon(self.home) is None:
                where = f"; its log: {self.log_path}" if self.log_path else ""
                raise DaemonDied(f"the Dagster daemon (pid {self.xfel_pid}) that executes this backfill has "
                                 f"ended{where}")
            return
        hb = self.instance.get_daemon_heartbeats().get("BACKFILL")
        if hb is None or time.time() - hb.timestamp > FOREIGN_DAEMON_SILENT_S:
            raise DaemonDied(f"the Dagster daemon that executes this backfill has sent no heartbeat for "
                             f"{FOREIGN_DAEMON_SILENT_S} s: it has stopped")


#: A foreign daemon (heartbeats every 30 s) silent for this long is taken as stopped.
FOREIGN_DAEMON_SILENT_S = 180


@contextmanager
def flocked(path: Path, mode: int):
    """The file at ``path`` locked with flock ``mode`` for the duration."""
    with open(path, "a+") as f:
        fcntl.flock(f, mode)
        try:
            yield f
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


@contextmanager
def daemon_if_needed(instance: dg.DagsterInstance, workspace_file: Path, log_path: Path, say=print):
    """The home's daemon for the duration: the one running, else one started here (one per home).

    Each backfill holds a shared lock on the home's daemon users' file while it runs; the last one
    to end stops a daemon that a backfill started. Starting is serialised, so two backfills
    starting together share one daemon.
    """
    home = log_path.parent
    users = open(home / daemon_mod.USERS_LOCK, "a+")
    fcntl.flock(users, fcntl.LOCK_SH)
    try:
        with flocked(home / daemon_mod.START_LOCK, fcntl.LOCK_EX):
            ours = daemon_mod.running_daemon(home)
            if ours is None and daemon_running(instance):
                say("using the running Dagster daemon")
                watch = DaemonWatch(instance, home, None, None)
            else:
                if ours is None:
                    say(f"starting a Dagster daemon for this backfill (log: {log_path})")
                    ours = (_start_daemon(workspace_file, log_path, home), "backfill")
                else:
                    say(f"using the running Dagster daemon (pid {ours[0]})")
                    wait_for_edits(home, say)
                watch = DaemonWatch(instance, home, log_path, ours[0])
        yield watch
    finally:
        fcntl.flock(users, fcntl.LOCK_UN)
        with flocked(home / daemon_mod.START_LOCK, fcntl.LOCK_EX):
            try:
                fcntl.flock(users, fcntl.LOCK_EX | fcntl.LOCK_NB)  # taken only if no other backfill uses it
            except BlockingIOError:
                pass
            else:
                running = daemon_mod.running_daemon(home)
                if running is not None and running[1] == "backfill":
                    _stop_daemon(running[0], home)
                    # A stopped daemon leaves its last heartbeats behind: the next backfill would wait
                    # 40 s to find that nobody sends another one.
                    instance.wipe_daemon_heartbeats()
            users.close()


def wait_for_edits(home: Path, say=print, timeout_s: float = 120) -> bool:
    """Wait until our running daemon has loaded the code and beamtime files as they are now (True), at most
    ``timeout_s``: it evaluates asset backfills against its own code location, where a variable added
    a moment ago is not yet (the backfill would fail)."""
    from xfel_assets.runtime.launcher import loaded_code, workspace_fingerprint

    beamtime = os.environ.get("XFEL_BEAMTIME") or ""
    resolved = str(Path(beamtime).resolve()) if beamtime else ""
    deadline, said = time.monotonic() + timeout_s, False
    while True:
        loaded = loaded_code(home / daemon_mod.CODE_FILE)
        # None: a daemon starting, which loads the files as they are now (or one not writing it: not ours).
        if loaded is None or loaded[1] != resolved or loaded[0] == workspace_fingerprint(beamtime):
            return True
        if time.monotonic() > deadline:
            say(f"the Dagster daemon has not loaded the edited files after {timeout_s:.0f} s; launching anyway")
            return False
        if not said:
            say("waiting for the Dagster daemon to load the edited code and beamtime files")
            said = True
        time.sleep(0.5)


def _start_daemon(workspace_file: Path, log_path: Path, home: Path, timeout_s: float = 120) -> int:
    """Start our daemon in its own session; returns its pid once it holds the home's daemon lock."""
    env = dict(os.environ, DAGSTER_HOME=str(home), **{daemon_mod.OWNER_ENV: "backfill"})
    with open(log_path, "a") as log:
        proc = subprocess.Popen(daemon_command(workspace_file), stdout=log, stderr=subprocess.STDOUT,
                                env=env, start_new_session=True)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        running = daemon_mod.running_daemon(home)
        if running is not None and running[0] == proc.pid:
            return proc.pid
        if proc.poll() is not None:
            raise DaemonDied(f"the Dagster daemon ended at its start (exit status {proc.returncode}); its log: "
                             f"{log_path}:\n{log_path.read_text()[-2000:]}")
        time.sleep(0.1)
    stop_process_group(proc)
    raise DaemonDied(f"the Dagster daemon did not start within {timeout_s:.0f} s; its log: {log_path}")


def _stop_daemon(pid: int, home: Path, timeout_s: float = 60) -> None:
    """SIGTERM the daemon's process group (it has its own session); SIGKILL if its lock is still held after timeout_s."""
    for sig, wait_s in ((signal.SIGTERM, timeout_s), (signal.SIGKILL, 10)):
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline and daemon_mod.running_daemon(home) is not None:
            time.sleep(0.2)
        if daemon_mod.running_daemon(home) is None:
            try:
                os.waitpid(pid, 0)  # our child if we started it: reap it
            except ChildProcessError:
                pass
            return


def stop_process_group(proc: subprocess.Popen, timeout_s: float = 60) -> None:
    """SIGTERM a process started in its own session and everything it started; SIGKILL if it lingers."""
    if proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
