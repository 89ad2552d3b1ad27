"""Per-frame small data of a DSSC module (the `dssc_smalldata` asset): every frame is an event.

For each frame of one module of a run that the framemask covers: its train, position in the
train, memory cell, frame type (and laser: pumped 1, unpumped 0, other types -1), the train's
scan value and scan point, the X-ray pulse energy it saw (the gas monitor, uJ; NaN for dark
frames), whether the binned cube keeps it (and the framemask's reason if not), and from the
dark-subtracted frame its total, the ROI sums and (with a geometry) its radial profile.
Written as ``<run>/dssc_smalldata_<MM>.h5``, first dimension ``event``.
"""

from __future__ import annotations

import json
import time

import numpy as np
import xarray as xr

from .. import scan
from ..azimuthal import radial_integrator
from ..config import BeamtimeConfig, run_module_key
from ..exceptions import ConfigError, RunDataError
from ..lineage import versions
from ..outputs import atomic_path, done_info, provenance, read_attrs
from ..quality import require_passed
from ..readers import euxfel
from ..rois import check_inside, roi_sums, section_rois
from ..scan import lookup_rows
from . import framemask
from .pipeline import dark_path, module_frames_of
from .preprocess import read_dark

ASSET = "dssc_smalldata"


def pulse_energy_per_frame(cfg: BeamtimeConfig, run: str, train_id: np.ndarray, slot: np.ndarray) -> np.ndarray:
    """The gas monitor's energy (uJ) of the pulse each frame saw (``slot``: its pulse slot, -1 for a dark frame);
    NaN for dark frames and missing data."""
    out = np.full(len(train_id), np.nan)
    rules = cfg.framemask
    if not rules.xgm_source:
        return out
    try:
        ptids, energy = euxfel.train_values(euxfel.open_run(cfg.run_dir(run)), rules.xgm_source, rules.xgm_key)
    except RunDataError:
        return out
    order = np.argsort(ptids)
    row = lookup_rows(ptids[order].astype(np.uint64), train_id, order)
    ok = (row >= 0) & (slot >= 0) & (slot < energy.shape[1])
    out[ok] = energy[row[ok], slot[ok]]
    return out


def make_dssc_smalldata(cfg: BeamtimeConfig, run: str, module: int) -> dict:
    """Per frame of one module: metadata, pulse energy, kept flag, total, ROI sums, radial profile."""
    cfg.require_dssc()
    t0 = time.perf_counter()
    sm = cfg.smalldata
    if sm is None:
        raise ConfigError(f"{cfg.source_file}: dssc_smalldata needs a smalldata section (ROIs, optional geometry)")
    rois = section_rois(sm)
    shape = tuple(cfg.detector.module_shape)
    check_inside(rois, shape, f"module {module:02d}")
    require_passed(read_attrs(cfg.output_path(run, "framemask")), "framemask", cfg.output_path(run, "framemask"))
    bins, units = scan.read_scan_bins(cfg.output_path(run, "scan_variable"))
    fm = framemask.read_framemask(cfg.output_path(run, "framemask"))
    dark = None
    if cfg.dark_run is not None:
        require_passed(read_attrs(dark_path(cfg, module)), "dark", dark_path(cfg, module))
        dark = read_dark(dark_path(cfg, module))
    vers = versions.made_from(cfg, ASSET, run_module_key(run, module))

    frames = module_frames_of(cfg, run, module)
    pos = frames.position.astype(np.int64)
    row = lookup_rows(fm.train_id, frames.train_id, np.arange(len(fm.train_id)))
    wanted = (row >= 0) & (pos < fm.mask.shape[1])
    reason = np.full(frames.nframes, 255, np.uint8)
    reason[wanted] = fm.reason[row[wanted], pos[wanted]]
    slot = fm.slots_of(row, pos, cfg.frame_types)  # each frame's X-ray pulse in its train, -1: none
    point = bins.bins_of(frames.train_id, slot)
    kept = wanted & (reason == 0) & (point >= 0)

    radial = None
    if sm.geometry is not None:
        geom = sm.geometry
        centre = sm.beam_centres.get(f"{module:02d}")
        if centre is not None:
            geom = geom.model_copy(update={"beam_centre_px": centre})
        radial = radial_integrator(geom, shape, np.zeros(shape, dtype=bool), module)
    dark_mean = dark_rows = None
    if dark is not None:
        dark_rows = dark.rows_for(frames.cell_id[wanted], f"module {module:02d} ({frames.source})")
        dark_mean = dark.mean.reshape(len(dark.cell_id), -1).astype(np.float32)
        all_rows = np.zeros(frames.nframes, np.int64)
        all_rows[wanted] = dark_rows
    n = frames.nframes
    total = np.full(n, np.nan)
    roi = np.full((n, len(rois)), np.nan)
    profile = np.full((n, len(radial.radial)), np.nan) if radial is not None else None
    for start, stop, block in euxfel.iter_frame_blocks(frames, cfg.chunk_frames, wanted):
        imgs = block.astype(np.float32)  # (k, pixels), ADU
        if dark_mean is not None:
            imgs -= dark_mean[all_rows[start:stop]]
        imgs = imgs.reshape((stop - start,) + shape)
        total[start:stop] = imgs.sum(axis=(1, 2), dtype=np.float64)
        roi_sums(imgs, rois, out=roi[start:stop])
        if radial is not None:
            profile[start:stop] = radial.profiles(imgs)

    names = cfg.frame_types
    ftype = np.zeros(n, np.int64)
    ftype[wanted] = fm.types_of(row[wanted], pos[wanted], len(names))
    laser = np.array([1 if names[t] == "pumped" else 0 if names[t] == "unpumped" else -1 for t in range(len(names))],
                     dtype=np.int8)[ftype]
    energy = pulse_energy_per_frame(cfg, run, frames.train_id, slot)
    w = np.flatnonzero(wanted)
    scan_value = np.full(n, np.nan)
    has = point >= 0
    scan_value[has] = bins.centres[point[has]]
    data = {
        "train_id": ("event", frames.train_id[w]),
        "pulse": ("event", pos[w].astype(np.int32), {"long_name": "frame position in its train"}),
        "cell_id": ("event", frames.cell_id[w]),
        "frame_type": ("event", np.array(names, dtype=object)[ftype[w]]),
        "laser": ("event", laser[w], {"long_name": "pumped 1, unpumped 0, other frame types -1"}),
        "scan_point": ("event", point[w], {"long_name": "scan point (-1: none)"}),
        "scan": ("event", scan_value[w], {"units": units, "long_name": "scan point value of the train"}),
        "pulse_energy": ("event", energy[w], {"units": "uJ", "long_name": "X-ray pulse energy (gas monitor)"}),
        "kept": ("event", kept[w].astype(np.int8), {"long_name": "used in the binned cube"}),
        "framemask_reason": ("event", reason[w], {"long_name": "framemask reason code (0: kept)"}),
        "total": ("event", total[w], {"units": "ADU", "long_name": "dark-subtracted total"}),
        "roi_sum": (("event", "roi"), roi[w], {"units": "ADU", "long_name": "dark-subtracted ROI sums"}),
    }
    coords = {"event": np.arange(len(w)), "roi": np.array([r.name for r in rois], dtype=object)}
    if radial is not None:
        data["radial_profile"] = (("event", "radial"), profile[w], {"units": "ADU per unit solid angle"})
        coords["radial"] = ("radial", radial.radial, {"units": radial.unit})
    ds = xr.Dataset(data, coords=coords)
    ds.attrs = provenance(cfg.yaml_text(), frames.files, run=run, module=module, frames=len(w), kept=int(kept.sum()),
                          dark_run=cfg.dark_run_key, reasons=json.dumps(framemask.REASONS), **vers)
    path = cfg.output_path(run, ASSET, module)
    with atomic_path(path) as tmp:
        ds.to_netcdf(tmp, engine="h5netcdf")
    return done_info(path, t0, events=len(w), kept=int(kept.sum()), rois=[r.name for r in rois],
                     radial_bins=0 if radial is None else len(radial.radial),
                     events_per_second=len(w) / max(time.perf_counter() - t0, 1e-9), **vers)
