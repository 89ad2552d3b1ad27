"""A beamtime soak: one `xfel-assets ui` kept running while runs arrive file by file and a beamtime happens to it.

    python benchmarks/soak_beamtime.py [--runs 40] [--pace-s 30] [--settle-s 10] [--dir DIR]
    python benchmarks/soak_beamtime.py --short      # the few-minute version `make test` runs (tests/test_soak.py)

A generator copies runs into the raw root file by file, at a beamline's pace: DSSC runs, runs of event files and
in-situ measurements (the demo's, made first in a source folder). Meanwhile the script does what a beamtime does,
each at its own point of the schedule:

- `variables.py` edited while the UI runs: a new variable and one that hangs (its time limit ends it), then one
  changed and the hanging one removed;
- a new dark: `dark_run` and `ignore_runs` edited, the dark's folder copied in, `xfel-assets backfill --stale-only`;
- a run copied again under its number (raw and processed folders deleted first);
- a raw file deleted while its run is processed, and copied back;
- the daemon killed (the UI starts another); `xfel-assets ui` killed with SIGKILL and started again.

At the end (after one `xfel-assets backfill --stale-only`, as the README says after a failure) it checks that
every output equals a one-shot `xfel-assets materialize` of the same raw files on a fresh home (cubes to float32
precision, variables equal), that `xfel-assets stale` lists nothing, that no Dagster run is left unfinished and
no process of ours is left, and prints a report: runs, the latency from each run's last file to its cube and to
its run-table row (median, max), every failure with its reason, and the checks. Exit status 1 if a check failed.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml

BIN = Path(sys.executable).parent
CLI = str(BIN / "xfel-assets")

NEW_VARIABLES = '''

@variable(title="Twice the delay range", units="ps")
def delay_span_twice(delay_span):
    return 2 * delay_span


@variable(title="Hangs")
def hangs(run_key):
    import time
    time.sleep(3600)
'''


@dataclass
class Soak:
    root: Path
    runs: int
    pace_s: float
    settle_s: float
    log: list[str] = field(default_factory=list)
    last_file: dict[str, float] = field(default_factory=dict)  # run: when its last file arrived (time.time())
    ui: subprocess.Popen | None = None
    port: int = 0

    def __post_init__(self) -> None:
        self.source = self.root / "source"
        self.live = self.root / "live"
        self.home = self.root / "home"
        self.config = self.live / "beamtime.yaml"
        self.env = {**{k: v for k, v in os.environ.items() if k not in ("DAGSTER_HOME", "XFEL_BEAMTIME")},
                    "DAGSTER_HOME": str(self.home), "XFEL_BEAMTIME": str(self.config)}

    def say(self, msg: str) -> None:
        line = f"[{time.strftime('%H:%M:%S')}] {msg}"
        self.log.append(line)
        print(line, flush=True)

    def cli(self, *args: str, timeout: float = 1200) -> subprocess.CompletedProcess:
        out = subprocess.run([CLI, *args], env=self.env, capture_output=True, text=True, timeout=timeout)
        self.say(f"xfel-assets {' '.join(args)}: exit {out.returncode}")
        return out

    # --- the beamtime --------------------------------------------------------------------------------------

    def prepare(self) -> None:
        """The source runs (the demo's, and a second dark), and the live beamtime with an empty raw root."""
        from xfel_core.demo.beamtime import write_demo_beamtime

        write_demo_beamtime(self.source, runs=self.runs, trains=16, frames=4, modules=2, module_shape=(32, 64),
                            events=True)
        write_demo_beamtime(self.root / "second_dark", runs=0, trains=16, frames=4, modules=2,
                            module_shape=(32, 64), insitu=False, first_run=90, variables=False)
        self.live.mkdir()
        data = yaml.safe_load((self.source / "beamtime.yaml").read_text())
        data["completeness"] = {"settle_seconds": self.settle_s, "content_wait_seconds": self.settle_s + 5,
                                "refresh_interval_s": 5}
        data["insitu"]["settle_seconds"] = self.settle_s
        data["checks"] = {**data.get("checks", {}), "min_module_coverage": 0.9}  # 16 trains: one missing is 6 %
        data["execution"] = {**data.get("execution", {}), "variable_timeout_s": 5}
        self.config.write_text(yaml.safe_dump(data, sort_keys=False))
        shutil.copy2(self.source / "variables.py", self.live / "variables.py")
        (self.live / "raw").mkdir()
        self.home.mkdir()

    def arrivals(self) -> list[tuple[str, list[Path]]]:
        """(what, its files) in the order a beamtime writes them: the dark, then runs, event runs, measurements."""
        raw = self.source / "raw"
        dssc = sorted(p for p in raw.iterdir() if re.fullmatch(r"r\d{4}", p.name))
        events = sorted((raw / "events").iterdir()) if (raw / "events").is_dir() else []
        insitu = sorted(p for s in (raw / "insitu").iterdir() if s.is_dir() for p in sorted(s.iterdir()) if p.is_dir()) \
            if (raw / "insitu").is_dir() else []
        out = [(f"dark {dssc[0].name}", sorted(dssc[0].iterdir()))]
        others = [("event run " + e.name, sorted(p for p in e.rglob("*") if p.is_file())) for e in events]
        others += [("measurement " + m.name, sorted(m.iterdir())) for m in insitu]
        for i, run in enumerate(dssc[1:]):
            out.append((f"run {run.name}", sorted(run.iterdir())))
            if i < len(others):
                out.append(others[i])
        out += others[len(dssc) - 1:]
        # Other files the layouts need beside the runs (in-situ flat field, event geometry): first.
        extra = [p for p in raw.rglob("*") if p.is_file() and not any(p in fs for _, fs in out)]
        return [("beamtime files", extra)] + out if extra else out

    def copy_in(self, files: list[Path], pace_s: float) -> None:
        for f in files:
            dest = self.live / "raw" / f.relative_to(self.source / "raw")
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(f, dest)
            time.sleep(pace_s)

    # --- the UI --------------------------------------------------------------------------------------------

    def start_ui(self) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        log = open(self.root / "ui.log", "a")
        self.ui = subprocess.Popen([CLI, "ui", "--port", str(self.port)], env=self.env, stdout=log,
                                   stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and self.ui.poll() is None:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{self.port}/server_info", timeout=2)
                self.say(f"xfel-assets ui up on port {self.port}")
                return
            except OSError:
                time.sleep(1)
        raise RuntimeError(f"xfel-assets ui did not start: {(self.root / 'ui.log').read_text()[-2000:]}")

    def daemon_pid(self) -> int | None:
        from xfel_assets.runtime.daemon import running_daemon

        held = running_daemon(self.home)
        return held[0] if held else None

    # --- what a beamtime does ------------------------------------------------------------------------------

    def edit_variables(self, first: bool) -> None:
        path = self.live / "variables.py"
        if first:
            path.write_text(path.read_text() + NEW_VARIABLES)
            # The refresh sensor makes them for the runs to come (the hanging one fails, named, at its time limit);
            # the backfill at the end makes the new one for the runs before.
            self.say("variables.py: a new variable and a hanging one")
        else:
            text = path.read_text().split('\n\n@variable(title="Hangs")')[0]
            text = text.replace("return float(delays.max() - delays.min())",
                                "return float(delays.max() - delays.min()) * 1000.0  # fs")
            path.write_text(text + "\n")
            self.say("variables.py: delay_span changed (fs), the hanging variable removed")

    def new_dark(self) -> None:
        data = yaml.safe_load(self.config.read_text())
        data["dark_run"], data["ignore_runs"] = 90, [1]
        self.config.write_text(yaml.safe_dump(data, sort_keys=False))
        shutil.copytree(self.root / "second_dark" / "raw" / "r0090", self.live / "raw" / "r0090")
        self.say("a new dark: r0090")
        out = self.cli("backfill", "--stale-only")
        self.say("  " + (out.stdout.strip().splitlines() or [""])[-1])

    def recopy(self, run: str) -> None:
        from xfel_core.config import load_beamtime

        cfg = load_beamtime(self.config)
        shutil.rmtree(cfg.run_dir(run))
        shutil.rmtree(cfg.output_dir(run), ignore_errors=True)
        self.say(f"{run}: raw and processed folders deleted; copied again")
        self.copy_in(sorted((self.source / "raw" / run).iterdir()), self.pace_s / 4)
        self.last_file[run] = time.time()

    def delete_while_processed(self, run: str, files: list[Path]) -> None:
        """Delete a module file of ``run`` once its processing has started, and copy it back later."""
        import dagster as dg

        victim = next(f for f in files if "DSSC01" in f.name)
        dest = self.live / "raw" / run / victim.name
        deadline = time.monotonic() + 120
        with dg.DagsterInstance.from_config(str(self.home)) as instance:
            while time.monotonic() < deadline:
                runs = instance.get_runs(filters=dg.RunsFilter(tags={"xfel/run": run}))
                if runs:
                    break
                time.sleep(0.2)
        dest.unlink()
        self.say(f"{run}: {victim.name} deleted while the run is processed")
        time.sleep(max(self.settle_s, 3))
        shutil.copy2(victim, dest)
        self.last_file[run] = time.time()
        self.say(f"{run}: {victim.name} copied back")

    def kill_daemon(self) -> None:
        pid = self.daemon_pid()
        if pid:
            os.kill(pid, signal.SIGKILL)
            self.say(f"the daemon (pid {pid}) killed")

    def kill_ui(self) -> None:
        os.kill(self.ui.pid, signal.SIGKILL)
        self.ui.wait()
        self.say("xfel-assets ui killed with SIGKILL")
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and self.daemon_pid() is not None:
            time.sleep(0.5)
        self.start_ui()

    # --- the run -------------------------------------------------------------------------------------------

    def run(self) -> dict:
        self.prepare()
        self.start_ui()
        arrivals = self.arrivals()
        n = len(arrivals)
        plan = {max(2, n // 6): "variables 1", max(3, n // 3): "new dark", max(4, n // 2): "variables 2",
                max(5, 2 * n // 3): "delete", max(6, 3 * n // 4): "kill daemon", max(7, 5 * n // 6): "kill ui"}
        recopy = None
        for i, (what, files) in enumerate(arrivals):
            self.copy_in(files, self.pace_s / max(len(files), 1))
            if what.startswith("run "):
                run = what.split()[1]
                self.last_file[run] = time.time()
                recopy = recopy or (run if i >= 2 else None)
            self.say(f"{what}: {len(files)} files copied")
            event = plan.get(i)
            if event == "variables 1":
                self.edit_variables(first=True)
            elif event == "new dark":
                self.new_dark()
            elif event == "variables 2":
                self.edit_variables(first=False)
            elif event == "delete" and what.startswith("run "):
                threading.Thread(target=self.delete_while_processed, args=(what.split()[1], files)).start()
            elif event == "kill daemon":
                self.kill_daemon()
            elif event == "kill ui":
                self.kill_ui()
        if recopy:
            self.recopy(recopy)
        for t in threading.enumerate():
            if t is not threading.current_thread() and not t.daemon:
                t.join()
        return self.finish()

    def quiet(self, timeout_s: float) -> bool:
        """Wait until the sensors have taken every run and no Dagster run is queued or running."""
        import dagster as dg

        active = [dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.NOT_STARTED, dg.DagsterRunStatus.STARTING,
                  dg.DagsterRunStatus.STARTED]
        deadline, calm = time.monotonic() + timeout_s, 0
        with dg.DagsterInstance.from_config(str(self.home)) as instance:
            while time.monotonic() < deadline:
                busy = instance.get_runs_count(filters=dg.RunsFilter(statuses=active))
                calm = calm + 1 if busy == 0 else 0
                if calm >= max(3, int(self.settle_s) + 4):  # settle time and a few sensor ticks with nothing new
                    return True
                time.sleep(1)
        return False

    def finish(self) -> dict:
        report: dict = {"runs": sorted(self.last_file), "failures": [], "checks": {}, "settle_s": self.settle_s}
        report["checks"]["quiet"] = self.quiet(900)
        out = self.cli("backfill", "--stale-only")
        report["final_backfill"] = out.stdout.strip().splitlines()[-1:] if out.stdout.strip() else []
        report["checks"]["quiet_after_backfill"] = self.quiet(300)
        stale = self.cli("stale")
        report["checks"]["nothing_stale"] = "every output was made with the current code" in stale.stdout
        if not report["checks"]["nothing_stale"]:
            report["stale"] = stale.stdout[-3000:]
        report.update(self.latencies())
        report["failures"] = self.failures()
        self.ui.send_signal(signal.SIGTERM)
        try:
            self.ui.wait(120)
        except subprocess.TimeoutExpired:
            self.ui.kill()
        time.sleep(2)
        report["checks"]["no_unfinished_dagster_runs"] = self.unfinished() == 0
        left = self.our_processes()
        report["checks"]["no_process_left"] = not left
        if left:
            report["processes_left"] = left
        wrong = self.compare_with_one_shot()
        report["checks"]["equal_to_one_shot"] = not wrong
        report["wrong_values"] = wrong
        return report

    def latencies(self) -> dict:
        import dagster as dg

        def first_after(instance, asset: str, key: str | None, t0: float) -> float | None:
            f = dg.AssetRecordsFilter(asset_key=dg.AssetKey(asset), asset_partitions=[key] if key else None,
                                      after_timestamp=t0)
            recs = instance.fetch_materializations(f, limit=1000).records
            return min((r.timestamp for r in recs), default=None)

        cube, table = [], []
        with dg.DagsterInstance.from_config(str(self.home)) as instance:
            for run, t0 in self.last_file.items():
                c = first_after(instance, "binned_cube", run, t0)
                if c is not None:
                    cube.append(c - t0)
                    t = first_after(instance, "run_table", None, c)
                    if t is not None:
                        table.append(t - t0)
        stat = lambda xs: {"median_s": float(np.median(xs)), "max_s": float(np.max(xs)), "n": len(xs)} if xs else {}  # noqa: E731
        return {"latency_cube": stat(cube), "latency_table_row": stat(table)}

    def failures(self) -> list[str]:
        import dagster as dg

        from xfel_assets.cli.backfill import failed_steps
        from xfel_assets.runtime.dagster_names import PARTITION_NAME_TAG

        out = []
        with dg.DagsterInstance.from_config(str(self.home)) as instance:
            for r in instance.get_runs(filters=dg.RunsFilter(statuses=[dg.DagsterRunStatus.FAILURE])):
                for step, why in failed_steps(instance, r.run_id).items():
                    out.append(f"{step} [{r.tags.get(PARTITION_NAME_TAG, '-')}]: {why.splitlines()[0][:300]}")
        return out

    def unfinished(self) -> int:
        import dagster as dg

        active = [dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.STARTED,
                  dg.DagsterRunStatus.CANCELING]
        with dg.DagsterInstance.from_config(str(self.home)) as instance:
            return instance.get_runs_count(filters=dg.RunsFilter(statuses=active))

    def our_processes(self) -> list[str]:
        """Processes whose environment names this soak's Dagster home (ours and every child of ours)."""
        mark, out = f"DAGSTER_HOME={self.home}".encode(), []
        for p in Path("/proc").iterdir():
            if not p.name.isdigit() or int(p.name) == os.getpid():
                continue
            try:
                if mark in (p / "environ").read_bytes().split(b"\0"):
                    cmdline = (p / "cmdline").read_bytes().replace(b"\0", b" ").decode()
                    out.append(f"{p.name}: {cmdline[:200]}")
            except OSError:
                continue
        return out

    def compare_with_one_shot(self) -> list[str]:
        """Every output of the live home against a one-shot `materialize` of the same raw files on a fresh home."""
        import xarray as xr

        from xfel_core.config import load_beamtime
        from xfel_core.lineage import model
        from xfel_core.variables import read_value
        from xfel_core.workflows import variables as declared

        fresh = self.root / "fresh"
        shutil.copytree(self.live, fresh, ignore=shutil.ignore_patterns("processed"))
        (self.root / "fresh_home").mkdir()
        env = {**self.env, "DAGSTER_HOME": str(self.root / "fresh_home"), "XFEL_BEAMTIME": str(fresh / "beamtime.yaml")}
        made = subprocess.run([CLI, "materialize"], env=env, capture_output=True, text=True, timeout=1800)
        wrong = [] if made.returncode == 0 else [f"the one-shot materialize failed: {made.stdout[-2000:]}"]
        live, one = load_beamtime(self.config), load_beamtime(fresh / "beamtime.yaml")
        for run in sorted(self.last_file):
            a, b = live.output_path(run, "binned_cube"), one.output_path(run, "binned_cube")
            if not a.exists() or not b.exists():
                wrong.append(f"{run}: binned_cube {'missing live' if not a.exists() else 'missing one-shot'}")
                continue
            with xr.open_dataset(a, engine="h5netcdf") as x, xr.open_dataset(b, engine="h5netcdf") as y:
                for v in ("mean", "count"):
                    if not np.allclose(x[v].values, y[v].values, rtol=1e-6, atol=1e-5, equal_nan=True):
                        wrong.append(f"{run}: binned_cube {v} differs from the one-shot")
        model.load_files(live)
        for var in declared.variables():
            for key in declared.run_keys(live, var.workflow):
                pa, pb = declared.output_path(live, var, key), declared.output_path(one, var, key)
                if not pb.exists():
                    continue
                va, vb = (read_value(pa).value if pa.exists() else None), read_value(pb).value
                same = (va is None and vb is None) or (va is not None and vb is not None and np.allclose(
                    np.asarray(va, dtype=float), np.asarray(vb, dtype=float), rtol=1e-6, equal_nan=True)
                    if np.asarray(vb).dtype.kind in "fiub" else str(va) == str(vb))
                if not same:
                    wrong.append(f"variable {var.name} [{key}]: {va!r} live, {vb!r} one-shot")
        return wrong


def print_report(r: dict, seconds: float) -> None:
    lc, lt = r.get("latency_cube", {}), r.get("latency_table_row", {})
    print("\nsoak report")
    print(f"  runs copied                 {len(r['runs'])} ({', '.join(r['runs'])})")
    print(f"  wall time                   {seconds:.0f} s")
    if lc:
        print(f"  last file -> cube           median {lc['median_s']:.1f} s, max {lc['max_s']:.1f} s ({lc['n']} runs); "
              f"target: median <= settle + 15 s = {r['settle_s'] + 15:.0f} s")
    if lt:
        print(f"  last file -> run-table row  median {lt['median_s']:.1f} s, max {lt['max_s']:.1f} s ({lt['n']} runs)")
    print(f"  failures (each named)       {len(r['failures'])}")
    for f in r["failures"]:
        print(f"    {f}")
    for name, ok in r["checks"].items():
        print(f"  {'ok  ' if ok else 'FAIL'} {name}")
    for w in r.get("wrong_values", []):
        print(f"    WRONG {w}")
    for p in r.get("processes_left", []):
        print(f"    LEFT {p}")
    if r.get("stale"):
        print(r["stale"])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=40, help="DSSC pump-probe runs")
    ap.add_argument("--pace-s", type=float, default=30.0, help="seconds to copy one run's files (30: about 32 min in all)")
    ap.add_argument("--settle-s", type=float, default=10.0, help="completeness.settle_seconds")
    ap.add_argument("--short", action="store_true", help="a few runs at a fast pace (make test)")
    ap.add_argument("--dir", help="folder for the soak (default: a temporary one, removed at the end)")
    ap.add_argument("--json", help="also write the report here")
    args = ap.parse_args(argv)
    if args.short:
        args.runs, args.pace_s, args.settle_s = 3, 1.0, 2.0
    root = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix="xfel-soak-"))
    t0 = time.monotonic()
    soak = Soak(root, args.runs, args.pace_s, args.settle_s)
    try:
        report = soak.run()
    finally:
        if soak.ui is not None and soak.ui.poll() is None:
            os.killpg(soak.ui.pid, signal.SIGTERM)
    print_report(report, time.monotonic() - t0)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1, default=str))
    if not args.dir:
        shutil.rmtree(root, ignore_errors=True)
    return 0 if all(report["checks"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
