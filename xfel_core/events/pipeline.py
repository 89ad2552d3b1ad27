"""One function per event asset: event_smalldata (per run) and event_cube (per run); nothing here imports Dagster.

Outputs go to ``<processed_root>/events/<run>/``. event_smalldata holds per event (the first
dimension, the smalldata convention) the I0, scan value (nominal and timing-tool corrected),
laser flag, ROI sums, radial profile, the flag of every anomaly rule and the normalisation
factor, plus the dark, the mask and the radial bins; event_cube bins the kept events' images
by the corrected scan value, laser on ("pumped") and off ("unpumped"), in the binned_cube format.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import xarray as xr

from .. import previews
from ..azimuthal import read_mask
from ..config import BeamtimeConfig, EventsConfig, run_key
from ..cube import cube_from_sums, write_cube
from ..exceptions import MissingInputError, RunDataError
from ..lineage import versions
from ..outputs import atomic_path, done_info, provenance, write_png
from ..readers.events import read_run
from ..rois import check_inside, section_rois
from ..scan import bin_scan_values
from . import anomalies
from .smalldata import accumulate_groups, mean_image, reduce_run

SMALLDATA_FILE = "event_smalldata.h5"
CUBE_FILE = "event_cube.h5"
FRAME_TYPES = ["pumped", "unpumped"]  # laser on, laser off: the binned_cube names



def join_report(missing: dict[str, int]) -> str:
    """The timestamp join in words: "shots missing from the QBPM list: 3; from the metadata list: 1"."""
    parts = [f"from the {name} list: {n}" for name, n in missing.items() if n]
    return "shots missing " + "; ".join(parts) if parts else "no shot missing from any timestamp list"

def output_path(cfg: BeamtimeConfig, run: str, name: str) -> Path:
    return cfg.processed_root / "events" / run / name


def dark_image(ev: EventsConfig) -> tuple[np.ndarray | None, str]:
    """(mean image of the dark run or None, its source version)."""
    if ev.dark_run is None:
        return None, versions.NO_DARK
    dark_key = run_key(ev.dark_run)
    run = read_run(ev, dark_key)
    return mean_image(run, ev.chunk_events).astype(np.float32), versions.digest(
        dark_key, versions.files_fingerprint(run.files))


def normalisation(ev: EventsConfig, i0: np.ndarray, roi: np.ndarray, names: list[str], kept: np.ndarray) -> np.ndarray:
    """Per event, the factor that normalises it: mean(I0) / I0, or a region's mean intensity / its intensity."""
    n = ev.normalisation
    if n.by == "none":
        return np.ones(len(i0))
    if n.by == "i0":
        ref = i0
    else:
        if n.region not in names:
            raise RunDataError(f"normalisation.region {n.region!r} is not one of the ROIs {names}")
        ref = roi[:, names.index(n.region)]
    if not kept.any():  # every shot rejected: nothing to normalise to
        return np.full(len(i0), np.nan)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(ref > 0, np.mean(ref[kept]) / ref, np.nan)


def make_event_smalldata(cfg: BeamtimeConfig, run: str) -> dict:
    """Per event of a run: I0, scan value, laser, ROI sums, radial profile (pyFAI geometry), anomaly flags."""
    t0 = time.perf_counter()
    ev = cfg.require_events()
    rois = section_rois(ev)
    raw = read_run(ev, run)
    if raw.nevents == 0:
        raise RunDataError(f"run {run}: no events in {[str(p) for p in raw.files]}")
    dark, dark_version = dark_image(ev)
    if dark is not None and dark.shape != raw.shape:
        raise RunDataError(f"run {run}: images of {raw.shape} pixels, the dark run's have {dark.shape}")
    check_inside(rois, raw.shape, f"run {run}")
    vers = versions.made_from(cfg, "event_smalldata", run)

    mask = read_mask(ev.geometry, raw.shape)
    red, hot, radial, reads = reduce_run(raw, dark, mask, rois, ev.geometry, ev.chunk_events,
                                         cfg.execution.kernel_threads, ev.anomalies.hot_pixel_factor)
    mask = mask | hot

    scan_corrected = raw.scan + (raw.timing_tool * ev.timing_tool_scale if raw.timing_tool is not None else 0.0)
    bins = bin_scan_values(np.arange(raw.nevents), scan_corrected, ev.binning)
    # The ratio and linear-model rules compare shots of one nominal scan point and laser state
    # (the toolkit's per-scan-point filtering), before the timing-tool correction moves them.
    _, nominal_point = np.unique(raw.scan, return_inverse=True)
    rule_groups = nominal_point * 2 + (~raw.laser).astype(np.int64)
    names = [r.name for r in rois]
    a = ev.anomalies
    ratio_col = None
    if names:
        ratio_name = a.ratio_roi or names[0]
        if ratio_name not in names:
            raise RunDataError(f"anomalies.ratio_roi {ratio_name!r} is not one of the ROIs {names}")
        ratio_col = red["roi"][:, names.index(ratio_name)]
    flags = anomalies.shot_flags(a, raw.i0, ratio_col, red["total"], red["peak"], rule_groups)
    kept = ~np.logical_or.reduce(list(flags.values()))
    factor = normalisation(ev, raw.i0, red["roi"], names, kept)

    ds = xr.Dataset(
        {
            "timestamp": ("event", raw.timestamp, {"long_name": "shot timestamp"}),
            "i0": ("event", raw.i0, {"units": "arb.", "long_name": "incoming intensity monitor"}),
            "scan": ("event", raw.scan, {"units": ev.scan_units, "long_name": "nominal scan value"}),
            "scan_corrected": ("event", scan_corrected, {"units": ev.scan_units,
                                                         "long_name": "scan value + timing-tool correction"}),
            "scan_point": ("event", bins.bin_index, {"long_name": "scan point of the event (-1: none)"}),
            "laser": ("event", raw.laser.astype(np.int8), {"long_name": "pump laser on (1) / off (0)"}),
            "total": ("event", red["total"], {"units": "ADU", "long_name": "total intensity"}),
            "peak": ("event", red["peak"], {"units": "ADU", "long_name": "largest pixel"}),
            "roi_sum": (("event", "roi"), red["roi"], {"units": "ADU", "long_name": "ROI sums"}),
            "radial_profile": (("event", "radial"), red["profile"],
                               {"units": "ADU per unit solid angle", "long_name": "azimuthal average"}),
            "norm_factor": ("event", factor, {"long_name": f"normalisation factor ({ev.normalisation.by})"}),
            "radial_profile_norm": (("event", "radial"), red["profile"] * factor[:, None],
                                    {"units": "ADU per unit solid angle", "long_name": "normalised azimuthal average"}),
            **{f"anomaly_{k}": ("event", v.astype(np.int8), {"long_name": f"rejected by rule {k}"})
               for k, v in flags.items()},
            "kept": ("event", kept.astype(np.int8), {"long_name": "no anomaly rule rejects the shot"}),
            "scan_point_value": ("scan_point_index", bins.centres, {"units": ev.scan_units}),
            "dark": (("y", "x"), dark if dark is not None else np.zeros(raw.shape, np.float32), {"units": "ADU"}),
            "mask": (("y", "x"), mask.astype(np.int8), {"long_name": "masked pixel (config mask or hot)"}),
            "hot_pixels": (("y", "x"), hot.astype(np.int8)),
        },
        coords={"event": np.arange(raw.nevents), "roi": np.array(names, dtype=object),
                "radial": ("radial", radial.radial, {"units": radial.unit}),
                "radial_edges": ("radial_edge", radial.edges, {"units": radial.unit})},
    )
    if raw.timing_tool is not None:
        ds["timing_tool"] = ("event", raw.timing_tool, {"long_name": "timing-tool correction (raw units)"})
    counts = {k: int(v.sum()) for k, v in flags.items()}
    ds.attrs = provenance(cfg.yaml_text(), [str(p) for p in raw.files], run=run, layout=ev.layout,
                          events=raw.nevents, kept=int(kept.sum()), rejected_by_rule=json.dumps(counts),
                          shots_missing_from=json.dumps(raw.missing), timestamp_join=join_report(raw.missing),
                          scan_source=raw.scan_name, reads_per_image=reads, dark_version=dark_version, **vers)
    path = output_path(cfg, run, SMALLDATA_FILE)
    with atomic_path(path) as tmp:
        ds.to_netcdf(tmp, engine="h5netcdf")
    return done_info(path, t0, events=raw.nevents, kept=int(kept.sum()), rejected_by_rule=counts,
                     shots_missing_from=raw.missing, timestamp_join=join_report(raw.missing), scan_source=raw.scan_name,
                     reads_per_image=reads,
                     hot_pixels=int(hot.sum()), masked_pixels=int(mask.sum()),
                     scan_points=bins.nbins, laser_on=int(raw.laser.sum()), rois=names, radial_bins=len(radial.radial),
                     radial_unit=radial.unit, has_timing_tool=raw.timing_tool is not None,
                     events_per_second=raw.nevents / max(time.perf_counter() - t0, 1e-9),
                     profile_mean=np.nanmean(red["profile"][kept], axis=0) if kept.any() else None,
                     radial=radial.radial, **vers)


def make_event_cube(cfg: BeamtimeConfig, run: str) -> dict:
    """Kept events' normalised images binned by corrected scan value x laser on / off (binned_cube format)."""
    t0 = time.perf_counter()
    ev = cfg.require_events()
    sd_path = output_path(cfg, run, SMALLDATA_FILE)
    if not sd_path.exists():
        raise MissingInputError(f"{sd_path} does not exist: materialize event_smalldata for {run} first")
    vers = versions.made_from(cfg, "event_cube", run)
    with xr.open_dataset(sd_path, engine="h5netcdf") as sd:
        sd = sd.load()
    raw = read_run(ev, run)
    if raw.nevents != sd.sizes["event"] or not np.array_equal(raw.timestamp, sd["timestamp"].values):
        raise RunDataError(f"run {run}: its raw files changed since {sd_path} was made; "
                           "rematerialize event_smalldata")
    centres = sd["scan_point_value"].values
    point = sd["scan_point"].values
    kept = (sd["kept"].values == 1) & (point >= 0) & np.isfinite(sd["norm_factor"].values)
    groups = np.where(point >= 0, point * 2 + (1 - sd["laser"].values.astype(np.int64)), -1)
    dark = sd["dark"].values if ev.dark_run is not None else None
    sums, sumsq, counts = accumulate_groups(raw, np.flatnonzero(kept), groups, sd["norm_factor"].values,
                                            2 * len(centres), dark, sd["mask"].values.astype(bool), ev.chunk_events,
                                            cfg.execution.kernel_threads)
    ny, nx = raw.shape
    module = {"sum": sums.reshape(len(centres), 2, ny, nx), "sumsq": sumsq.reshape(len(centres), 2, ny, nx),
              "count": counts.reshape(len(centres), 2), "scan_variable": centres, "frame_type": FRAME_TYPES}
    events_per_point = np.bincount(point[point >= 0], minlength=len(centres))
    ds = cube_from_sums({0: module}, events_per_point, ev.scan_units,
                        names={0: str(sd_path)}, value_units="ADU (normalised)")
    ds["trains"].attrs.update(units="events", long_name="events with this scan point")
    ds.attrs = provenance(cfg.yaml_text(), [str(sd_path)] + [str(p) for p in raw.files], run=run,
                          frames_kept=int(counts.sum()), normalisation=ev.normalisation.by, **vers)
    # The picture comes before the write: a failed step leaves the previous cube.
    png = previews.cube_png(ds, f"{cfg.name} {run}: {int(counts.sum())} events",
                            previews.first_intensity_roi(section_rois(ev)))
    path = output_path(cfg, run, CUBE_FILE)
    write_cube(path, ds)
    write_png(path.with_suffix(".png"), png)  # the run table's thumbnail
    return done_info(path, t0, scan_points=len(centres), centres=centres, units=ev.scan_units,
                     frame_types=FRAME_TYPES, events_kept=int(counts.sum()), counts=counts.reshape(len(centres), 2),
                     has_difference="difference" in ds, png=png, **vers)


