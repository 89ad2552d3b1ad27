"""A run launcher that forks each Dagster run from a warm process instead of starting a new interpreter.

Dagster's default launcher starts every run as a new `dagster api execute_run` process, which
imports Dagster, numpy, h5py, EXtra-data, xarray and our definitions again: 4-5 s per run here,
for steps that take well under a second on one module of a small run. A backfill of a beamtime is
thousands of such runs. This launcher keeps a forkserver that has imported all of that once
(``xfel_assets.runtime.preload``) and forks each run from it: the run itself is Dagster's own run worker
(`_execute_run_command_body`, as `dagster api execute_run` calls it), with its events, logs,
cancellation and failure handling unchanged.

When the source of xfel_core or xfel_assets changes, or a file of the beamtime's that the
definitions load (beamtime.yaml, its variables file and workflow files), the forkserver is
restarted before the next run, so runs always execute the code and configuration on disk (and
record their code versions).

Select it in dagster.yaml (``xfel-assets`` writes this into new Dagster homes)::

    run_launcher:
      module: xfel_assets.launcher
      class: ForkserverRunLauncher
"""

from __future__ import annotations

import hashlib
import multiprocessing
import multiprocessing.forkserver
import os
import signal
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import dagster as dg
import yaml
from dagster._core.launcher.base import CheckRunHealthResult, LaunchRunContext, RunLauncher, WorkerStatus
from dagster._serdes import ConfigurableClass
from dagster._serdes.config_class import ConfigurableClassData

from xfel_assets.runtime.liveness import death_message, worker_alive, worker_tags

PRELOAD = ["xfel_assets.runtime.preload"]
PACKAGES = [Path(__file__).resolve().parents[1], Path(__file__).resolve().parents[2] / "xfel_core"]  # xfel_assets, xfel_core


def source_fingerprint() -> str:
    """A hash of the paths and modification times of our packages' Python files."""
    h = hashlib.sha1()
    for pkg in PACKAGES:
        for p in sorted(pkg.rglob("*.py")):
            h.update(f"{p}:{p.stat().st_mtime_ns};".encode())
    return h.hexdigest()


def beamtime_files(beamtime: str | Path | None) -> list[Path]:
    """The files of a beamtime that the definitions load: beamtime.yaml, its variables file and its workflow files."""
    if not beamtime:
        return []
    path = Path(beamtime)
    files = [path]
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError):  # the code location reports the file's problem itself
        return files
    if not isinstance(data, dict):
        return files
    named = data.get("workflows") if isinstance(data.get("workflows"), list) else []
    if isinstance(data.get("variables"), str):
        named = [*named, data["variables"]]
    return files + [path.parent / str(f) for f in named]


def workspace_fingerprint(beamtime: str | Path | None) -> str:
    """A hash of what the code location loads: our packages' source and the beamtime's files (a missing one too)."""
    h = hashlib.sha1(source_fingerprint().encode())
    for f in beamtime_files(beamtime):
        try:
            h.update(f"{f}:{f.stat().st_mtime_ns}:{f.stat().st_size};".encode())
        except OSError:
            h.update(f"{f}:missing;".encode())
    return h.hexdigest()


def write_loaded_code(code_file: Path, fingerprint: str, beamtime: str | Path | None) -> None:
    """Say in ``code_file`` which files a process (the daemon) loaded: their fingerprint and the beamtime file."""
    tmp = code_file.with_name(code_file.name + ".tmp")
    tmp.write_text(f"{fingerprint} {Path(beamtime).resolve() if beamtime else ''}")
    tmp.replace(code_file)


def loaded_code(code_file: Path) -> tuple[str, str] | None:
    """(fingerprint, resolved beamtime file) as :func:`write_loaded_code` wrote them; None if nothing was."""
    try:
        fp, _, beamtime = code_file.read_text().partition(" ")
    except FileNotFoundError:
        return None
    return fp, beamtime


_server_lock = threading.Lock()
#: The fingerprint of the code and beamtime files that this process's forkserver imported (None: not started by us).
_server_fingerprint: str | None = None


def forkserver_context(preload: list[str]):
    """The forkserver context, (re)started with ``preload`` if our source or the beamtime's files changed since it started."""
    global _server_fingerprint
    with _server_lock:
        fp = workspace_fingerprint(os.environ.get("XFEL_BEAMTIME"))
        if fp != _server_fingerprint:
            server = multiprocessing.forkserver._forkserver
            server._stop()  # private since 3.8, the only way to restart it; the next fork starts a new one
            multiprocessing.set_forkserver_preload(preload)
            _server_fingerprint = fp
        return multiprocessing.get_context("forkserver")


def _nothing() -> None:
    pass


def warm_up(preload: list[str] = PRELOAD) -> None:
    """Start the forkserver and let it import ``preload`` now (the daemon does, at start), not at the first run:
    that import takes several seconds, which the first new run of a beamtime would otherwise wait."""
    proc = forkserver_context(preload).Process(target=_nothing)
    proc.start()
    proc.join()


def _run_worker(instance_ref, run_id: str) -> None:
    """Execute one run in this forked process, exactly as `dagster api execute_run` does."""
    from dagster._cli.api import _execute_run_command_body

    with dg.DagsterInstance.from_ref(instance_ref) as instance:
        instance.add_run_tags(run_id, worker_tags())  # run monitoring finds the run dead by them
        _execute_run_command_body(run_id, instance, write_stream_fn=lambda _event: None,
                                  set_exit_code_on_failure=False)


class ForkserverRunLauncher(RunLauncher, ConfigurableClass):
    """Launches each run in a process forked from a server with Dagster and our code already imported."""

    def __init__(self, inst_data: ConfigurableClassData | None = None, preload_modules: list[str] | None = None):
        self._inst_data = inst_data
        self._preload = list(preload_modules or PRELOAD)
        self._lock = threading.Lock()
        self._procs: dict[str, multiprocessing.Process] = {}
        super().__init__()

    @property
    def inst_data(self) -> ConfigurableClassData | None:
        return self._inst_data

    @classmethod
    def config_type(cls) -> dict:
        return {"preload_modules": dg.Field([str], is_required=False)}

    @classmethod
    def from_config_value(cls, inst_data: ConfigurableClassData, config_value: Mapping[str, Any]):
        return cls(inst_data=inst_data, preload_modules=config_value.get("preload_modules"))

    def launch_run(self, context: LaunchRunContext) -> None:
        run = context.dagster_run
        # Until its worker names itself: a run whose launching daemon dies first is found dead at once, not
        # after run monitoring's start timeout (the daemon started next sweeps them: runtime/daemon.py).
        self._instance.add_run_tags(run.run_id, worker_tags(role="launcher"))
        with self._lock:
            self._reap()
            proc = forkserver_context(self._preload).Process(target=_run_worker, args=(self._instance.get_ref(), run.run_id),
                                           name=f"dagster-run-{run.run_id[:8]}")
            proc.start()
            self._procs[run.run_id] = proc

    def _reap(self) -> None:
        for run_id, proc in list(self._procs.items()):
            if not proc.is_alive():
                proc.join()
                del self._procs[run_id]

    def terminate(self, run_id: str) -> bool:
        run = self._instance.get_run_by_id(run_id)
        proc = self._procs.get(run_id)
        if run is None or proc is None or not proc.is_alive():
            return False
        self._instance.report_run_canceling(run)
        os.kill(proc.pid, signal.SIGINT)  # Dagster's run worker turns SIGINT into a clean cancellation
        return True

    @property
    def supports_check_run_worker_health(self) -> bool:
        return True

    def check_run_worker_health(self, run: dg.DagsterRun) -> CheckRunHealthResult:
        """FAILED if the run's worker process is gone (whoever started it: this launcher or a command)."""
        proc = self._procs.get(run.run_id)
        alive = worker_alive(run.tags)
        if alive is False or (alive is None and proc is not None and not proc.is_alive()):
            return CheckRunHealthResult(WorkerStatus.FAILED, death_message(run))
        # Alive, or not ours to judge (another host's, or not yet tagged): never fail it on a guess.
        return CheckRunHealthResult(WorkerStatus.RUNNING)

    def join(self, timeout: int = 30) -> None:
        for proc in list(self._procs.values()):
            proc.join(timeout)

    def dispose(self) -> None:
        self.join()
