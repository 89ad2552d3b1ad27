"""`xfel-assets ui`: the Dagster web server and our daemon on one home, following edits, ending with the command.

One `xfel-assets ui` runs for the days of a beamtime. Around the two Dagster processes it:

- ties them to this command: each gets SIGTERM from the kernel when the command ends, SIGKILL included
  (``PR_SET_PDEATHSIG``), so a killed command leaves nothing serving;
- starts a daemon again when the one it relied on has ended (its own, killed; or another command's);
- watches the files the definitions load (our source, beamtime.yaml, its variables and workflow files)
  and, when one changed, reloads the web server's code location and says so, with the error if the
  new files do not load (the daemon reloads its own within one of its rounds, and each new run is
  forked from code that imported the files on disk: :mod:`xfel_assets.runtime.launcher`);
- refuses a non-loopback address unless told that serving without a login is intended.
"""

from __future__ import annotations

import ctypes
import ipaddress
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from xfel_core.exceptions import ConfigError

LOCATION = "xfel_assets"
#: Seconds between two looks at the processes and the files.
POLL_S = 1.0

RELOAD = """
mutation Reload($name: String!) {
  reloadRepositoryLocation(repositoryLocationName: $name) {
    __typename
    ... on WorkspaceLocationEntry { locationOrLoadError { __typename ... on PythonError { message } } }
    ... on PythonError { message }
  }
}"""


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM when the process that started it ends (Linux's PR_SET_PDEATHSIG)."""
    PR_SET_PDEATHSIG = 1
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def loopback(host: str) -> bool:
    """Whether ``host`` names only this machine (127.0.0.0/8, ::1, localhost)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def reload_location(base_url: str, timeout_s: float = 120) -> str | None:
    """Reload the web server's code location; None if it loaded, else why not."""
    req = urllib.request.Request(base_url + "/graphql", headers={"Content-Type": "application/json"},
                                 data=json.dumps({"query": RELOAD, "variables": {"name": LOCATION}}).encode())
    try:
        with urllib.request.urlopen(req, timeout=timeout_s) as resp:
            body = json.loads(resp.read())
    except OSError as e:
        return f"the web server did not answer: {e}"
    if body.get("errors"):
        return str(body["errors"])
    out = body["data"]["reloadRepositoryLocation"]
    entry = out.get("locationOrLoadError") or out
    return entry.get("message") or (None if entry["__typename"] in ("RepositoryLocation", "WorkspaceLocationEntry")
                                    else entry["__typename"])


def beamtime_problem(path: Path) -> str | None:
    """What is wrong with the beamtime's files as the definitions load them (None: nothing)."""
    from xfel_core.config import load_beamtime
    from xfel_core.exceptions import XfelError
    from xfel_core.lineage import model
    from xfel_core.workflows import variables as declared

    try:
        model.load_files(load_beamtime(path))  # the workflow files, then the variables file (as the definitions do)
    except (XfelError, OSError) as e:
        return str(e)
    error = declared.load_error()
    return None if error is None else f"{error}: its variables are left out until it is fixed"


def serve(home: Path, host: str, port: int, allow_remote: bool = False, say=None) -> int:
    """Run the web server and (unless one runs) the daemon until Ctrl-C, SIGTERM or one of them ends."""
    from xfel_assets.runtime.daemon import running_daemon
    from xfel_assets.runtime.daemon_control import daemon_command
    from xfel_assets.runtime.launcher import beamtime_files, workspace_fingerprint

    say = say or (lambda msg: print(f"xfel-assets ui: {msg}", file=sys.stderr, flush=True))
    if not loopback(host) and not allow_remote:
        raise ConfigError(
            f"--host {host} would let anyone who reaches this machine launch, cancel and delete runs: Dagster's UI "
            "has no login. Keep it on 127.0.0.1 and reach it through an SSH tunnel (ssh -L 3000:127.0.0.1:3000 "
            "beamline-host) or behind an authenticating reverse proxy on this machine; --no-login-ok serves on "
            f"{host} anyway")
    beamtime = os.environ.get("XFEL_BEAMTIME")
    workspace = home / "workspace.yaml"
    webserver = shutil.which("dagster-webserver", path=str(Path(sys.executable).parent)) or "dagster-webserver"
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    base = f"http://{'127.0.0.1' if not loopback(host) else host}:{port}"

    def start(cmd: list[str]) -> subprocess.Popen:
        return subprocess.Popen(cmd, preexec_fn=_die_with_parent)

    procs = {"web server": start([webserver, "-h", host, "-p", str(port), "-w", str(workspace)])}

    def take_daemon() -> None:
        held = running_daemon(home)
        if held:
            say(f"the Dagster daemon of {home} already runs (pid {held[0]}); using it")
        else:
            procs["daemon"] = start(daemon_command(workspace))

    take_daemon()
    if not loopback(host):
        say(f"serving on {host} without a login (--no-login-ok)")
    say(f"{base} (Dagster home {home}); Ctrl-C stops it")
    fingerprint = workspace_fingerprint(beamtime)
    stamps = {f: _mtime(f) for f in beamtime_files(beamtime)}
    try:
        while True:
            for name, p in list(procs.items()):
                if p.poll() is None:
                    continue
                if name == "daemon":  # killed (OOM, an admin), or another command's daemon took the home first
                    del procs[name]
                    held = running_daemon(home)
                    say(f"the Dagster daemon ended (exit status {p.returncode}); "
                        + (f"using the one another command started (pid {held[0]})" if held else "starting another"))
                    if not held:
                        take_daemon()
                    continue
                say(f"the {name} ended (exit status {p.returncode}); stopping")
                return p.returncode or 1
            if "daemon" not in procs and running_daemon(home) is None:
                say("the Dagster daemon this UI used has ended; starting one")
                take_daemon()
            now = workspace_fingerprint(beamtime)
            if now != fingerprint:
                fingerprint = now
                new = {f: _mtime(f) for f in beamtime_files(beamtime)}
                changed = [str(f) for f in new if new[f] != stamps.get(f)] or ["the xfel-assets source"]
                stamps = new
                problem = beamtime_problem(Path(beamtime)) if beamtime else None
                failed = reload_location(base)
                if problem or failed:
                    say(f"{', '.join(changed)} changed; NOT taken as it is: {problem or failed}")
                else:
                    say(f"{', '.join(changed)} changed: code location reloaded; new runs use it, and what the "
                        "old files made is stale (xfel-assets stale; xfel-assets backfill --stale-only redoes it)")
            time.sleep(POLL_S)
    except KeyboardInterrupt:
        return 0
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.terminate()
        for p in procs.values():
            try:
                p.wait(timeout=60)
            except subprocess.TimeoutExpired:
                p.kill()


def _mtime(path: Path) -> int | None:
    try:
        return path.stat().st_mtime_ns
    except OSError:
        return None
