"""A beamtime run live: the failures seen while one `xfel-assets ui` ran for days, each pinned by a test."""

from __future__ import annotations

import pytest

from xfel_core.lineage.model import Scope


@pytest.mark.parametrize("stale_only", [False, True])
@pytest.mark.parametrize("scope", [
    Scope(runs=["r0002", "r0003", "r0004"], event_runs=["r0002", "r0003"], samples=["GaN01"]),  # the demo's
    Scope(runs=[f"r{n:04d}" for n in range(2, 400, 3)], event_runs=[f"r{n:04d}" for n in range(2, 400, 7)],
          samples=[f"sample_with_a_long_name_{i}" for i in range(40)]),
])
def test_the_backfill_title_is_one_dagster_accepts(scope, stale_only):
    """The README's `backfill --stale-only` on the demo was refused: its title had 102 characters (Dagster: 100)."""
    from dagster._core.definitions.utils import is_valid_title_and_reason

    from xfel_assets.cli import backfill as bf  # (not at collection: it would load the definitions for every test)
    from xfel_assets.cli.main import _counted, _covered

    title = bf.backfill_title(stale_only, _covered(scope), _counted(scope))
    assert is_valid_title_and_reason(title) == (True, None), title
    assert title.startswith("xfel-assets backfill" + (" --stale-only" if stale_only else ""))
    assert "3 runs" in title or "133 runs" in title


def _taken_run(tmp_path):
    """A run with several sequence files per module, its raw_run, scan_variable and framemask made."""
    from conftest import make_beamtime, small_run

    from xfel_core.config import load_beamtime
    from xfel_core.euxfel import pipeline

    cfg = load_beamtime(make_beamtime(tmp_path / "bt", [small_run(2, trains_per_sequence=4)]))
    for make in (pipeline.make_raw_run, pipeline.make_scan_variable, pipeline.make_framemask):
        make(cfg, "r0002")
    return cfg, pipeline


def test_a_raw_file_deleted_after_the_run_was_taken_fails_the_module_step_naming_it(tmp_path):
    """Seen: a sequence file deleted after the run was taken gave half a run (3,777 of 7,466 frames), every check
    passed, `materialize` printed ok."""
    from xfel_core.exceptions import RunDataError

    cfg, pipeline = _taken_run(tmp_path)
    files = pipeline.module_files(cfg, "r0002", 0)
    assert len(files) > 2
    files[1].unlink()
    with pytest.raises(RunDataError, match=rf"module 00: its raw files are not those the run was taken with .*"
                                           rf"{files[1].name} deleted"):
        pipeline.make_preprocessed_module(cfg, "r0002", 0)
    assert not cfg.output_path("r0002", "preprocessed_module", 0).exists()
    pipeline.make_preprocessed_module(cfg, "r0002", 1)  # the other module's files are as taken


def test_a_raw_file_changed_while_the_module_step_reads_fails_it_naming_the_file(tmp_path, monkeypatch):
    from xfel_core.exceptions import RawFileChangedError

    cfg, pipeline = _taken_run(tmp_path)
    last = pipeline.module_files(cfg, "r0002", 1)[-1]
    reduce_frames = pipeline.reduce_frames

    def reduce_then_delete(*args, **kw):  # the file goes while the kernel is on the run
        out = reduce_frames(*args, **kw)
        last.unlink()
        return out

    monkeypatch.setattr(pipeline, "reduce_frames", reduce_then_delete)
    with pytest.raises(RawFileChangedError, match=rf"module 01 \(in .*\): its raw files changed while they were read "
                                                  rf"\({last.name} deleted"):
        pipeline.make_preprocessed_module(cfg, "r0002", 1)
    assert not cfg.output_path("r0002", "preprocessed_module", 1).exists()


def test_materialize_says_which_checks_failed_and_exits_1(tmp_path):
    """Seen: a module lacking a middle sequence file was flagged by modules_cover_run, `materialize` printed ok, exit 0."""
    import os
    import re
    import subprocess
    import sys
    from pathlib import Path

    from conftest import make_beamtime, small_run

    config = make_beamtime(tmp_path / "bt", [small_run(2, ntrains=15, trains_per_sequence=5), small_run(3)])
    sorted((tmp_path / "bt" / "raw" / "r0002").glob("RAW-R0002-DSSC00-S*.h5"))[1].unlink()
    env = dict(os.environ, DAGSTER_HOME=str(tmp_path / "home"), XFEL_BEAMTIME=str(config))
    (tmp_path / "home").mkdir()
    out = subprocess.run([str(Path(sys.executable).parent / "xfel-assets"), "materialize"], env=env,
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 1, out.stdout + out.stderr
    assert re.search(r"^CHECK\s+r0002", out.stdout, re.M) and re.search(r"^ok\s+r0003", out.stdout, re.M), out.stdout
    assert re.search(r"r0002: raw_run modules_cover_run failed: .*module 00 lacks sequence file\(s\) S00001", out.stdout)


def test_files_of_another_run_in_a_run_folder_are_refused_naming_them(tmp_path):
    """Seen: RAW-R0003-* files in r0008/ were processed as r0008 without a word."""
    import shutil

    from conftest import make_beamtime, small_run

    from xfel_core.completeness import run_completeness
    from xfel_core.config import load_beamtime
    from xfel_core.euxfel import pipeline
    from xfel_core.exceptions import RunDataError

    cfg = load_beamtime(make_beamtime(tmp_path / "bt", [small_run(3)]))
    shutil.copytree(cfg.run_dir("r0003"), cfg.raw_root / "r0008")
    why = run_completeness(cfg, "r0008", now=1e12)
    assert why is not None and "RAW-R0003-DA01-S00000.h5" in why and "not to r0008" in why, why
    with pytest.raises(RunDataError, match=r"r0008: RAW-R0003-.* belong to another run .* not to r0008"):
        pipeline.make_raw_run(cfg, "r0008")
    assert run_completeness(cfg, "r0003", now=1e12) is None


LIMITED_VARIABLES = '''
import os
import signal
import time

import numpy as np

from xfel_core.variables import variable


@variable(title="Hangs")
def hangs(run_key):
    time.sleep(3600)


@variable(title="Allocates 2 GiB")
def hog(run_key):
    return float(np.ones(2**28).sum())


@variable(title="Killed")
def killed(run_key):
    os.kill(os.getpid(), signal.SIGKILL)


@variable(title="Fine", units="ADU")
def fine(binned_cube):
    return float(binned_cube["count"].sum())
'''


def test_a_hanging_or_greedy_variable_fails_alone_named_and_materialize_ends(tmp_path):
    """Seen: a variable that hangs hung `materialize` for ever, printing nothing; one killed for memory took the
    run's other variables down, naming none."""
    import os
    import re
    import subprocess
    import sys
    import time
    from pathlib import Path

    import yaml
    from conftest import make_beamtime, small_run

    from xfel_core.config import load_beamtime
    from xfel_core.lineage import model
    from xfel_core.variables import read_value
    from xfel_core.workflows import variables as declared

    path = make_beamtime(tmp_path / "bt", [small_run(2)])
    (tmp_path / "bt" / "variables.py").write_text(LIMITED_VARIABLES)
    data = yaml.safe_load(path.read_text())
    data.update(variables="variables.py", execution={"variable_timeout_s": 5, "variable_memory_gb": 0.5})
    path.write_text(yaml.safe_dump(data))
    (tmp_path / "home").mkdir()
    env = dict(os.environ, DAGSTER_HOME=str(tmp_path / "home"), XFEL_BEAMTIME=str(path))
    t0 = time.monotonic()
    out = subprocess.run([str(Path(sys.executable).parent / "xfel-assets"), "materialize"], env=env,
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 1 and time.monotonic() - t0 < 300, out.stdout + out.stderr
    text = out.stdout
    assert re.search(r"hangs: (xfel_core\.limits\.)?LimitError: variable hangs \(.*variables\.py:\d+\) of r0002: no result after 5 s: "
                     r"killed \(the limit is execution\.variable_timeout_s", text), text
    assert re.search(r"hog: MemoryError: variable hog .* of r0002: over its memory limit of 0\.5 GiB "
                     r"\(execution\.variable_memory_gb", text), text
    assert re.search(r"killed: (xfel_core\.limits\.)?LimitError: variable killed .* of r0002: its process was killed by SIGKILL", text), text
    cfg = load_beamtime(path)
    model.load_files(cfg)
    fine = next(v for v in declared.variables() if v.name == "fine")
    assert read_value(declared.output_path(cfg, fine, "r0002")).value > 0  # the run's other variable is made


@pytest.mark.parametrize("broken, message", [
    ({"raw_root": "nowhere"}, r"raw_root .*/nowhere does not exist"),
    ({"dark_run": 42}, r"dark_run: 42 has no run folder .*/r0042"),
    ({"variables": "no_such_variables.py"}, r"variables: .*/no_such_variables\.py does not exist"),
])
def test_a_beamtime_naming_what_is_not_there_is_refused_by_the_commands_and_warned_by_the_ui(tmp_path, broken, message):
    """Seen: a nonexistent raw_root, variables file or dark_run were not checked when the config loaded."""
    import os
    import re
    import subprocess
    import sys
    from pathlib import Path

    import yaml
    from conftest import make_beamtime, small_run

    path = make_beamtime(tmp_path / "bt", [small_run(2)])
    path.write_text(yaml.safe_dump({**yaml.safe_load(path.read_text()), **broken}))
    (tmp_path / "home").mkdir()
    env = dict(os.environ, DAGSTER_HOME=str(tmp_path / "home"), XFEL_BEAMTIME=str(path))
    cli = str(Path(sys.executable).parent / "xfel-assets")
    out = subprocess.run([cli, "materialize"], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode != 0 and re.search(message, out.stderr), out.stdout + out.stderr
    assert "Traceback" not in out.stderr
    # The UI only warns (started before the beamtime's first run, its sensors wait); here it then refuses the host.
    out = subprocess.run([cli, "ui", "--host", "0.0.0.0"], env=env, capture_output=True, text=True, timeout=120)
    assert re.search(message + r" \(yet\)", out.stderr), out.stderr
    assert out.returncode != 0 and "--host 0.0.0.0 would let anyone who reaches this machine" in out.stderr, out.stderr


def test_numba_caches_the_kernels_in_the_users_cache_not_in_the_package(tmp_path):
    """Seen: numba wrote its cache into the package folder."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    import xfel_core

    package = Path(xfel_core.__file__).parent
    before = {p: p.stat().st_mtime_ns for p in package.rglob("*.nbi")}
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_CACHE_DIR"}
    env["XDG_CACHE_HOME"] = str(tmp_path)
    out = subprocess.run([sys.executable, "-c", "from xfel_core import binning_kernel; binning_kernel.warm_up()"],
                         env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert list((tmp_path / "xfel-assets" / "numba").rglob("*.nbi"))
    assert {p: p.stat().st_mtime_ns for p in package.rglob("*.nbi")} == before


def test_loading_the_definitions_leaves_numba_unimported_until_a_kernel_runs(session_beamtime):
    """Every command and code server loads the definitions; few run a kernel (numba's import: 0.5 s of CPU)."""
    import subprocess
    import sys

    script = ("import sys, numpy as np, xfel_assets.definitions\n"
              "from xfel_core import binning_kernel\n"
              "assert 'numba' not in sys.modules, 'numba imported'\n"
              "m, s = binning_kernel.finalize(np.array([[2.0, 4.0]]), np.array([[4.0, 16.0]]), np.array([1]))\n"
              "assert 'numba' in sys.modules and type(binning_kernel._finalize).__module__.startswith('numba')\n"
              "print(m.tolist())")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and out.stdout.strip() == "[[2.0, 4.0]]", out.stderr[-2000:]


def test_a_failed_runs_variables_are_left_out_not_a_second_failure(tmp_path):
    import os
    import re
    import subprocess
    import sys
    from pathlib import Path

    import yaml
    from conftest import make_beamtime, small_run

    path = make_beamtime(tmp_path / "bt", [small_run(2), small_run(3)])
    (tmp_path / "bt" / "variables.py").write_text(
        "from xfel_core.variables import variable\n\n\n@variable(title='Frames')\n"
        "def frames(binned_cube):\n    return float(binned_cube['count'].sum())\n")
    data = yaml.safe_load(path.read_text())
    data["variables"] = "variables.py"
    path.write_text(yaml.safe_dump(data))
    control = sorted((tmp_path / "bt" / "raw" / "r0002").glob("RAW-R0002-DA01-S*.h5"))[0]
    control.write_bytes(control.read_bytes()[:2000])  # r0002's control data is broken: its processing fails
    (tmp_path / "home").mkdir()
    env = dict(os.environ, DAGSTER_HOME=str(tmp_path / "home"), XFEL_BEAMTIME=str(path))
    out = subprocess.run([str(Path(sys.executable).parent / "xfel-assets"), "materialize"], env=env,
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 1, out.stdout + out.stderr
    assert "variables_run_job [r0002] left out: it reads" in out.stdout, out.stdout
    failures = out.stdout.split("failed (each failed output keeps")[1]
    assert "variables_run_job" not in failures and "r0002" in failures, failures
    assert re.search(r"^ok\s+r0003", out.stdout, re.M)


def test_a_disk_full_while_writing_the_run_table_leaves_every_format_as_it_was_and_names_the_file(tmp_path, monkeypatch):
    """Seen: Parquet, CSV and Excel new and HTML old, the error naming no file."""
    import errno
    import pathlib

    from conftest import make_beamtime, small_run

    from xfel_core import runtable
    from xfel_core.config import load_beamtime
    from xfel_core.lineage import model

    from test_variables import make_all

    cfg = load_beamtime(make_beamtime(tmp_path / "bt", [small_run(2)]))
    model.load_files(cfg)
    make_all(cfg)
    table = runtable.output_path(cfg, "run_table")
    files = [table.with_suffix(s) for s in (".parquet", ".csv", ".xlsx", ".html")]
    before = {p: p.read_bytes() for p in files}
    write_text = pathlib.Path.write_text

    def full(self, *args, **kw):
        if ".html.tmp-" in self.name:
            raise OSError(errno.ENOSPC, "No space left on device")
        return write_text(self, *args, **kw)

    monkeypatch.setattr(pathlib.Path, "write_text", full)
    spec = model.asset("run_table")
    with pytest.raises(OSError, match=r"No space left on device: writing .*run_table\.xlsx / .*run_table\.html"):
        spec.make(cfg, *spec.partitioning.args(None))
    assert {p: p.read_bytes() for p in files} == before
    assert not list(table.parent.glob(".*.tmp-*"))


def test_two_writers_of_one_output_at_once_are_detected(tmp_path):
    import multiprocessing

    from xfel_core.exceptions import OutputBusyError
    from xfel_core.outputs import atomic_path

    out = tmp_path / "binned_cube.h5"
    ready, go = multiprocessing.Event(), multiprocessing.Event()

    def slow_writer():
        with atomic_path(out) as tmp:
            tmp.write_bytes(b"first")
            ready.set()
            go.wait(30)

    p = multiprocessing.get_context("fork").Process(target=slow_writer)
    p.start()
    try:
        assert ready.wait(30)
        with pytest.raises(OutputBusyError, match=rf"{out} is being written by another process now \(.* pid {p.pid}\)"):
            with atomic_path(out) as tmp:
                tmp.write_bytes(b"second")
    finally:
        go.set()
        p.join(30)
    assert out.read_bytes() == b"first"


def test_a_raw_file_truncated_while_the_module_step_reads_fails_it_naming_the_file(tmp_path, monkeypatch):
    """Seen: a file truncated right after the step opened it gave a bare KeyError naming no file."""
    import os

    from xfel_core.exceptions import RawFileChangedError

    cfg, pipeline = _taken_run(tmp_path)
    first = pipeline.module_files(cfg, "r0002", 0)[0]
    module_frames_of = pipeline.module_frames_of

    def open_then_truncate(*args, **kw):  # the file is cut short once the step has opened it
        frames = module_frames_of(*args, **kw)
        os.truncate(first, 3000)
        return frames

    monkeypatch.setattr(pipeline, "module_frames_of", open_then_truncate)
    with pytest.raises(RawFileChangedError, match=rf"module 00 \(in .*\): its raw files changed while they were read "
                                                  rf"\({first.name} rewritten \(\d+ -> 3000 bytes\)"):
        pipeline.make_preprocessed_module(cfg, "r0002", 0)


def test_a_syntax_error_in_variables_keeps_their_columns_with_the_last_values(tmp_path):
    """Seen: a syntax error in variables.py hid every variable's column from the run table."""
    import pandas as pd

    from xfel_core.config import load_beamtime
    from xfel_core.lineage import model
    from xfel_core.runtable import output_path as table_path

    from test_variables import dssc_beamtime, make_all

    path = dssc_beamtime(tmp_path / "bt", "from xfel_core.variables import variable\n\n\n"
                                          "@variable(title='XGM', units='uJ')\ndef xgm(run_key):\n    return 4.5\n")
    cfg = load_beamtime(path)
    model.load_files(cfg)
    make_all(cfg)
    assert pd.read_parquet(table_path(cfg, "run_table")).loc[0, "XGM (uJ)"] == 4.5
    variables = tmp_path / "bt" / "variables.py"
    variables.write_text(variables.read_text() + "\n@variable()\ndef oops(run:\n")
    cfg = load_beamtime(path)
    model.load_files(cfg)
    spec = model.asset("run_table")
    spec.make(cfg, *spec.partitioning.args(None))
    df = pd.read_parquet(table_path(cfg, "run_table"))
    assert df.loc[0, "XGM (uJ)"] == 4.5
    assert "SyntaxError" in table_path(cfg, "run_table").with_suffix(".html").read_text()


def test_the_readme_names_the_system_libraries_qts_x11_plugin_lacks_here():
    """Seen: roi-gui under a virtual display needed three xcb libraries the README did not name (now: the docs)."""
    import re
    import subprocess
    from pathlib import Path

    import PySide6

    plugin = Path(PySide6.__file__).parent / "Qt" / "plugins" / "platforms" / "libqxcb.so"
    from test_docs_commands import DOCS

    docs = "".join(page.read_text() for page in DOCS)
    named = set(re.search(r"apt-get install (libxcb[^`]*)`", docs)[1].split())
    lacking = set(re.findall(r"(lib[\w-]+)\.so\.(\d+) => not found", subprocess.run(
        ["ldd", str(plugin)], capture_output=True, text=True).stdout))
    assert {f"{name}{major}" for name, major in lacking} <= named, (lacking, named)
    assert "libxcb-cursor0" in named  # Qt 6.5 and later load it at start, not through the plugin's links


def test_demo_runs_are_written_in_memory_bounded_by_a_sequence_file(tmp_path):
    """Seen: demo-beamtime --trains 200 --frames 40 --modules 1 (1 GB of files) peaked at 8.3 GB of memory."""
    import subprocess
    import sys

    script = f"""
import resource
from pathlib import Path
from xfel_core.demo import beamtime as b
b.KEEP_FRAMES_BYTES = 0  # as for a large run: the frames are not kept for a test
spec = b.RunSpec(run_number=2, ntrains=100, frames_per_train=20, modules=[0], module_shape=(128, 512))
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
gen = b.write_run(Path({str(tmp_path)!r}), spec)
print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) * 1024, sum(p.stat().st_size for p in gen.files))
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    grown, written = map(int, out.stdout.split())
    assert written > 250e6
    assert grown < 1.6 * written, (grown, written)  # one sequence file's frames and a block of float32 trains


def test_a_backfill_waits_for_the_daemon_to_load_the_files_edited_a_moment_ago(tmp_path, monkeypatch):
    """Seen: a variable added, then `backfill --stale-only` at once: the daemon, still on the old code location,
    failed the backfill (0 of 3 done, 0 failed)."""
    import threading

    from xfel_assets.runtime.daemon import CODE_FILE
    from xfel_assets.runtime.daemon_control import wait_for_edits
    from xfel_assets.runtime.launcher import workspace_fingerprint

    config = tmp_path / "beamtime.yaml"
    config.write_text("name: bt\n")
    monkeypatch.setenv("XFEL_BEAMTIME", str(config))
    code = tmp_path / CODE_FILE
    said: list[str] = []
    assert wait_for_edits(tmp_path, said.append, timeout_s=5) and not said  # no daemon of ours: nothing to wait for
    code.write_text(f"{workspace_fingerprint(config)} {config.resolve()}")
    assert wait_for_edits(tmp_path, said.append, timeout_s=5) and not said  # loaded as it is
    config.write_text("name: bt\n# edited\n")
    assert not wait_for_edits(tmp_path, said.append, timeout_s=1)
    assert said == ["waiting for the Dagster daemon to load the edited code and beamtime files",
                    "the Dagster daemon has not loaded the edited files after 1 s; launching anyway"]
    loads = threading.Timer(1.0, lambda: code.write_text(f"{workspace_fingerprint(config)} {config.resolve()}"))
    loads.start()
    assert wait_for_edits(tmp_path, said.append, timeout_s=30)
    code.write_text(f"stale {tmp_path / 'other' / 'beamtime.yaml'}")  # a daemon of another beamtime: not waited for
    assert wait_for_edits(tmp_path, said.append, timeout_s=1)
