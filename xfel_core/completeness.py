"""Whether a raw European XFEL run folder is complete: the rule the new-run sensor applies.

Runs arrive in three ways that an "all modules have a file and nothing changed since the last
look" rule gets wrong: the DAQ writes sequence files for minutes (files growing, new sequences
appearing), a migration copies files one by one with pauses longer than the sensor's interval,
and module files arrive before the control file or after. Several signals are combined (see
:class:`~xfel_core.config.CompletenessConfig` for their settings); each answer says what the run
waits for, in words a scientist reads in the sensor's tick.
"""

from __future__ import annotations

import shlex
import subprocess
import time
from pathlib import Path

import numpy as np

from .config import BeamtimeConfig
from .exceptions import XfelError
from .readers import euxfel


def _newest_change(run_dir: Path) -> float:
    """The newest change of the folder (a file added or removed) or of a file in it (s since the epoch).

    The status-change time (ctime), not the modification time: a copy that keeps the source's
    times (``cp -p``, ``rsync -t``, a migration) sets the mtime into the past, but never the ctime.
    """
    times = [run_dir.stat().st_ctime]
    for p in run_dir.iterdir():
        try:
            times.append(p.stat().st_ctime)
        except FileNotFoundError:  # renamed away meanwhile
            continue
    return max(times)


def facility_says_complete(cfg: BeamtimeConfig, run: str) -> str | None:
    """None if the facility's marker and command (where configured) say the run is complete, else why not."""
    c, run_dir = cfg.completeness, cfg.run_dir(run)
    fields = {"run": run, "number": int(run[1:]), "run_dir": str(run_dir)}
    if c.marker is not None:
        pattern = c.marker.format(**fields)
        if not list(run_dir.glob(pattern)):
            return f"no marker {run_dir / pattern} yet (completeness.marker)"
    if c.command is not None:
        argv = [a.format(**fields) for a in shlex.split(c.command)]
        try:
            out = subprocess.run(argv, capture_output=True, text=True, timeout=c.command_timeout_s)
        except (OSError, subprocess.TimeoutExpired) as e:
            return f"completeness.command {argv[0]} failed: {e}"
        said = out.stdout.strip()
        if out.returncode != 0 or said.lower() != "complete":
            return (f"completeness.command says {said[:80]!r} (exit status {out.returncode}), not 'complete'")
    return None


def content_problem(cfg: BeamtimeConfig, run: str, files: list[Path]) -> str | None:
    """Why the files' content says the run is not all there (None if it is): sequence gaps, modules
    ending at different sequences, a module short of the control data's trains."""
    from .euxfel.pipeline import module_coverage_check  # the same rule as raw_run's check
    from .euxfel.run_summary import control_files, summarize_run

    gaps = euxfel.sequence_gaps(files)
    if gaps:
        return "sequence files missing: " + "; ".join(f"{a} S{', S'.join(f'{q:05d}' for q in qs)}"
                                                     for a, qs in gaps.items())
    last = {}
    for p in files:
        m = euxfel.FILE_RE.match(p.name)
        last[m["agg"]] = max(last.get(m["agg"], 0), int(m["seq"]))
    modules = {cfg.detector.aggregator_for(m): last.get(cfg.detector.aggregator_for(m), 0) for m in cfg.detector.modules}
    if max(modules.values()) - min(modules.values()) > cfg.completeness.sequences_within:
        return ("the modules' files end at different sequences (" +
                ", ".join(f"{a} S{s:05d}" for a, s in sorted(modules.items())) + ")")
    summary, _ = summarize_run(cfg, run)
    check = module_coverage_check(cfg, summary)
    if not check.passed:
        return f"modules do not cover the run: {check.description}"
    ctrl = euxfel.files_train_ids(control_files(cfg, files))
    module_trains = summary.train_ids[summary.present.any(axis=0)]
    share = float(np.isin(module_trains, ctrl).mean()) if len(module_trains) else 1.0
    if share < cfg.checks.min_module_coverage:  # the control data's last sequence files are still coming
        return f"the control data has {share:.1%} of the modules' trains"
    return None


def run_completeness(cfg: BeamtimeConfig, run: str, now: float | None = None) -> str | None:
    """None if the run folder is complete enough to process, else what it waits for.

    In order (cheap first): every module and the control data have files; the folder settled;
    every file opens with a complete train index; the facility's marker or command; then the
    content rules, which a settled run fails for ``content_wait_seconds`` at most: a module that
    really lost trains is processed then, and raw_run's ``modules_cover_run`` check shows it red.
    """
    from .euxfel.run_summary import expected_files_present

    c = cfg.completeness
    now = time.time() if now is None else now
    run_dir = cfg.run_dir(run)
    try:
        files, problems = expected_files_present(cfg, run_dir)
        if problems:
            return "; ".join(problems)
        # With corrected data the correction writes the modules' files into the run's proc folder: it settles too.
        quiet = now - max(_newest_change(d) for d in {run_dir, cfg.detector_dir(run)} if d.is_dir())
        if quiet < c.settle_seconds:
            return f"last change {quiet:.0f} s ago: settling for {c.settle_seconds:g} s (completeness.settle_seconds)"
        for p in files:
            why = euxfel.train_index_problem(p)
            if why:
                return why
        why = facility_says_complete(cfg, run)
        if why:
            return why
        why = content_problem(cfg, run, files)
    except (XfelError, OSError) as e:
        return str(e)
    if why and quiet < c.content_wait_seconds:
        return f"{why}; waiting up to {c.content_wait_seconds:g} s for the rest (completeness.content_wait_seconds)"
    return None
