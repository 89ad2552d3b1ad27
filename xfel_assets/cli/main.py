"""The `xfel-assets` command: make demo data, materialize runs through Dagster, print what was made."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from xfel_core.config import ENV_VAR, RUN_KEY_RE, beamtime_path_from_env, load_beamtime, run_key
from xfel_core.euxfel.run_summary import data_runs
from xfel_core.exceptions import ConfigError, XfelError

from xfel_assets.cli.home import ensure_dagster_home


def parse_runs(spec: str | None, available: list[str]) -> list[str]:
    """'r0002-r0005', 'r0002,r0007' or None (all available runs)."""
    if not spec:
        return available
    runs: list[str] = []
    for part in spec.split(","):
        a, _, b = part.strip().partition("-")
        for key in (a, b) if b else (a,):
            if not RUN_KEY_RE.match(key):
                raise XfelError(f"--runs: {key!r} is not a run key like r0042")
        if b:
            runs += [run_key(n) for n in range(int(a[1:]), int(b[1:]) + 1)]
        else:
            runs.append(a)
    return [r for r in runs if r in available] if available else runs


def cmd_demo_beamtime(args) -> int:
    from xfel_core.demo.beamtime import write_demo_beamtime

    path = write_demo_beamtime(Path(args.dir), runs=args.runs, trains=args.trains, frames=args.frames,
                               modules=args.modules, insitu=not args.no_insitu, events=not args.no_events,
                               variables=not args.no_variables, first_run=args.first_run,
                               slurm_cluster=Path(args.slurm_cluster) if args.slurm_cluster else None)
    print(f"wrote demo beamtime {path}")
    return 0


def cmd_demo_events(args) -> int:
    from xfel_core.demo.events import write_demo_events

    path = write_demo_events(Path(args.dir), layout=args.layout, runs=args.runs, n_per_point=args.shots)
    print(f"wrote {args.layout} event-file runs (dark run r0001, data runs from r0002) under "
          f"{Path(args.dir).resolve() / 'raw' / 'events'}; config {path}")
    return 0


def cmd_demo_detector(args) -> int:
    from xfel_core.demo.detectors import write_demo_detector

    path = write_demo_detector(Path(args.dir), kind=args.type, corrected=not args.raw, runs=args.runs,
                               trains=args.trains, frames=args.frames)
    print(f"wrote {args.type} runs ({'raw' if args.raw else 'raw and corrected'}, from r0002) under "
          f"{Path(args.dir).resolve()}; config {path}")
    return 0


def cmd_demo_insitu(args) -> int:
    from xfel_core.demo.insitu import write_demo_insitu

    path = write_demo_insitu(Path(args.dir), measurements=args.measurements, frames=args.frames,
                             header_transmission=not args.no_transmission)
    print(f"wrote in-situ demo sample under {Path(args.dir).resolve() / 'raw' / 'insitu'}; config {path}")
    return 0


def cmd_roi_gui(args) -> int:
    cfg, _ = _setup(args)  # the Dagster home too: the window can launch a backfill there

    from xfel_core.roi_targets import default_roi_file, load_target

    stack = load_target(cfg, args.target, args.module, args.frame_type)
    roi_file = Path(args.roi_file).resolve() if args.roi_file else default_roi_file(cfg, stack.section)
    require_display()
    try:
        from xfel_assets.gui.roi_window import run_window  # Qt only for this command
    except ImportError as e:
        raise XfelError(f"the ROI window needs Qt and pyqtgraph ({e}): pip install -e '.[gui]'") from None

    return run_window(cfg, stack, roi_file)


def require_display() -> None:
    """A clear error where a window cannot open (Qt itself aborts with a plugin message and status 134)."""
    if not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY") or os.environ.get("QT_QPA_PLATFORM")):
        raise XfelError("roi-gui opens a window and there is no display: $DISPLAY and $WAYLAND_DISPLAY are unset. "
                        "Run it in a desktop session (FastX, VNC, the beamline's workstation) or over ssh -X; "
                        "QT_QPA_PLATFORM=offscreen draws without a screen (for screenshots only)")


def _roi_spec(text: str):
    """'name:role:y0:y1:x0:x1' as a ROI."""
    from xfel_core.config import Roi

    parts = text.split(":")
    if len(parts) != 6:
        raise ConfigError(f"--roi {text!r}: expected name:role:y0:y1:x0:x1, e.g. peak:com:80:120:200:260")
    name, role, *nums = parts
    try:
        y0, y1, x0, x1 = (int(v) for v in nums)
    except ValueError:
        raise ConfigError(f"--roi {text!r}: the pixel bounds must be integers") from None
    try:
        return Roi(name=name, role=role, y=(y0, y1), x=(x0, x1))
    except ValueError as e:
        raise ConfigError(f"--roi {text!r}: {e}") from None


def cmd_roi(args) -> int:
    from xfel_core.report import format_table
    from xfel_core.rois import configured_rois, dump_rois, load_rois

    if args.action == "save":
        if args.roi:
            rois = [_roi_spec(t) for t in args.roi]
        else:
            cfg = load_beamtime(Path(args.beamtime).resolve() if args.beamtime else beamtime_path_from_env())
            rois = configured_rois(cfg)
        path = dump_rois(Path(args.file), rois)
        print(f"wrote {len(rois)} ROIs to {path.resolve()}; use them with 'insitu: roi_file: {path.resolve()}'")
    else:
        rois = load_rois(Path(args.file))
        print(format_table([{"name": r.name, "role": r.role, "y": f"[{r.y[0]}, {r.y[1]})",
                             "x": f"[{r.x[0]}, {r.x[1]})"} for r in rois]))
        print(f"{len(rois)} ROIs in {Path(args.file).resolve()}; roi_series computes them when the beamtime "
              f"config says 'insitu: roi_file: {Path(args.file).resolve()}'")
    return 0


def _setup(args, strict: bool = True):
    """The beamtime config and the Dagster home (created if needed), exported for Dagster and its daemon.

    A folder or file the beamtime names that is not there is an error (``strict``), else a warning
    (a UI started before the beamtime's first run: the sensors wait for it)."""
    cfg_path = Path(args.beamtime).resolve() if args.beamtime else beamtime_path_from_env()
    os.environ[ENV_VAR] = str(cfg_path)
    cfg = load_beamtime(cfg_path)
    fatal, later = cfg.missing_paths()
    if fatal and strict:
        raise ConfigError(f"{cfg_path}: " + "; ".join(fatal))
    for why in (later + fatal if not strict else later):
        print(f"xfel-assets: {cfg_path}: {why} (yet)", file=sys.stderr)
    home = Path(os.environ.get("DAGSTER_HOME") or cfg_path.parent.parent / "dagster_home").resolve()
    os.environ["DAGSTER_HOME"] = str(ensure_dagster_home(home, cfg.resolved_max_concurrent(),
                                                         cfg.execution.resolved_max_module_steps()))
    return cfg, home


def _insitu_selection(cfg, spec: str | None) -> list[str]:
    """Measurement keys of the samples named in 'S1,S2' (default: every sample)."""
    if cfg.insitu is None:
        return []
    from xfel_core.insitu import layout

    samples = layout.samples(cfg.insitu)
    if spec:
        wanted = [s.strip() for s in spec.split(",") if s.strip()]
        unknown = [s for s in wanted if s not in samples]
        if unknown:
            raise ConfigError(f"no sample folders {unknown} in {cfg.insitu.raw_root} (there are: {samples})")
        samples = wanted
    return [layout.measurement_key(s, m) for s in samples for m in layout.measurements(cfg.insitu, s)]


def cmd_materialize(args) -> int:
    cfg, home = _setup(args)
    # --runs alone: only runs (DSSC and event files); --samples alone: only in-situ samples; neither: everything.
    want_runs, want_samples = bool(args.runs or not args.samples), bool(args.samples or not args.runs)
    runs = parse_runs(args.runs, data_runs(cfg)) if want_runs and cfg.has_dssc else []
    ev_runs = []
    if want_runs and cfg.events is not None:
        from xfel_core.readers.events import event_runs

        ev_runs = parse_runs(args.runs, event_runs(cfg.events))
    measurements = _insitu_selection(cfg, args.samples) if want_samples else []
    if not runs and not measurements and not ev_runs:
        where = [str(cfg.raw_root)] + [str(s.raw_root) for s in (cfg.insitu, cfg.events) if s is not None]
        print(f"no runs, event runs or in-situ measurements to process in {' or '.join(where)}", file=sys.stderr)
        return 1

    import dagster as dg

    from xfel_core.insitu.layout import split_measurement_key
    from xfel_core.lineage import model
    from xfel_core.report import event_run_rows, failed_checks, format_table, mark_failed, run_rows, sample_rows

    from xfel_assets.cli.backfill import prepare_home
    from xfel_assets.cli.materialize import (
        materialize_after,
        materialize_event_runs,
        materialize_insitu,
        materialize_runs,
    )
    from xfel_assets.runtime.liveness import fail_dead_runs

    instance = dg.DagsterInstance.get()
    fail_dead_runs(instance, say=print)  # a killed command's runs would hold the pools' slots forever
    prepare_home(instance, home, cfg, {"raw_run": runs, "event_smalldata": ev_runs, "insitu_frames": measurements,
                                       "attenuation_corrected_series": sorted({k.split("/")[0] for k in measurements})})
    max_concurrent = cfg.resolved_max_concurrent()
    outcomes = []
    if runs:
        done_darks = set(instance.get_materialized_partitions(dg.AssetKey("dark")))
        darks = [] if cfg.dark_run is None else [m for m in cfg.module_keys if args.redo_dark or m not in done_darks]
        print(f"beamtime {cfg.name}: {len(runs)} runs x {len(cfg.module_keys)} modules; Dagster home {home}")
        outcomes += materialize_runs(runs, instance, max_concurrent, darks, cfg=cfg)
    samples = sorted({split_measurement_key(k)[0] for k in measurements})
    if measurements:
        print(f"beamtime {cfg.name}: in-situ, {len(measurements)} measurements of {len(samples)} samples; "
              f"Dagster home {home}")
        outcomes += materialize_insitu(measurements, instance, max_concurrent)
    if ev_runs:
        print(f"beamtime {cfg.name}: {len(ev_runs)} runs of event files ({cfg.events.layout} layout); "
              f"Dagster home {home}")
        outcomes += materialize_event_runs(ev_runs, instance, max_concurrent)
    _say_variables_error()
    outcomes += materialize_after(cfg, {"run": runs, "event_run": ev_runs, "measurement": measurements}, instance,
                                  max_concurrent, failed=[o for o in outcomes if not o.success])
    failed = [o for o in outcomes if not o.success]
    bad = _failed_rows(failed, runs, ev_runs, samples)
    checks = {r: failed_checks(cfg, model.asset("binned_cube").partitioning, r) for r in runs}
    if runs:
        print()
        print(format_table(mark_failed(run_rows(cfg, runs), "run", bad["runs"], checks)))
    if ev_runs:
        print()
        print(format_table(mark_failed(event_run_rows(cfg, ev_runs), "run", bad["event runs"])))
    if samples:
        print()
        print(format_table(mark_failed(sample_rows(cfg, samples), "sample", bad["samples"])))
    pages = [str(model.asset(o.job.removesuffix("_job")).output(cfg, None).with_suffix(".html"))
             for o in outcomes if o.success and o.partition is None and o.job.endswith("run_table_job")]
    if pages:
        print("\nrun tables (also .parquet, .csv, .xlsx; `xfel-assets runs` in the terminal):\n  " + "\n  ".join(pages))
    n = len(outcomes)
    print(f"\n{n - len(failed)} of {n} Dagster runs succeeded; mean {sum(o.seconds for o in outcomes) / max(n, 1):.1f} s per run")
    if failed:
        log = _write_failure_log(home, failed)
        print(f"\n{len(failed)} failed (each failed output keeps its previous file; `xfel-assets backfill --stale-only` "
              "redoes them):")
        for o in failed:
            print(f"  {o.job} [{o.partition}]: {o.error}")
        print(f"stack traces: {log} (and in the web UI, under Runs)")
    checked = {r: c for r, c in checks.items() if c and r not in bad["runs"]}
    if checked:
        print(f"\n{len(checked)} runs made, with failed checks (the outputs are current but not to be trusted as they are):")
        for run, what in checked.items():
            print(f"  {run}: " + "; ".join(what))
    return 1 if failed or checked else 0


def _say_variables_error() -> None:
    """The beamtime's variables file's error, if it did not load (its variables are left out; the rest runs)."""
    from xfel_core.workflows.variables import load_error

    if load_error():
        print(f"xfel-assets: the variables file does not load, its variables are left out: {load_error()}",
              file=sys.stderr)


def _failed_rows(failed, runs: list[str], ev_runs: list[str], samples: list[str]) -> dict[str, set[str]]:
    """The rows of each table that a failed Dagster run leaves without a current output."""
    from xfel_core.insitu.layout import split_measurement_key
    from xfel_core.lineage import model

    from xfel_assets.cli.materialize import AFTER

    after = {j.name for w in AFTER for j, _ in model.jobs(w)}
    bad: dict[str, set[str]] = {"runs": set(), "event runs": set(), "samples": set()}
    for o in failed:
        if o.job in after:  # a variable or a run table: the run's own outputs are current
            continue
        if o.job == "event_run_job":
            bad["event runs"].add(o.partition)
        elif o.job.startswith("insitu_"):
            bad["samples"].add(split_measurement_key(o.partition)[0] if "/" in o.partition else o.partition)
        elif o.job == "dark_job":
            bad["runs"] |= set(runs)  # every run's modules need the darks
        else:
            bad["runs"].add(o.partition.split("|")[-1])
    return bad


def _write_failure_log(home: Path, failed) -> Path:
    """The failed steps' errors with their stack traces, in a log file of the Dagster home."""
    import time

    path = home / "logs" / time.strftime("materialize-%Y%m%d-%H%M%S.log")
    path.parent.mkdir(exist_ok=True)
    path.write_text("\n\n".join(f"== {o.job} [{o.partition}] run {o.run_id}\n{o.error}\n{o.trace}" for o in failed))
    return path


def _scope(args, cfg):
    """The partitions --runs and --samples choose (with only one of them, only those; neither: everything)."""
    from xfel_core.lineage.model import Scope
    from xfel_core.readers.events import event_runs

    want_runs, want_samples = bool(args.runs or not args.samples), bool(args.samples or not args.runs)
    runs = parse_runs(args.runs, data_runs(cfg)) if want_runs else []
    ev = parse_runs(args.runs, event_runs(cfg.events)) if want_runs and cfg.events is not None else []
    samples = sorted({k.split("/")[0] for k in _insitu_selection(cfg, args.samples)}) if want_samples else []
    return Scope(runs=runs, samples=samples, event_runs=ev)


def _counted(scope) -> str:
    """The runs and samples a command covers, counted: "3 runs, 2 event runs, 1 samples"."""
    parts = [f"{len(ks)} {what}" for what, ks in (("runs", scope.runs), ("event runs", scope.event_runs),
                                                  ("samples", scope.samples)) if ks]
    return ", ".join(parts) or "nothing"


def _covered(scope) -> str:
    """The runs and samples a command covers, in words."""
    def span(keys: list[str]) -> str:
        numbers = [int(k[1:]) for k in keys] if all(RUN_KEY_RE.match(k) for k in keys) else []
        if len(keys) > 2 and numbers and numbers == list(range(numbers[0], numbers[0] + len(keys))):
            return f"{keys[0]}-{keys[-1]}"
        return ",".join(keys) if len(keys) <= 6 else ",".join(keys[:3]) + ",...," + ",".join(keys[-2:])
    parts = [f"{len(ks)} {what} ({span(ks)})" for what, ks in (("runs", scope.runs), ("event runs", scope.event_runs),
                                                                ("samples", scope.samples)) if ks]
    return ", ".join(parts) or "nothing"


def _stale(cfg, scope, workflow, instance=None):
    """The stale outputs of the scope (and, with an instance, those whose last Dagster run failed), with the selection of every partition."""
    from xfel_core.lineage.staleness import every_partition, find_stale

    _check_workflow(cfg, workflow)
    every = every_partition(cfg, scope, workflow)
    stale = find_stale(cfg, scope, workflow)
    if instance is not None:
        from xfel_assets.cli.backfill import failed_since_materialized

        seen = {(st.asset, str(st.key)) for st in stale}
        stale += [st for st in failed_since_materialized(instance, every) if (st.asset, str(st.key)) not in seen]
    return every, stale


def _check_workflow(cfg, workflow: str | None) -> None:
    """A clear error for a --workflow that the model does not have."""
    from xfel_core.lineage import model

    model.load_files(cfg)
    names = [w.name for w in model.workflows()]
    if workflow is not None and workflow not in names:
        raise ConfigError(f"--workflow {workflow!r}: no such workflow (there are: {', '.join(names)})")


def cmd_stale(args) -> int:
    """List every missing or out-of-date output, one line each with the reason, then a count per asset."""
    cfg = load_beamtime(Path(args.beamtime).resolve() if args.beamtime else beamtime_path_from_env())
    scope = _scope(args, cfg)
    instance = None
    home = Path(os.environ.get("DAGSTER_HOME") or Path(cfg.source_file).parent.parent / "dagster_home")
    if (home / "dagster.yaml").exists():
        import dagster as dg

        instance = dg.DagsterInstance.from_config(str(home))
    every, stale = _stale(cfg, scope, args.workflow, instance)
    for st in stale:
        print(f"{st.asset:30s} {'' if st.key is None else st.key:28s} {st.reason}")
    total = sum(len(k) for k in every.values())
    counts: dict[str, int] = {}
    for st in stale:
        counts[st.asset] = counts.get(st.asset, 0) + 1
    print(f"\n{len(stale)} of {total} outputs stale or missing in {_covered(scope)}"
          + ("; every output was made with the current code, configuration, raw files and calibration" if not stale
             else ":"))
    for asset, ks in every.items():
        if counts.get(asset):
            print(f"  {asset:30s} {counts[asset]:5d} of {len(ks)}")
    return 0


def cmd_backfill(args) -> int:
    cfg, home = _setup(args)
    scope = _scope(args, cfg)

    import dagster as dg

    from xfel_core.lineage.staleness import every_partition

    import xfel_assets.cli.backfill as bf
    from xfel_assets.runtime.daemon_control import DaemonDied, daemon_if_needed
    from xfel_assets.runtime.graphql import GraphQL
    from xfel_assets.runtime.liveness import fail_dead_runs

    instance = dg.DagsterInstance.get()
    fail_dead_runs(instance, say=print)  # a killed command's runs would hold the queue and the pools forever
    if args.stale_only:
        every, stale = _stale(cfg, scope, args.workflow, instance)
    else:
        _check_workflow(cfg, args.workflow)
        every, stale = every_partition(cfg, scope, args.workflow), None
    if not any(every.values()):
        print(f"nothing to process: no runs, event runs or in-situ samples in {_covered(scope)}", file=sys.stderr)
        return 1
    keys = bf.selection(every, stale)
    slots = bf.prepare_home(instance, home, cfg, {a: [str(k) for k in ks] for a, ks in every.items()})
    if stale is not None:
        reasons: dict[str, int] = {}
        for st in stale:
            reasons[f"{st.asset}: {st.reason}"] = reasons.get(f"{st.asset}: {st.reason}", 0) + 1
        for why, n in sorted(reasons.items()):
            print(f"  stale {n:5d} x {why}")
    if not keys:
        print(f"nothing is stale in {_covered(scope)}: every output was made with the current code, "
              "configuration, raw files and calibration")
        return 0
    total = sum(len(k) for k in keys.values())
    print(f"beamtime {cfg.name}: backfill of {total} partitions ("
          + ", ".join(f"{a} {len(k)}" for a, k in keys.items())
          + f") over {_covered(scope)}; at most {slots} module steps at once; Dagster home {home}")
    workspace = home / "workspace.yaml"
    title = bf.backfill_title(args.stale_only, _covered(scope), _counted(scope))
    try:
        with daemon_if_needed(instance, workspace, home / "daemon.log") as daemon:
            with GraphQL(instance, workspace, args.url) as gql:
                while True:
                    with bf.launch_lock(home):  # two backfills at once: the second sees the first's
                        overlap = bf.active_backfill_over(instance, keys)
                        if overlap is None:
                            backfill_id = bf.launch(gql, keys, title)
                        if overlap is None or overlap[1]:
                            break
                    # Another backfill (the UI's automation, a colleague's) covers some of them: it ends first,
                    # then what is still to do is done.
                    print(f"backfill {overlap[0]} is running over some of these partitions: waiting for it to end, "
                          "then the rest")
                    bf.follow(lambda b=overlap[0]: bf.progress_from_instance(instance, b), overlap[0],
                              timeout_s=args.timeout, alive=daemon.check, waiting=lambda: bf.pool_waits(instance))
                    if args.stale_only:
                        every, stale = _stale(cfg, scope, args.workflow, instance)
                        keys = bf.selection(every, stale)
                        if not keys:
                            print(f"nothing is stale in {_covered(scope)} any more: that backfill made it current")
                            return 0
                if overlap is not None:
                    backfill_id = overlap[0]
                    print(f"asset backfill {backfill_id} already covers these partitions and is running: following it")
                else:
                    print(f"launched asset backfill {backfill_id} (see it in the web UI under Runs > Backfills)")
                if args.url:  # follow it as the web server reports it
                    final = bf.follow(lambda: bf.progress(gql, backfill_id), backfill_id, timeout_s=args.timeout,
                                      alive=daemon.check, waiting=lambda: bf.pool_waits(instance))
            if not args.url:
                final = bf.follow(lambda: bf.progress_from_instance(instance, backfill_id), backfill_id,
                                  timeout_s=args.timeout, alive=daemon.check, waiting=lambda: bf.pool_waits(instance))
    except DaemonDied as e:
        print(f"xfel-assets: {e}", file=sys.stderr)
        return 1
    for asset, (done, failed, targeted) in final.per_asset.items():
        print(f"  {asset:20s} {done:5d} done {failed:5d} failed of {targeted}")
    fails = bf.failures(instance, backfill_id)
    for step, partition, why in fails:
        print(f"  FAILED {step} [{partition}]: {why}")
    print(f"backfill {backfill_id}: {final.status.lower()}, {final.done} of {final.targeted} partitions done, "
          f"{final.failed} failed")
    tables = bf.overviews_of(cfg, keys)
    if tables:
        from xfel_assets.cli.materialize import make_overviews

        made = make_overviews(tables)
        print("run tables: " + ", ".join(f"{o.job.removesuffix('_job')} {'made' if o.success else 'FAILED: ' + o.error}"
                                         for o in made))
    return 0 if final.failed == 0 and final.status in ("COMPLETED", "COMPLETED_SUCCESS") else 1


def cmd_runs(args) -> int:
    from xfel_assets.cli.runs import cmd_runs as runs

    cfg_path = Path(args.beamtime).resolve() if args.beamtime else beamtime_path_from_env()
    return runs(args, load_beamtime(cfg_path))


def cmd_note(args) -> int:
    from xfel_assets.cli.runs import cmd_note as note

    cfg, _ = _setup(args)
    rc = note(args, cfg)
    if args.text is not None:  # the notes' new version, for the refresh sensor (the run tables follow)
        import dagster as dg

        from xfel_core.notes import notes_version

        from xfel_assets.defs.model_defs import observation

        with dg.DagsterInstance.get() as instance:
            instance.report_runless_asset_event(observation("run_notes", None, notes_version(cfg)))
    return rc


def cmd_dagster_home(args) -> int:
    _, home = _setup(args, strict=False)
    print(home)
    return 0


def cmd_ui(args) -> int:
    """The Dagster web server and our daemon (1 s sensor loop, 5 s daemon rounds) on one home, until Ctrl-C."""
    from xfel_assets.cli.ui import serve

    _, home = _setup(args, strict=False)
    return serve(home, args.host, args.port, allow_remote=args.no_login_ok)


def cmd_demo(args) -> int:
    root = Path(args.dir)
    if not (root / "beamtime.yaml").exists():
        cmd_demo_beamtime(args)
    args.beamtime = str(root / "beamtime.yaml")
    args.runs = args.samples = None
    return cmd_materialize(args)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="xfel-assets", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    def demo_args(p):
        p.add_argument("dir", help="folder for the beamtime (raw/, processed/, beamtime.yaml)")
        p.add_argument("--runs", type=int, default=3, help="pump-probe runs (a dark run r0001 comes too)")
        p.add_argument("--first-run", type=int, default=1,
                       help="the dark run's number; the pump-probe runs follow it (default 1: r0001, r0002, ...)")
        p.add_argument("--trains", type=int, default=40)
        p.add_argument("--frames", type=int, default=10, help="frames per train")
        p.add_argument("--modules", type=int, default=4, help="DSSC modules (1-16)")
        p.add_argument("--no-insitu", action="store_true", help="no in-situ sample")
        p.add_argument("--no-events", action="store_true", help="no runs of event files")
        p.add_argument("--no-variables", action="store_true", help="no example variables file (variables.py)")
        p.add_argument("--slurm-cluster", metavar="CLUSTER_DIR",
                       help="run the heavy assets as jobs on the local SLURM cluster that "
                       "deploy/slurm/start-local-cluster.sh CLUSTER_DIR started (compute: slurm)")

    p = sub.add_parser("demo-beamtime", help="write a demo beamtime in the European XFEL raw layout (and an in-situ sample)")
    demo_args(p)
    p.set_defaults(func=cmd_demo_beamtime)

    p = sub.add_parser("demo-insitu", help="write an in-situ demo sample (Pilatus TIFFs, SPring-8 layout) and its config")
    p.add_argument("dir", help="folder for the beamtime (raw/insitu/<sample>/, processed/, beamtime.yaml)")
    p.add_argument("--measurements", type=int, default=3)
    p.add_argument("--frames", type=int, default=30, help="frames per measurement")
    p.add_argument("--no-transmission", action="store_true",
                   help="leave Filter_transmission out of the headers (changes are then found as steps)")
    p.set_defaults(func=cmd_demo_insitu)

    p = sub.add_parser("demo-detector", help="write runs of one European XFEL detector (EXtra-data's mock writer: "
                       "raw, and corrected in proc/) with a bunch pattern, and their config")
    p.add_argument("dir", help="folder for the beamtime (raw/, proc/, processed/, beamtime.yaml)")
    p.add_argument("--type", choices=["AGIPD1M", "AGIPD500K", "LPD1M", "JUNGFRAU", "DSSC1M"], default="AGIPD1M")
    p.add_argument("--raw", action="store_true", help="raw data only (default: the corrected files are used)")
    p.add_argument("--runs", type=int, default=2)
    p.add_argument("--trains", type=int, default=12)
    p.add_argument("--frames", type=int, default=4, help="frames (JUNGFRAU: memory cells) per train")
    p.set_defaults(func=cmd_demo_detector)

    p = sub.add_parser("demo-events", help="write runs of event files (PAL-XFEL layout or a generic HDF5 file) and their config")
    p.add_argument("dir", help="folder for the beamtime (raw/events/, processed/, beamtime.yaml)")
    p.add_argument("--layout", choices=["pal", "generic"], default="pal")
    p.add_argument("--runs", type=int, default=2, help="data runs (a dark run r0001 comes too)")
    p.add_argument("--shots", type=int, default=40, help="shots per scan point")
    p.set_defaults(func=cmd_demo_events)

    p = sub.add_parser("roi", help="save ROIs to a ROI file, or load one and show its ROIs")
    p.add_argument("action", choices=["save", "load"])
    p.add_argument("file", help="the ROI file (YAML)")
    p.add_argument("--roi", action="append", metavar="NAME:ROLE:Y0:Y1:X0:X1",
                   help="with save: a ROI (role com, fwhm, intensity or background); repeat for more. "
                   "Default: the ROIs of the beamtime config")
    p.add_argument("--beamtime", help=f"beamtime.yaml (default: ${ENV_VAR})")
    p.set_defaults(func=cmd_roi)

    p = sub.add_parser("roi-gui", help="a window to drag ROIs over a detector image and see their series (saves the ROI file)")
    p.add_argument("target", help="an in-situ sample (GaN01) or measurement (GaN01/GaN01_growth01), or a run's "
                   "binned cube (r0002)")
    p.add_argument("--beamtime", help=f"beamtime.yaml (default: ${ENV_VAR}, else demo/beamtime/beamtime.yaml)")
    p.add_argument("--module", type=int, help="with a run: the module shown (default: the first)")
    p.add_argument("--frame-type", help="with a run: a frame type of the pattern, or 'difference' (default: the first)")
    p.add_argument("--roi-file", help="where Save writes (default: the config section's roi_file, else "
                   "<section>_rois.yaml beside beamtime.yaml)")
    p.set_defaults(func=cmd_roi_gui)

    p = sub.add_parser("materialize", help="materialize every asset of runs and in-situ samples through Dagster (no daemon needed)")
    p.add_argument("--beamtime", help=f"beamtime.yaml (default: ${ENV_VAR}, else demo/beamtime/beamtime.yaml)")
    p.add_argument("--runs", help="r0002-r0005 or r0002,r0007 (default: every run in the raw root)")
    p.add_argument("--samples", help="in-situ samples S1,S2 (default: every sample folder); "
                   "with only --runs or only --samples, only those are processed")
    p.add_argument("--redo-dark", action="store_true", help="recompute the darks even if materialized")
    p.set_defaults(func=cmd_materialize)

    for name, help_ in (("stale", "list every missing or out-of-date output of the beamtime, with the reason (changes nothing)"),
                        ("backfill", "re-materialize a whole beamtime (or its stale outputs) as a Dagster asset backfill")):
        p = sub.add_parser(name, help=help_)
        p.add_argument("--beamtime", help=f"beamtime.yaml (default: ${ENV_VAR}, else demo/beamtime/beamtime.yaml)")
        p.add_argument("--runs", help="r0002-r0040 or r0002,r0007: DSSC and event runs (default: every run in the raw "
                       "roots); with only --runs, no in-situ samples")
        p.add_argument("--samples", help="in-situ samples S1,S2 (default: every sample folder); with only --samples, "
                       "no runs")
        p.add_argument("--workflow", help="only this workflow's outputs: euxfel, insitu, events, or one of the "
                       "beamtime's own (workflows: in beamtime.yaml)")
        p.set_defaults(func=cmd_stale)
    p.add_argument("--stale-only", action="store_true",
                   help="only outputs made with other code, config, raw files or calibration than now")
    p.add_argument("--url", help="a running Dagster web server (http://127.0.0.1:3000); default: in this process")
    p.add_argument("--timeout", type=float, default=None, help="give up following after this many seconds")
    p.set_defaults(func=cmd_backfill)

    p = sub.add_parser("runs", help="the run tables: one row per run with the platform's summary, the user "
                       "variables and the notes, as the outputs are now")
    p.add_argument("--beamtime", help=f"beamtime.yaml (default: ${ENV_VAR}, else demo/beamtime/beamtime.yaml)")
    p.add_argument("--format", choices=("table", "csv", "json", "markdown"), default="table")
    p.add_argument("--columns", help="only these columns, after the run: names or their starts, comma-separated "
                   "(\"trains,kept,XGM\")")
    p.add_argument("--workflow", choices=("euxfel", "events", "insitu"), help="only this workflow's table")
    p.set_defaults(func=cmd_runs)

    p = sub.add_parser("note", help="add a note to a run (or an in-situ sample or measurement), shown in the run "
                       "tables; without a text, list the run's notes")
    p.add_argument("key", help="r0042, or GaN01, or GaN01/GaN01_growth01")
    p.add_argument("text", nargs="?", help="the note (quote it)")
    p.add_argument("--tag", action="append", help="a tag (repeat for more): alignment, bad, ...")
    p.add_argument("--beamtime", help=f"beamtime.yaml (default: ${ENV_VAR}, else demo/beamtime/beamtime.yaml)")
    p.set_defaults(func=cmd_note)

    p = sub.add_parser("dagster-home", help="create the Dagster home (dagster.yaml, workspace.yaml) and print its path")
    p.add_argument("--beamtime", help=f"beamtime.yaml (default: ${ENV_VAR}, else demo/beamtime/beamtime.yaml)")
    p.set_defaults(func=cmd_dagster_home)

    p = sub.add_parser("ui", help="the Dagster web UI and the daemon (sensors, backfills) on the beamtime's Dagster home")
    p.add_argument("--beamtime", help=f"beamtime.yaml (default: ${ENV_VAR}, else demo/beamtime/beamtime.yaml)")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to serve on; Dagster's UI has no login, so only a loopback address unless --no-login-ok")
    p.add_argument("--port", type=int, default=3000)
    p.add_argument("--no-login-ok", action="store_true",
                   help="serve on a non-loopback --host although anyone who reaches it can launch and delete runs")
    p.set_defaults(func=cmd_ui)

    p = sub.add_parser("demo", help="write the demo beamtime (if absent) and materialize all its runs and samples")
    demo_args(p)
    p.add_argument("--redo-dark", action="store_true")
    p.set_defaults(func=cmd_demo)

    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (XfelError, TimeoutError) as e:  # TimeoutError: backfill --timeout (the backfill goes on)
        print(f"xfel-assets: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
