"""The documentation's commands are tests: every command in a ```bash block of README.md and of the documentation
site's pages (docs/, in the order of mkdocs.yml's navigation) runs as written, in order.

The blocks run in one bash session, in a copy of the project's top folder (its Makefile, pyproject.toml and
constraints.txt, with the installed .venv linked in), with neither $DAGSTER_HOME nor $XFEL_BEAMTIME set, as a
new user's shell has them. A command whose comment says it runs "in a second terminal" (``make ui``) is started
in the background, waited for at the URL its comment names, and kept running to the end: what follows runs
against the live UI. ``make test`` is the suite itself and is left out. An output block marked
``<!-- output of: CMD -->`` must match what CMD printed (paths shortened, seconds left out). The commands table's
flags must exist in each command's ``--help``.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

pytestmark = pytest.mark.daemon

REPO = Path(__file__).resolve().parents[1]


def site_pages() -> list[Path]:
    """The documentation site's pages in the order of its navigation (mkdocs.yml), the home page (the README) first."""
    import yaml

    def walk(entries) -> list[str]:
        out = []
        for e in entries:
            value = next(iter(e.values())) if isinstance(e, dict) else e
            out += walk(value) if isinstance(value, list) else [value]
        return out

    nav = walk(yaml.safe_load((REPO / "mkdocs.yml").read_text())["nav"])
    return [REPO / "README.md"] + [REPO / "docs" / page for page in nav if page != "index.md"]


DOCS = site_pages()
#: Commands the suite does not run, and why.
NOT_RUN = {"make test": "the test suite itself, which runs this"}
BACKGROUND = "# in a second terminal"


@dataclass
class Command:
    text: str  # as written (a heredoc with its lines)
    doc: str
    line: int
    background: bool = False

    @property
    def bare(self) -> str:
        """The command without its trailing comment (on its first line)."""
        first, _, rest = self.text.partition("\n")
        first = re.sub(r"\s+#\s.*$", "", first)
        return first + ("\n" + rest if rest else "")


def doc_commands(paths: list[Path] = DOCS) -> list[Command]:
    """Every command of every ```bash block, in the documents' order (a heredoc is one command with its lines)."""
    out = []
    for path in paths:
        lines = path.read_text().splitlines()
        i = 0
        while i < len(lines):
            if lines[i].strip() != "```bash":
                i += 1
                continue
            i += 1
            while i < len(lines) and lines[i].strip() != "```":
                line, start = lines[i], i + 1
                i += 1
                if not line.strip() or line.lstrip().startswith("#"):
                    continue
                here = re.search(r"<<\s*'?(\w+)'?", line)
                if here:
                    body = []
                    while i < len(lines) and lines[i] != here[1]:
                        body.append(lines[i])
                        i += 1
                    line = "\n".join([line, *body, lines[i]])
                    i += 1
                out.append(Command(line, path.name, start, BACKGROUND in line))
            i += 1
    return out


def documented_outputs(paths: list[Path] = DOCS) -> dict[str, list[str]]:
    """{command: the lines of the output block marked ``<!-- output of: command -->``}."""
    out = {}
    for path in paths:
        for m in re.finditer(r"<!-- output of: (.+?) -->\n```\n(.*?)\n```", path.read_text(), re.S):
            out[m[1]] = m[2].splitlines()
    return out


def normalised(line: str) -> str:
    """A printed line without what changes between runs and machines: paths cut to their file, seconds, spacing."""
    line = re.sub(r"\S*/(\S+)", r"\1", line)
    line = re.sub(r"\b\d+(\.\d+)? s\b", "# s", line)
    line = re.sub(r"-{3,}", "---", line)
    return " ".join(line.split())


def printed_as_documented(documented: list[str], printed: str) -> list[str]:
    """The documented lines that are not among the printed ones, in order (empty: it matches)."""
    lines = [normalised(x) for x in printed.splitlines()]
    missing, at = [], 0
    for want in (normalised(x) for x in documented if x.strip()):
        try:
            at = lines.index(want, at) + 1
        except ValueError:
            missing.append(want)
    return missing


def test_every_bash_block_is_found_with_its_heredocs():
    cmds = doc_commands()
    texts = [c.bare for c in cmds]
    assert texts[:2] == ["make demo", "make test"]
    assert any(c.background and c.bare == "make ui" for c in cmds)
    heredoc = next(t for t in texts if t.startswith("cat >> demo/beamtime/variables.py"))
    assert heredoc.endswith("\nEND") and "def delay_span_twice(delay_span):" in heredoc


def test_the_commands_table_names_only_flags_the_commands_have():
    """The documentation's table of commands (their syntax, not run) against each command's --help."""
    cli = str(Path(sys.executable).parent / "xfel-assets")
    rows = [r for page in DOCS for r in re.findall(r"^\| `xfel-assets ([\w-]+)([^`]*)`", page.read_text(), re.M)]
    assert len(rows) > 10
    for command, syntax in rows:
        helped = subprocess.run([cli, command, "--help"], capture_output=True, text=True, timeout=120)
        assert helped.returncode == 0, (command, helped.stderr)
        for flag in re.findall(r"--[\w-]+", syntax):
            assert flag in helped.stdout, f"the commands table: xfel-assets {command} has no {flag}"


def wait_for_url(url: str, timeout_s: float = 240) -> None:
    """Return once ``url`` answers (a web server started in the background), or after timeout_s."""
    deadline = time.monotonic() + timeout_s
    while not _answers(url) and time.monotonic() < deadline:
        time.sleep(1)


def _answers(url: str) -> bool:
    """Whether a web server answers at ``url`` (Dagster's at /server_info; any answer of another server counts)."""
    try:
        urllib.request.urlopen(url + "/server_info", timeout=2)
        return True
    except urllib.error.HTTPError:
        return True
    except OSError:
        return False


def test_the_readme_runs_as_written_with_one_ui_kept_running(tmp_path):
    work = tmp_path / "xfel-assets"
    work.mkdir()
    for name in ("Makefile", "pyproject.toml", "constraints.txt", "README.md", "mkdocs.yml"):
        shutil.copy2(REPO / name, work / name)  # the modification times too: make sees the install current
    shutil.copytree(REPO / "docs", work / "docs")
    (work / ".venv").symlink_to(REPO / ".venv")
    assert not _answers("http://127.0.0.1:3000"), "port 3000 is taken: `make ui` in the README needs it"
    assert not _answers("http://127.0.0.1:8000"), "port 8000 is taken: `make docs` in the README needs it"
    env = {k: v for k, v in os.environ.items() if k not in ("DAGSTER_HOME", "XFEL_BEAMTIME", "VIRTUAL_ENV")}
    env["PATH"] = ":".join(p for p in env["PATH"].split(":") if not p.startswith(str(REPO / ".venv")))
    logs = tmp_path / "logs"
    logs.mkdir()

    # One bash session: each command as written between markers; background ones into logs of their own.
    script, cmds = ["cd " + str(work)], [c for c in doc_commands() if c.bare not in NOT_RUN]
    for i, c in enumerate(cmds):
        script.append(f"echo \"@@@ {i} start\"; echo \"@@@ {i} at $EPOCHREALTIME\"")
        if c.background:
            script.append(f"( {c.bare} ) > {logs}/bg{i}.log 2>&1 &")
            url = re.search(r"https?://[\w.:]+", c.text)
            if url:
                script.append(f"{sys.executable} {__file__} wait-for {url[0]}")
        else:
            script.append(c.bare)
        script.append(f"echo \"@@@ {i} rc $?\"")
    proc = subprocess.Popen(["bash", "-c", "\n".join(script)], cwd=work, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=1500)
    finally:
        try:
            os.killpg(proc.pid, signal.SIGTERM)  # the background `make ui` and what it started
        except ProcessLookupError:
            pass
        time.sleep(2)
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    started = {int(i): float(t) for i, t in re.findall(r"@@@ (\d+) at ([\d.]+)\n", out)}
    out = re.sub(r"@@@ \d+ at [\d.]+\n", "", out)
    printed = dict(re.findall(r"@@@ (\d+) start\n(.*?)@@@ \1 rc", out, re.S))
    codes = dict(re.findall(r"@@@ (\d+) rc (\d+)", out))
    ends = sorted(started.items()) + [(len(cmds), time.time())]
    for (i, t0), (_, t1) in zip(ends, ends[1:]):  # shown with -s, and with a failure
        print(f"{t1 - t0:7.1f} s  {cmds[i].doc}:{cmds[i].line}  {cmds[i].bare.splitlines()[0]}")
    failures = [f"{c.doc}:{c.line}: `{c.bare}` exit {codes.get(str(i), 'none (not reached)')}:\n"
                f"{printed.get(str(i), '')[-3000:]}" for i, c in enumerate(cmds) if codes.get(str(i)) != "0"]
    assert not failures, "\n\n".join(failures) + "\n\nbackground logs:\n" + "\n".join(
        p.read_text()[-3000:] for p in logs.iterdir())

    by_command = {c.bare: printed[str(i)] for i, c in enumerate(cmds)}
    for command, documented in documented_outputs().items():
        missing = printed_as_documented(documented, by_command[command])
        assert not missing, f"the documented output of `{command}` is not what it prints now; not printed:\n" + \
            "\n".join(missing) + f"\n\nprinted:\n{by_command[command]}"

    ui = next(p for p in logs.iterdir()).read_text()
    assert "beamtime.yaml changed: code location reloaded" in ui, ui[-3000:]
    assert "variables.py changed: code location reloaded" in ui, ui[-3000:]
    backfills = [printed[str(i)] for i, c in enumerate(cmds) if c.bare == "xfel-assets backfill --stale-only"]
    assert "input changed: dark" in backfills[0] and "dark 4" in backfills[0], backfills[0]
    assert "delay_span_twice 3" in backfills[1], backfills[1]
    runs = by_command["xfel-assets runs"]
    assert "Twice the delay range" in runs and "sample B, 50 % transmission" in runs, runs


if __name__ == "__main__" and sys.argv[1:2] == ["wait-for"]:  # the session's wait for a background web server
    wait_for_url(sys.argv[2])
