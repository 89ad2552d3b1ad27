"""One `xfel-assets ui` kept running while things happen to it, as at a beamline: nothing is restarted between steps.

The module starts `xfel-assets ui` (web server and daemon) on a small demo beamtime and leaves it up; the tests, in
order: a syntax error in variables.py is said in its terminal, and the mended file taken; its daemon, killed, is
started again; a second UI on the home takes over the daemon when the first ends; `kill -9` of a UI leaves nothing
of it serving. (Runs arriving, variables edited and recomputed, a new dark: benchmarks/soak_beamtime.py, run by
tests/test_soak.py, and the README's commands, tests/test_docs_commands.py.)
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from xfel_core.demo.beamtime import write_demo_beamtime

from test_docs_commands import _answers as answers

from xfel_assets.cli.home import ensure_dagster_home
from xfel_assets.runtime.daemon import CODE_FILE, running_daemon
from xfel_assets.runtime.launcher import loaded_code, workspace_fingerprint
from xfel_assets.runtime.daemon_control import stop_process_group

pytestmark = pytest.mark.daemon

CLI = str(Path(sys.executable).parent / "xfel-assets")
TIMEOUT_S = 240


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(what: str, ok, timeout_s: float = TIMEOUT_S, log: Path | None = None, every_s: float = 1.0):
    """Poll ``ok()`` until it returns something true; fail naming ``what`` (and the log's tail) after timeout_s."""
    deadline = time.monotonic() + timeout_s
    while True:
        got = ok()
        if got:
            return got
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not within {timeout_s} s" + (f"\n{log.read_text()[-4000:]}" if log else ""))
        time.sleep(every_s)



def start_ui(config: Path, home: Path, log: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = dict(os.environ, DAGSTER_HOME=str(home), XFEL_BEAMTIME=str(config))
    with open(log, "a") as f:
        proc = subprocess.Popen([CLI, "ui", "--port", str(port)], env=env, stdout=f, stderr=subprocess.STDOUT,
                                start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    wait_for("the web server answers", lambda: answers(url) or proc.poll() is not None, log=log)
    assert proc.poll() is None, log.read_text()[-3000:]
    return proc, url


def cli(config: Path, home: Path, *args: str, timeout: float = 900) -> subprocess.CompletedProcess:
    """A command exactly as the README writes it: the beamtime and home from the environment."""
    env = dict(os.environ, DAGSTER_HOME=str(home), XFEL_BEAMTIME=str(config))
    out = subprocess.run([CLI, *args], env=env, capture_output=True, text=True, timeout=timeout)
    print(out.stdout[-3000:], out.stderr[-3000:])
    return out


def asset_description(url: str, asset: str) -> str:
    """An asset's description as the web server's GraphQL API gives it to the UI."""
    from xfel_assets.runtime.graphql import GraphQL

    nodes = GraphQL(None, None, url)("query($k: [AssetKeyInput!]) { assetNodes(assetKeys: $k) { description } }",
                                     {"k": [{"path": [asset]}]})["assetNodes"]
    return (nodes[0]["description"] or "") if nodes else ""


@pytest.fixture(scope="module")
def beamtime(tmp_path_factory):
    """(config, home, ui log, ui process, url): `xfel-assets ui` running on a small demo beamtime."""
    root = tmp_path_factory.mktemp("live")
    # Only the dark run: the sensors have nothing to process (the soak and the README's commands test that).
    config = write_demo_beamtime(root / "beamtime", runs=0, trains=12, frames=4, modules=2, module_shape=(16, 32),
                                 insitu=False)
    data = yaml.safe_load(config.read_text())
    data.setdefault("completeness", {})["settle_seconds"] = 2
    data["completeness"]["refresh_interval_s"] = 5
    data["completeness"]["content_wait_seconds"] = 3  # the demo's modules lack a train each, on purpose
    config.write_text(yaml.safe_dump(data, sort_keys=False))
    home = ensure_dagster_home(root / "home", max_runs=2)
    log = root / "ui.log"
    proc, url = start_ui(config, home, log)
    try:
        yield config, home, log, proc, url
    finally:
        stop_process_group(proc)


def test_a_syntax_error_in_variables_is_said_in_the_terminal(beamtime):
    config, home, log, proc, url = beamtime
    path = config.parent / "variables.py"
    good = path.read_text()
    path.write_text(good + "\n@variable()\ndef oops(run:\n")
    wait_for("the UI says the variables file does not load", lambda: "NOT taken as it is" in log.read_text()
             and "SyntaxError" in log.read_text(), timeout_s=60, log=log)
    # ... and its web UI: the run table's asset says so (its description), as the reloaded code location has it.
    wait_for("the web UI shows the error on the run table", lambda: "variables file does not load now"
             in asset_description(url, "run_table") and "SyntaxError" in asset_description(url, "run_table"),
             timeout_s=60, log=log)
    path.write_text(good)
    wait_for("the UI takes the mended file", lambda: "variables.py changed: code location reloaded" in log.read_text(),
             timeout_s=60, log=log)
    wait_for("the web UI no longer shows an error", lambda: "does not load" not in asset_description(url, "run_table"),
             timeout_s=60, log=log)
    # The daemon says which files its code location was loaded from: a backfill launched now waits for it.
    wait_for("the daemon has loaded the mended file",
             lambda: loaded_code(home / CODE_FILE) == (workspace_fingerprint(config), str(config.resolve())),
             timeout_s=60, log=log)


def test_a_killed_daemon_is_started_again_by_the_ui(beamtime):
    config, home, log, proc, url = beamtime
    pid, _ = running_daemon(home)
    os.kill(pid, signal.SIGKILL)  # the OOM killer, an admin
    wait_for("the UI starts another daemon", lambda: (running_daemon(home) or (pid,))[0] != pid, timeout_s=120, log=log)
    assert "the Dagster daemon ended (exit status -9); starting another" in log.read_text()
    assert proc.poll() is None and answers(url)


def test_a_second_ui_takes_over_the_daemon_and_kill_9_leaves_nothing_serving(beamtime, tmp_path):
    config, home, log, proc, url = beamtime
    first_daemon = running_daemon(home)
    assert first_daemon is not None
    second_log = tmp_path / "second-ui.log"
    second, second_url = start_ui(config, home, second_log)
    try:
        wait_for("the second UI uses the first's daemon", lambda: "already runs" in second_log.read_text(),
                 timeout_s=30, log=second_log)
        os.kill(proc.pid, signal.SIGKILL)  # the command alone, not its process group
        wait_for("the first UI's web server ends with it", lambda: not answers(url), timeout_s=60, log=log)
        wait_for("the second UI starts a daemon of its own",
                 lambda: (running_daemon(home) or (None,))[0] not in (None, first_daemon[0]), timeout_s=120,
                 log=second_log)
        assert "has ended; starting one" in second_log.read_text()
        assert answers(second_url)
    finally:
        os.kill(second.pid, signal.SIGKILL)
    wait_for("the second UI's web server and daemon end with it",
             lambda: not answers(second_url) and running_daemon(home) is None, timeout_s=90, log=second_log)


def test_the_daemon_a_killed_backfill_started_ends_by_itself(tmp_path):
    """`kill -9` of a `backfill` client left the daemon it had started (850 MB) idling for ever."""
    config = write_demo_beamtime(tmp_path / "bt", runs=1, trains=8, frames=4, modules=1, module_shape=(16, 32),
                                 insitu=False, variables=False)
    home = ensure_dagster_home(tmp_path / "home", max_runs=1)
    env = dict(os.environ, DAGSTER_HOME=str(home), XFEL_BEAMTIME=str(config))
    log = tmp_path / "backfill.log"
    with open(log, "w") as f:
        client = subprocess.Popen([CLI, "backfill"], env=env, stdout=f, stderr=subprocess.STDOUT)
    try:
        started = wait_for("the backfill's daemon runs", lambda: running_daemon(home), timeout_s=120, log=log,
                           every_s=0.2)
        assert started[1] == "backfill"
        client.kill()
        client.wait()
        wait_for("the orphaned daemon ends", lambda: running_daemon(home) is None, timeout_s=90,
                 log=home / "daemon.log")
        assert "no backfill uses this daemon any more" in (home / "daemon.log").read_text()
    finally:
        if client.poll() is None:
            client.kill()
