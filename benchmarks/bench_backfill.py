"""Benchmark: wall time of `xfel-assets backfill` over R runs x 16 modules of small data, and the overhead per step.

For each R (default 10 and 40) a fresh beamtime of small generated runs (16 modules of 16 x 32
pixels, so that the kernel's work is tiny and orchestration dominates) and a fresh SQLite Dagster
home are made, and the real command runs: the Dagster daemon executes the asset backfill.
Reported per R: partitions (steps), Dagster runs, wall time, the steps' own compute time (the
`seconds` metadata of every materialization), and the orchestration overhead per step:

    overhead per step = (wall - compute / P) / steps

where P is the number of Dagster runs at once (2 here): the wall time each step adds beyond its
share of the work. The baseline, measured in the same run, is the same backfill with Dagster's
default run launcher (a new Python interpreter per run) instead of ours, on fewer runs.

    .venv/bin/python benchmarks/bench_backfill.py [--runs 10 40] [--baseline-runs 2] [--modules 16]
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

from xfel_assets.cli.home import ensure_dagster_home
from xfel_core.demo.beamtime import RunSpec, beamtime_config, write_config, write_run

CLI = str(Path(sys.executable).parent / "xfel-assets")
SHAPE = (16, 32)
PARALLEL_RUNS = 2


def make_beamtime(root: Path, nruns: int, modules: list[int]) -> Path:
    for n in range(2, 2 + nruns):
        write_run(root / "raw", RunSpec(run_number=n, ntrains=10, frames_per_train=4, modules=modules,
                                        module_shape=SHAPE, scan_points=3))
    write_run(root / "raw", RunSpec(run_number=1, ntrains=4, frames_per_train=4, modules=modules,
                                    module_shape=SHAPE, dark=True))
    cfg = beamtime_config(root, modules, SHAPE, dark_run=1, frame_pattern=["pumped", "unpumped"])
    cfg["execution"] = {"max_concurrent": PARALLEL_RUNS, "max_module_steps": PARALLEL_RUNS}
    return write_config(root, cfg)


def measure(nruns: int, modules: list[int], default_launcher: bool, workdir: Path) -> dict:
    root = workdir / f"bt{nruns}{'-default' if default_launcher else ''}"
    config = make_beamtime(root, nruns, modules)
    home = ensure_dagster_home(root / "home", PARALLEL_RUNS, PARALLEL_RUNS)
    if default_launcher:
        text = (home / "dagster.yaml").read_text()
        start = text.index("run_launcher:")
        end = text.index("run_coordinator:")
        (home / "dagster.yaml").write_text(text[:start] + text[end:])
    env = dict(os.environ, DAGSTER_HOME=str(home), XFEL_BEAMTIME=str(config))
    t0 = time.perf_counter()
    out = subprocess.run([CLI, "backfill", "--beamtime", str(config)], env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if out.returncode != 0:
        raise SystemExit(f"backfill of {nruns} runs failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}")
    compute, steps = 0.0, 0
    with dg.DagsterInstance.from_config(str(home)) as instance:
        for asset in ("dark", "raw_run", "scan_variable", "framemask", "preprocessed_module", "binned_cube"):
            for rec in instance.fetch_materializations(dg.AssetKey(asset), limit=10000).records:
                compute += rec.asset_materialization.metadata["seconds"].value
                steps += 1
        runs = len(instance.get_run_ids())
    shutil.rmtree(root, ignore_errors=True)
    print(f"R={nruns} {'default launcher' if default_launcher else 'ours'}: {steps} steps, {runs} Dagster runs, "
          f"wall {wall:.0f} s, compute {compute:.1f} s", flush=True)
    return {"runs": nruns, "launcher": "Dagster default" if default_launcher else "xfel forkserver",
            "steps": steps, "dagster_runs": runs, "wall": wall, "compute": compute,
            "overhead": (wall - compute / PARALLEL_RUNS) / steps}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, nargs="+", default=[10, 40])
    ap.add_argument("--baseline-runs", type=int, default=2)
    ap.add_argument("--modules", type=int, default=16)
    args = ap.parse_args()
    modules = list(range(args.modules))
    workdir = Path(tempfile.mkdtemp(prefix="xfel-bench-backfill-"))
    rows = [measure(args.baseline_runs, modules, True, workdir)]
    rows += [measure(r, modules, False, workdir) for r in args.runs]
    shutil.rmtree(workdir, ignore_errors=True)

    print(f"\nbackfill of R runs x {args.modules} modules ({SHAPE[0]}x{SHAPE[1]} pixels, 40 frames per module), "
          f"{PARALLEL_RUNS} Dagster runs at once, {os.cpu_count()} CPUs, SQLite")
    print("| R | run launcher | steps | Dagster runs | wall s | compute s | overhead s/step |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['runs']} | {r['launcher']} | {r['steps']} | {r['dagster_runs']} | {r['wall']:.0f} | "
              f"{r['compute']:.1f} | {r['overhead']:.2f} |")
    base, ours = rows[0], rows[1:]
    growth = ""
    if len(ours) >= 2:
        a, b = ours[0], ours[-1]
        growth = (f" overhead({b['runs']})/overhead({a['runs']})={b['overhead'] / a['overhead']:.2f}"
                  f" wall({b['runs']})/wall({a['runs']})={b['wall'] / a['wall']:.2f}"
                  f" steps ratio={b['steps'] / a['steps']:.2f}")
    print(f"\nratios baseline_overhead/ours={base['overhead'] / ours[0]['overhead']:.2f}{growth}")
    print(f"target: overhead per step < 1.5 s: {'met' if all(r['overhead'] < 1.5 for r in ours) else 'NOT met'}")


if __name__ == "__main__":
    main()
