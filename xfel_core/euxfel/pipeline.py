"""One function per asset of the DSSC pipeline: read inputs, compute, write the output atomically.

Each returns a plain dict of what a scientist checks first (counts, output path, seconds), which
the Dagster layer turns into materialization metadata. Nothing here imports Dagster.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from .. import previews, quality, scan
from ..config import BeamtimeConfig, module_key, run_key, run_module_key
from ..cube import build_cube, write_cube
from ..exceptions import RunDataError
from ..hashing import file_states, files_unchanged, state_changes
from ..lineage import versions
from ..outputs import done_info, provenance, read_attrs, write_png
from ..readers import euxfel
from ..rois import section_rois
from . import bunch_pattern, framemask, laser_delay
from .gain import apply_gain, read_gain_map
from .preprocess import (
    assign_groups,
    compute_dark,
    read_dark,
    reduce_frames,
    write_dark,
    write_module_sums,
)
from .run_summary import (
    control_files,
    module_files,
    open_module,
    read_frames_per_train,
    summarize_run,
    write_run_summary,
)


def make_raw_run(cfg: BeamtimeConfig, run: str) -> dict:
    """Open and validate a run; write its train and frame summary (raw_run.h5)."""
    cfg.require_dssc()
    t0 = time.perf_counter()
    vers = versions.made_from(cfg, "raw_run", run)
    s, _ = summarize_run(cfg, run)
    if s.ntrains == 0:
        raise RunDataError(f"run {run} ({s.path}) has no valid trains")
    checks = {"modules_cover_run": module_coverage_check(cfg, s)}
    path = cfg.output_path(run, "raw_run")
    write_run_summary(path, s, cfg, {**vers, **quality.check_attrs(checks),
                                     RAW_FILES_ATTR: json.dumps(file_states(s.files))})
    missing = {f"{m:02d}": int((~s.present[i]).sum()) for i, m in enumerate(s.modules)}
    fpt = s.frames_per_train[s.present]
    return done_info(path, t0, trains=s.ntrains, first_train=int(s.train_ids[0]), last_train=int(s.train_ids[-1]),
                     frames_per_train=int(fpt.max()) if fpt.size else 0, modules=len(s.modules),
                     missing_trains_per_module=missing, raw_size_bytes=s.size_bytes, files=len(s.files),
                     sources=s.sources, suspect_trains=s.suspect_trains,
                     zero_frame_trains=int((s.frames_per_train.max(axis=0) == 0).sum()), checks=checks, **vers)


def module_coverage_check(cfg: BeamtimeConfig, s) -> quality.CheckOutcome:
    """How much of the control data's trains each module has, and its missing sequence files."""
    ctrl_tids = euxfel.files_train_ids(control_files(cfg, s.files))
    coverage = {m: float(np.isin(ctrl_tids, s.train_ids[s.present[i]]).mean()) if len(ctrl_tids) else 1.0
                for i, m in enumerate(s.modules)}
    gaps = euxfel.sequence_gaps(s.files)
    module_gaps = {m: gaps[cfg.detector.aggregator_for(m)] for m in s.modules if cfg.detector.aggregator_for(m) in gaps}
    return quality.modules_cover_run(coverage, module_gaps, cfg.checks.min_module_coverage)


def make_scan_variable(cfg: BeamtimeConfig, run: str) -> dict:
    """Read the scan variable per train and bin it into scan points (scan_variable.h5)."""
    cfg.require_dssc()
    t0 = time.perf_counter()
    sv = cfg.scan_variable
    vers = versions.made_from(cfg, "scan_variable", run)
    run_dir = cfg.run_dir(run)
    dc = euxfel.open_run(run_dir)
    pulses = None
    if sv.delay is not None:
        tids, values, pulses = laser_delay.delays(cfg, dc, run)
        what = "the laser delay (scan_variable.delay)"
    else:
        tids, values = euxfel.train_values(dc, sv.source, sv.key)
        what = f"{sv.source} / {sv.key}"
    if values.ndim != 1:
        raise RunDataError(f"run {run}: {what} has shape {values.shape[1:]} per train; "
                           "the scan variable must be one number per train")
    if not np.isfinite(values).any():
        empty = "has no finite value" if len(values) else "has no value in any train"
        raise RunDataError(f"run {run}: the scan variable {what} {empty} "
                           f"({len(values)} trains, all NaN or missing) in {run_dir}: no train can be put on a scan "
                           "point; check scan_variable.source and key, or leave the run out (ignore_runs)")
    bins = scan.bin_scan_values(tids, values, sv.binning)
    if pulses is not None:  # the BAM's per-pulse delays, binned with the trains'
        bins = scan.bin_pulses(bins, pulses[np.argsort(tids, kind="stable")], sv.binning)
    if not (bins.bin_index >= 0).any():
        raise RunDataError(f"run {run}: no train's scan variable {what} falls on a scan point of "
                           f"scan_variable.binning ({run_dir}): values {np.nanmin(values):g} to {np.nanmax(values):g}")
    path = cfg.output_path(run, "scan_variable")
    scan.write_scan_bins(path, bins, sv.units, provenance(
        cfg.yaml_text(), [str(p) for p in euxfel.run_files(run_dir)], run=run, source=sv.source or "delay",
        key=sv.key or "", **vers))
    run_trains = len(dc.train_ids)
    return done_info(path, t0, scan_points=bins.nbins, centres=bins.centres.tolist(), units=sv.units,
                     trains_per_point=bins.trains_per_bin().tolist(), trains_with_value=len(tids),
                     trains_without_value=run_trains - int((bins.bin_index >= 0).sum()), **vers)


def make_framemask(cfg: BeamtimeConfig, run: str) -> dict:
    """Build the (trains x frames) mask from the gas monitor and the config's exclusions (framemask.h5)."""
    cfg.require_dssc()
    t0 = time.perf_counter()
    vers = versions.made_from(cfg, "framemask", run)
    tids, _, fpt = read_frames_per_train(cfg.output_path(run, "raw_run"))
    nframes = int(fpt.max()) if fpt.size else 0
    if cfg.maxframes is not None:
        nframes = min(nframes, cfg.maxframes)
    rules = cfg.framemask
    ptids = energy = None
    inputs: list[str] = []
    run_dir = cfg.run_dir(run)
    use_xgm = bool(rules.xgm_source) and rules.min_pulse_energy_uj is not None
    dc = euxfel.open_run(run_dir) if use_xgm or cfg.frame_pattern == "auto" else None  # the control data
    if use_xgm:
        ptids, energy = euxfel.train_values(dc, rules.xgm_source, rules.xgm_key)
        if energy.ndim != 2:
            raise RunDataError(f"run {run}: {rules.xgm_source} / {rules.xgm_key} must be (trains, pulses), "
                               f"got shape {energy.shape}")
    types = no_pattern = None
    if cfg.frame_pattern == "auto":
        types, no_pattern = bunch_pattern.frame_types_of_run(cfg, dc, run, tids, nframes)
    if dc is not None:
        inputs = [str(p) for p in euxfel.run_files(run_dir)]
    fm = framemask.build_framemask(tids, nframes, cfg.frame_types, rules, ptids, energy, types, no_pattern)
    kept = float(fm.mask.mean()) if fm.mask.size else 0.0
    checks = {"kept_fraction": quality.kept_fraction(kept, cfg.checks.min_kept_fraction)}
    path = cfg.output_path(run, "framemask")
    # The run's mean pulse energy (uJ) over its trains and the pulse slots its X-ray frames see, for the run table.
    pulses = int(fm.pulse_slots(cfg.frame_types).max(initial=-1)) + 1
    energy_attrs = {} if energy is None or not pulses else \
        {"mean_pulse_energy_uj": float(np.nanmean(energy[:, :pulses]))}
    framemask.write_framemask(path, fm, provenance(cfg.yaml_text(), inputs, run=run, **vers, **energy_attrs,
                                                   **quality.check_attrs(checks)))
    per_train = fm.mask.mean(axis=1) if nframes else np.zeros(len(tids))
    type_counts = {} if types is None else \
        {"frames_by_type": {n: int((types == i).sum()) for i, n in enumerate(cfg.frame_types)}}
    return done_info(path, t0, trains=len(tids), frames_per_train=nframes, frames_kept=int(fm.mask.sum()),
                     frames_rejected=int((~fm.mask).sum()), reasons=fm.reason_counts(), **type_counts,
                     kept_fraction=kept, kept_fraction_per_train=per_train, train_ids=tids, checks=checks,
                     **vers)


#: The raw_run attribute with the run's files as it was taken: {name: [size, mtime_ns]}.
RAW_FILES_ATTR = "raw_files"


def module_frames_of(cfg: BeamtimeConfig, run: str, module: int, files: list[Path] | None = None) -> euxfel.ModuleFrames:
    """Where the frames of one module of a run are (only that module's files are opened): raw, or corrected
    from the run's proc folder, as ``detector`` says."""
    det = cfg.detector
    folder = cfg.detector_dir(run)
    files = module_files(cfg, run, module) if files is None else files
    if not files:
        raise RunDataError(f"run {run}: module {module:02d} has no files (expected {folder}/"
                           f"{'CORR' if det.corrected else 'RAW'}-R*-{det.aggregator_for(module)}-S*.h5)")
    dc = euxfel.open_run(folder, files)
    # Only this module's files: the other modules' files need not be opened (nor be readable) for it.
    return open_module(dc, det, module)


def dark_path(cfg: BeamtimeConfig, module: int) -> Path:
    return cfg.output_path(cfg.dark_run_key, "dark", module)


def make_dark(cfg: BeamtimeConfig, module: int) -> dict:
    """Per memory cell mean and noise of one module in the configured dark run (dark_MM.h5)."""
    cfg.require_dssc()
    t0 = time.perf_counter()
    if cfg.dark_run is None:
        raise RunDataError("dark_run is null in the config: there is no dark to compute")
    run = run_key(cfg.dark_run)
    vers = versions.made_from(cfg, "dark", module_key(module))
    frames = module_frames_of(cfg, run, module)
    if frames.nframes == 0:
        raise RunDataError(f"dark run {run}: module {module:02d} has no frames")
    dark = compute_dark(frames, cfg.chunk_frames)
    checks = {"noise_within_bounds": quality.dark_noise(dark.std, cfg.checks.dark_noise_adu)}
    path = dark_path(cfg, module)
    write_dark(path, dark, provenance(cfg.yaml_text(), frames.files, run=run, module=module, **vers,
                                      **quality.check_attrs(checks)))
    return done_info(path, t0, dark_run=run, cells=len(dark.cell_id), frames=int(dark.count.sum()),
                     mean_adu=float(np.mean(dark.mean)), median_noise_adu=float(np.median(dark.std)),
                     checks=checks, dark_version=dark.version, **vers)


def make_preprocessed_module(cfg: BeamtimeConfig, run: str, module: int) -> dict:
    """Dark-subtract, sort and sum one module's frames per (scan point, frame type), apply the gain map (preprocessed_module_MM.h5)."""
    cfg.require_dssc()
    t0 = time.perf_counter()
    bins, units = scan.read_scan_bins(cfg.output_path(run, "scan_variable"))
    quality.require_passed(read_attrs(cfg.output_path(run, "framemask")), "framemask", cfg.output_path(run, "framemask"))
    fm = framemask.read_framemask(cfg.output_path(run, "framemask"))
    dark = dversion = None
    if cfg.dark_run is not None:
        quality.require_passed(read_attrs(dark_path(cfg, module)), "dark", dark_path(cfg, module))
        dark = read_dark(dark_path(cfg, module))
        dversion = dark.version
    gain = read_gain_map(cfg, module) if cfg.gain_map is not None else None
    gain_version = gain.version if gain is not None else versions.NO_GAIN
    vers = versions.made_from(cfg, "preprocessed_module", run_module_key(run, module))
    files = module_files(cfg, run, module)
    at_start = file_states(files)
    _require_files_as_taken(cfg, run, module, at_start)
    ntypes = len(cfg.frame_types)
    where = f"run {run} module {module:02d} (in {cfg.detector_dir(run)})"
    with files_unchanged(where, lambda: module_files(cfg, run, module), at_start):
        frames = module_frames_of(cfg, run, module, files)
        group, stats = assign_groups(frames, bins, fm, ntypes, cfg.frame_types)
        sums, sumsq, counts = reduce_frames(frames, group, bins.nbins * ntypes, dark, cfg.chunk_frames, stats,
                                            threads=cfg.execution.kernel_threads)
    pixel_counts = counts if counts.ndim == 2 else None  # corrected data: per pixel, masked pixels left out
    counts = np.bincount(group[group >= 0], minlength=bins.nbins * ntypes)
    if gain is not None:
        apply_gain(sums, sumsq, gain)
    checks = {"counts_add_up": quality.counts_add_up(counts, stats.kept, stats.total, stats.rejected)}
    path = cfg.output_path(run, "preprocessed_module", module)
    attrs = provenance(cfg.yaml_text(), frames.files, run=run, module=module, dark_version=dversion,
                       dark_run=cfg.dark_run_key, gain_version=gain_version,
                       gain_map=gain.source if gain is not None else None,
                       frames_total=stats.total, frames_kept=stats.kept, **vers, **quality.check_attrs(checks))
    write_module_sums(path, sums, sumsq, counts, bins, cfg.frame_types, cfg.detector.module_shape, units, attrs,
                      pixel_counts)
    return done_info(path, t0, frames_total=stats.total, frames_kept=stats.kept, rejected=stats.rejected,
                     kernel_seconds=stats.seconds, bytes_read=stats.bytes_read, read_paths=stats.read_paths,
                     frames_per_second=stats.total / max(time.perf_counter() - t0, 1e-9),
                     counts=counts.reshape(bins.nbins, ntypes), centres=bins.centres, units=units,
                     dark_run=cfg.dark_run_key, dark_version=dversion, gain_version=gain_version, checks=checks,
                     **vers)


def _require_files_as_taken(cfg: BeamtimeConfig, run: str, module: int, now: dict[str, list[int]]) -> None:
    """Fail unless the module's files are those the run was taken with (raw_run's record of them).

    A file deleted, added or rewritten since gives half a run (or another run) that every check passes:
    the run is processed again from raw_run on once it is complete again (the new-run sensor sees its
    files changed)."""
    taken = json.loads(read_attrs(cfg.output_path(run, "raw_run")).get(RAW_FILES_ATTR) or "null")
    agg, kind = cfg.detector.aggregator_for(module), "CORR-" if cfg.detector.corrected else "RAW-"
    ours = {n: st for n, st in (taken or {}).items() if n.startswith(kind) and euxfel.aggregator_of(Path(n)) == agg}
    if not ours:  # a raw_run of an older version, or corrected files (not in the run folder)
        return
    changed = state_changes(ours, now)
    if changed:
        raise RunDataError(f"run {run} module {module:02d}: its raw files are not those the run was taken with by "
                           f"raw_run ({'; '.join(changed)}, in {cfg.detector_dir(run)}); the run is processed again "
                           "from raw_run once it is complete")


def _calibration_of(module_attrs: dict[int, dict]) -> dict:
    """The dark and gain versions each module's sums were made with, as JSON {module: version}."""
    return {f"{kind}_versions": json.dumps({f"{m:02d}": str(a.get(f"{kind}_version", default))
                                            for m, a in module_attrs.items()})
            for kind, default in (("dark", versions.NO_DARK), ("gain", versions.NO_GAIN))}


def make_binned_cube(cfg: BeamtimeConfig, run: str) -> dict:
    """Join the modules' sums into the (scan_variable, frame_type, module, y, x) cube (binned_cube.h5)."""
    cfg.require_dssc()
    t0 = time.perf_counter()
    bins, units = scan.read_scan_bins(cfg.output_path(run, "scan_variable"))
    files = {m: cfg.output_path(run, "preprocessed_module", m) for m in cfg.detector.modules}
    module_attrs = {m: read_attrs(p) for m, p in files.items()}
    for m, p in files.items():
        quality.require_passed(module_attrs[m], "preprocessed_module", p)
    vers = versions.made_from(cfg, "binned_cube", run)
    ds = build_cube(files, bins.trains_per_bin(), units)
    kept = int(ds["count"].sum())
    calibration = _calibration_of(module_attrs)
    checks = {"means_finite": quality.means_finite(ds),
              "all_modules_present": quality.all_modules_present(ds, cfg.detector.modules)}
    ds.attrs = provenance(cfg.yaml_text(), [str(p) for p in files.values()], run=run,
                          dark_run=cfg.dark_run_key, frames_kept=kept, **calibration, **vers,
                          **quality.check_attrs(checks))
    # Everything that can fail comes before the write: a failed step leaves the previous cube.
    roi = previews.first_intensity_roi(section_rois(cfg.smalldata)) if cfg.smalldata is not None else None
    png = previews.cube_png(ds, f"{cfg.name} {run}: {kept} frames", roi, cfg.detector.type)
    path = cfg.output_path(run, "binned_cube")
    write_cube(path, ds)
    write_png(path.with_suffix(".png"), png)  # the run table's thumbnail
    counts = ds["count"].sum("module").values  # (scan points, frame types)
    return done_info(path, t0, scan_points=len(bins.centres), centres=bins.centres, units=units,
                     frame_types=cfg.frame_types, modules=len(files), frames_kept=kept,
                     counts=counts, has_difference="difference" in ds, checks=checks, png=png,
                     nan_fraction=float(np.isnan(ds["mean"].values).mean()), **calibration, **vers)
