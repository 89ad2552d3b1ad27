"""One function per in-situ asset: read inputs, compute, write the outputs atomically; returns what was found.

insitu_frames (per measurement) -> roi_series (per measurement) -> attenuation_corrected_series (per sample).
Nothing here imports Dagster.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from zoneinfo import ZoneInfo

import h5py
import numpy as np
import pandas as pd

from .. import quality
from ..config import BeamtimeConfig, Roi
from ..exceptions import MissingInputError, RunDataError, XfelError
from ..lineage import versions
from ..outputs import atomic_h5, done_info, provenance, read_attrs, write_png, write_table
from ..readers.tiff import read_frames_into, read_headers
from ..rois import check_inside, configured_rois, intensity_columns, roi_columns
from . import layout
from .attenuation import changes_table, correct_series
from .correct import correct_frames, make_flatfield
from .plots import roi_image_png, series_png

FRAMES_FILE = "insitu_frames.h5"
ROI_SERIES_FILE = "roi_series.parquet"
SERIES_FILE = "attenuation_corrected_series.parquet"
#: Largest relative jump left at an attenuator change after correction that passes the check.
MAX_RESIDUAL_JUMP = 0.05


class OutputExistsError(XfelError, FileExistsError):
    """An output made from other inputs or settings exists and overwriting it was not asked for."""


def _iso(t: np.ndarray, tz: ZoneInfo) -> list[str]:
    return [dt.datetime.fromtimestamp(float(x), tz).isoformat(timespec="milliseconds") for x in t]


def make_insitu_frames(cfg: BeamtimeConfig, key: str, overwrite: bool = False) -> dict:
    """Correct a measurement's frames (bad pixels, flat-field, background) with their times (insitu_frames.h5)."""
    t0 = time.perf_counter()
    ins = cfg.require_insitu()
    tz = ZoneInfo(ins.timezone)
    sample, measurement = layout.split_measurement_key(key)
    files = layout.tiff_files(layout.measurement_dir(ins, key))
    if not files:
        raise MissingInputError(f"no TIFFs in {layout.measurement_dir(ins, key)} (measurement {key})")
    flat_files = layout.tiff_files(layout.flatfield_dir(ins, sample))
    vers = versions.made_from(cfg, "insitu_frames", key)
    path = layout.measurement_output(cfg, key, FRAMES_FILE)
    recorded = versions.recorded_lineage(path)
    if path.exists() and recorded != vers["lineage_version"] and not (overwrite or ins.overwrite):
        raise OutputExistsError(
            f"{path} exists and was made from other TIFFs or settings (lineage {recorded}, now "
            f"{vers['lineage_version']}); not overwritten. Move it away, or ask for it: set insitu.overwrite: "
            "true in the beamtime config, or launch insitu_frames with run config overwrite: true")

    headers = read_headers(files, tz)
    order = np.argsort([h.time for h in headers], kind="stable")  # acquisition order
    headers = [headers[i] for i in order]
    files = [h.path for h in headers]
    flat_headers = read_headers(flat_files, tz)
    ny, nx = headers[0].shape
    if flat_headers[0].shape != (ny, nx):
        raise RunDataError(f"flat-field {flat_files[0]} has {flat_headers[0].shape} pixels, the frames of "
                           f"{key} have {(ny, nx)}")
    flat_raw = np.empty((len(flat_files), ny, nx), dtype=np.float64)
    read_frames_into(flat_files, flat_raw)
    flat = make_flatfield(flat_raw, ins.flatfield_good_range)
    cutoffs = [h.count_cutoff for h in headers if h.count_cutoff is not None]
    cutoff = min(cutoffs) if cutoffs else None

    n = len(headers)
    times = np.array([h.time for h in headers])
    exposure = np.array([h.exposure_s for h in headers])
    transmission = np.array([h.transmission for h in headers])
    background = np.empty(n)
    bad_per_frame = np.empty(n, dtype=np.int64)
    mean_image = np.zeros((ny, nx), dtype=np.float64)
    block = np.empty((min(ins.chunk_frames, n), ny, nx), dtype=headers[0].dtype)  # reused raw buffer
    with atomic_h5(path) as f:
        # (frame, y, x) counts per exposure, bad pixels replaced, flat-field divided, background subtracted.
        images = f.create_dataset("images", shape=(n, ny, nx), dtype=np.float32, chunks=(1, ny, nx))
        for start in range(0, n, len(block)):
            stop = min(start + len(block), n)
            raw = block[: stop - start]
            read_frames_into(files[start:stop], raw)
            corrected, background[start:stop], bad_per_frame[start:stop] = correct_frames(raw, flat, ins, cutoff)
            images[start:stop] = corrected
            mean_image += corrected.sum(axis=0, dtype=np.float64)
        mean_image /= n
        images.attrs.update(axes="frame, y, x", units="counts per exposure (flat-field corrected, background subtracted)")
        # CF's time units (xarray decodes them to datetime64); the headers' local times are in ``timezone`` (attrs).
        for name, data, units in (("time", times, "seconds since 1970-01-01 00:00:00"),
                                  ("exposure_s", exposure, "s"), ("transmission", transmission, "1 (NaN: not in header)"),
                                  ("background", background, "counts per pixel per exposure"),
                                  ("bad_pixels_per_frame", bad_per_frame, "pixels")):
            f[name] = data
            f[name].attrs.update(axes="frame", units=units)
        f["files"] = np.array([p.name for p in files], dtype=h5py.string_dtype())
        f["mean_image"] = mean_image.astype(np.float32)
        f["flatfield_response"] = flat.response
        f["bad_pixels"] = flat.bad
        f.attrs.update(provenance(cfg.yaml_text(), [str(p) for p in files + flat_files], sample=sample,
                                  measurement=measurement, key=key, timezone=ins.timezone,
                                  flatfield_dir=str(flat_files[0].parent), **vers))
    tr = transmission[np.isfinite(transmission)]
    return done_info(path, t0, frames=n, shape=f"{ny} x {nx}", first_frame=_iso(times[:1], tz)[0],
                     last_frame=_iso(times[-1:], tz)[0], duration_s=float(times[-1] - times[0]),
                     exposure_s=float(np.median(exposure)), transmissions=sorted(set(tr.tolist())),
                     frames_without_transmission=int(n - tr.size), flatfield_frames=flat.frames,
                     bad_pixels_flatfield=int(flat.bad.sum()), bad_pixels_max_per_frame=int(bad_per_frame.max()),
                     background_mean=float(background.mean()), **vers)


def make_roi_series(cfg: BeamtimeConfig, key: str) -> dict:
    """Per frame of a measurement: centre of mass, FWHM and intensities of the ROIs (roi_series.parquet, .csv, .png)."""
    t0 = time.perf_counter()
    ins = cfg.require_insitu()
    tz = ZoneInfo(ins.timezone)
    frames_path = layout.measurement_output(cfg, key, FRAMES_FILE)
    if not frames_path.exists():
        raise MissingInputError(f"{frames_path} does not exist: materialize insitu_frames for {key} first")
    rois = configured_rois(cfg)
    vers = versions.made_from(cfg, "roi_series", key)
    chunks: list[dict[str, np.ndarray]] = []
    with h5py.File(frames_path, "r") as f:
        images = f["images"]
        n, ny, nx = images.shape
        check_inside(rois, (ny, nx), str(frames_path))
        step = ins.chunk_frames
        for start in range(0, n, step):
            chunks.append(roi_columns(images[start:start + step], rois))
        table = {"frame": np.arange(n), "file": f["files"].asstr()[()], "time": f["time"][()]}
        table["time_local"] = _iso(table["time"], tz)
        for name in ("exposure_s", "transmission", "background"):
            table[name] = f[name][()]
        mean_image = f["mean_image"][()]
    sample, measurement = layout.split_measurement_key(key)
    df = pd.DataFrame({"sample": sample, "measurement": measurement, **table,
                       **{c: np.concatenate([ch[c] for ch in chunks]) for c in chunks[0]}})
    path = layout.measurement_output(cfg, key, ROI_SERIES_FILE)
    png = roi_image_png(mean_image, rois, ins.background_regions, f"{key}: mean of {n} frames")
    attrs = provenance(cfg.yaml_text(), [str(frames_path)], sample=sample, measurement=measurement, key=key,
                       rois=json.dumps([r.model_dump(mode="json") for r in rois]), **vers)
    _, csv = write_table(df, path, attrs)
    png_path = write_png(path.with_suffix(".png"), png)
    return done_info(path, t0, frames=n, rois=[(r.name, r.role, list(r.y), list(r.x)) for r in rois],
                     columns=list(df.columns), csv_path=csv, png_path=png_path, png=png,
                     summary=_summary(df, [c for c in df.columns if c.startswith(tuple(r.name + "_" for r in rois))]),
                     **vers)


def _summary(df: pd.DataFrame, cols: list[str]) -> dict[str, tuple[float, float, float]]:
    """(first, last, NaN count) of each column: what a scientist glances at."""
    return {c: (float(df[c].iloc[0]), float(df[c].iloc[-1]), int(df[c].isna().sum())) for c in cols}


def make_attenuation_corrected_series(cfg: BeamtimeConfig, sample: str) -> dict:
    """A sample's measurements stitched in time, attenuator changes corrected, per exposure time
    (attenuation_corrected_series.parquet, .csv, .png, and attenuation_changes.csv)."""
    t0 = time.perf_counter()
    ins = cfg.require_insitu()
    tz = ZoneInfo(ins.timezone)
    keys = [layout.measurement_key(sample, m) for m in layout.measurements(ins, sample)]
    paths = {k: layout.measurement_output(cfg, k, ROI_SERIES_FILE) for k in keys}
    included = [k for k in keys if paths[k].exists()]
    missing = [k for k in keys if k not in included]
    if not included:
        raise MissingInputError(f"sample {sample}: no roi_series output yet (looked for {list(paths.values())}); "
                                "materialize roi_series of its measurements first")
    frames = [pd.read_parquet(paths[k]) for k in included]
    cols = [list(f.columns) for f in frames]
    for k, c in zip(included[1:], cols[1:]):
        if c != cols[0]:
            raise RunDataError(f"roi_series of {k} ({paths[k]}) has columns {c}, but {included[0]} has "
                               f"{cols[0]}: the ROIs changed; re-materialize roi_series of all measurements of {sample}")
    rois = json.loads(read_attrs(paths[included[0]])["rois"])
    names = [r["name"] for r in rois if r["role"] == "intensity"]
    if not names:
        raise RunDataError(f"sample {sample}: the ROIs have no intensity ROI to correct")
    icols = intensity_columns([Roi.model_validate(r) for r in rois])
    att = ins.attenuation
    ref_name = att.reference_roi or names[0]
    reference = f"{ref_name}_net" if f"{ref_name}_net" in icols else f"{ref_name}_sum"
    overrides = [o for o in att.overrides if o.sample == sample]
    df, changes = correct_series(pd.concat(frames, ignore_index=True), icols, reference, att, overrides, tz)
    vers = versions.made_from(cfg, "attenuation_corrected_series", sample)
    residuals = [abs(c.residual) for c in changes if np.isfinite(c.residual)]
    worst = max(residuals, default=0.0)
    checks = {
        "continuous_across_changes": quality.CheckOutcome(
            worst <= MAX_RESIDUAL_JUMP,
            f"largest jump left at {len(changes)} attenuator changes: {100 * worst:.2f} % "
            f"(limit {100 * MAX_RESIDUAL_JUMP:.0f} %)",
            {"changes": len(changes), "largest_residual_jump": float(worst)}),
        "all_measurements_included": quality.CheckOutcome(
            not missing, f"{len(included)} of {len(keys)} measurements included"
            + (f"; without roi_series yet: {missing}" if missing else ""),
            {"included": len(included), "measurements": len(keys)}),
    }
    out = layout.output_dir(cfg, sample) / SERIES_FILE
    table = changes_table(changes, tz)
    attrs = provenance(cfg.yaml_text(), [str(paths[k]) for k in included], sample=sample,
                       measurements=json.dumps(included), reference=reference,
                       changes=table.to_json(orient="records"), **vers, **quality.check_attrs(checks))
    _, csv = write_table(df, out, attrs)
    _, changes_csv = write_table(table, out.with_name("attenuation_changes.parquet"), attrs)
    png = series_png(df, reference, [c.time for c in changes],
                     f"{sample}: {len(included)} measurements, {len(changes)} attenuator changes")
    png_path = write_png(out.with_suffix(".png"), png)
    return done_info(out, t0, frames=len(df), measurements=included, missing_measurements=missing,
                     changes=table, reference=reference, csv_path=csv, changes_csv=changes_csv, png_path=png_path,
                     png=png, checks=checks, **vers)
