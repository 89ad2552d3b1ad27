"""Benchmark: seconds from the moment a new run is complete in the raw root to each of its assets' materialization.

The demo's 4-module run r0002 (`xfel-assets demo-beamtime`) is copied into the raw root of a
fresh beamtime whose darks are already made, while a Dagster daemon runs as `make ui` runs it
(`python -m xfel_assets.daemon`); "complete" is the moment its last file is in place. Three
routes, each on a fresh SQLite home, in the same run:

- stages: today's new-run sensor, which requests each stage's Dagster runs once the stage before
  has succeeded (execution.new_runs: stages, the default 1 s sensor interval);
- backfill, our daemon: the sensor requests one asset backfill (execution.new_runs: backfill),
  whose stages the backfill daemon advances in 5 s rounds;
- backfill, Dagster's daemon: the same under `dagster-daemon run` (30 s rounds, a 15 s sensor
  interval), i.e. `make ui` as it was (`dagster dev`).

Printed: per route and asset, seconds after complete (the first materialization's time; for
preprocessed_module the last module's), and the ratios against the stages route. The target:
binned_cube within settle_seconds + 20 s on this 2-core machine.

    .venv/bin/python benchmarks/bench_latency.py [--settle 30] [--skip-dagster-daemon]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import dagster as dg
import yaml

from xfel_assets.cli.home import ensure_dagster_home
from xfel_assets.runtime.daemon_control import daemon_command, stop_process_group
from xfel_core.demo.beamtime import write_demo_beamtime

ASSETS = ("raw_run", "scan_variable", "framemask", "preprocessed_module", "binned_cube")
RUN = "r0002"
PARALLEL = 2


def make_beamtime(root: Path, settle_s: float, new_runs: str, sensor_interval_s: int) -> tuple[Path, Path]:
    """A demo beamtime with only its dark run in the raw root: (beamtime.yaml, the folder of the run to drop in)."""
    config = write_demo_beamtime(root, runs=1, insitu=False)
    source = root / "incoming"
    source.mkdir()
    shutil.move(root / "raw" / RUN, source / RUN)
    cfg = yaml.safe_load(config.read_text())
    cfg["completeness"] = {"settle_seconds": settle_s, "sensor_interval_s": sensor_interval_s}
    cfg["execution"] = {"max_concurrent": PARALLEL, "max_module_steps": PARALLEL, "new_runs": new_runs}
    config.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return config, source / RUN


def make_darks(env: dict) -> None:
    """The darks of every module, made before the run arrives (as during a beamtime)."""
    code = ("import dagster as dg; from xfel_assets.cli.materialize import materialize_runs;"
            "from xfel_core.config import beamtime_path_from_env, load_beamtime;"
            "cfg = load_beamtime(beamtime_path_from_env());"
            "o = materialize_runs([], dg.DagsterInstance.get(), 2, dark_modules=cfg.module_keys, log=lambda s: None);"
            "assert o and all(x.success for x in o), o")
    subprocess.run([sys.executable, "-c", code], env=env, check=True)


def first_times(instance: dg.DagsterInstance) -> dict[str, float]:
    """Asset -> time of its materialization for RUN (preprocessed_module: its last module's)."""
    out = {}
    for asset in ASSETS:
        stamps = [r.timestamp for r in instance.fetch_materializations(dg.AssetKey(asset), limit=100).records
                  if RUN in (r.partition_key or "")]
        if asset == "preprocessed_module":
            if len(stamps) >= 4:
                out[asset] = max(stamps)
        elif stamps:
            out[asset] = min(stamps)
    return out


def measure(route: str, workdir: Path, settle_s: float) -> dict:
    stock = route == "backfill, Dagster's daemon"
    root = workdir / route.replace(",", "").replace(" ", "-").replace("'", "")
    config, run_dir = make_beamtime(root, settle_s, "stages" if route == "stages" else "backfill",
                                    15 if stock else 1)
    home = ensure_dagster_home(root / "home", PARALLEL, PARALLEL)
    env = dict(os.environ, DAGSTER_HOME=str(home), XFEL_BEAMTIME=str(config))
    make_darks(env)
    cmd = ([str(Path(sys.executable).parent / "dagster-daemon"), "run", "-w", str(home / "workspace.yaml")]
           if stock else daemon_command(home / "workspace.yaml"))
    log = open(root / "daemon.log", "w")
    daemon = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        with dg.DagsterInstance.from_config(str(home)) as instance:
            deadline = time.monotonic() + 120
            while "SENSOR" not in instance.get_daemon_heartbeats():  # the sensors tick
                assert daemon.poll() is None and time.monotonic() < deadline, (root / "daemon.log").read_text()[-3000:]
                time.sleep(0.5)
            dest = root / "raw" / RUN
            dest.mkdir()
            for f in sorted(run_dir.iterdir()):  # a whole-folder copy, file by file
                shutil.copy2(f, dest / f.name)
            complete = time.time()
            deadline = time.monotonic() + settle_s + 400
            times = {}
            while len(times) < len(ASSETS):
                assert daemon.poll() is None, (root / "daemon.log").read_text()[-3000:]
                assert time.monotonic() < deadline, f"{route}: only {sorted(times)} after {settle_s + 400:.0f} s"
                time.sleep(0.25)
                times = first_times(instance)
            first = min(r.create_timestamp.timestamp() for r in instance.get_run_records(
                dg.RunsFilter(tags={"xfel/run": RUN})))
    finally:
        stop_process_group(daemon)
        log.close()
    row = {"route": route, "taken": first - complete, **{a: t - complete for a, t in times.items()}}
    print(f"{route}: binned_cube {row['binned_cube']:.1f} s after complete", flush=True)
    shutil.rmtree(root, ignore_errors=True)
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--settle", type=float, default=30.0, help="completeness.settle_seconds (default: the default, 30)")
    ap.add_argument("--skip-dagster-daemon", action="store_true", help="leave out the route under Dagster's own daemon")
    args = ap.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="xfel-bench-latency-"))
    routes = ["stages", "backfill, our daemon"] + ([] if args.skip_dagster_daemon else ["backfill, Dagster's daemon"])
    rows = [measure(r, workdir, args.settle) for r in routes]
    shutil.rmtree(workdir, ignore_errors=True)

    print(f"\nseconds from {RUN} complete (4 modules, 40 trains x 10 frames of 128 x 512 px) to each asset; "
          f"settle_seconds {args.settle:g}, {os.cpu_count()} CPUs, SQLite, darks made before")
    print("| route | run taken | " + " | ".join(ASSETS) + " | binned_cube - settle |")
    print("|---|" + "---:|" * (len(ASSETS) + 2))
    for r in rows:
        print(f"| {r['route']} | {r['taken']:.1f} | " + " | ".join(f"{r[a]:.1f}" for a in ASSETS)
              + f" | {r['binned_cube'] - args.settle:.1f} |")
    base = rows[0]["binned_cube"] - args.settle
    print("\nratios (binned_cube - settle) against stages: "
          + ", ".join(f"{r['route']} {(r['binned_cube'] - args.settle) / base:.2f}" for r in rows[1:]))
    print(f"target: binned_cube within settle + 20 s: {'met' if base <= 20 else 'NOT met'} ({base:.1f} s)")


if __name__ == "__main__":
    main()
