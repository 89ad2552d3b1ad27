"""PAL-XFEL event files as the facility writes them: ``<raw_root>/run=039/scan=001/p0005.h5``.

A run folder holds one or more scan folders, each with one file per scan point (``p0001.h5``,
``p0002.h5``, ...). In a file: images at ``detector/<hutch>/<detector>/image/block0_values`` (shots,
y, x) with their timestamps in ``.../block0_items``; the QBPM's four channels at
``qbpm/<hutch>/<qbpm>/waveforms.chN/block0_values`` (shots, samples; I0 = the sum over channels and
samples) with timestamps in ``.../waveforms.ch1/axis1``; a pandas table ``metadata`` indexed by
timestamp, with the timing system's rate flags ``timestamp_info.RATE_<HX|SX>_<rate>`` (the pump
fired where the pump rate's flag is true) and the scan value ``th_value`` or ``delay_value``.
Images, I0 and metadata are joined on the timestamp, as the PAL-XFEL toolkit's loader does: a shot
missing from any of the three lists is left out, and counted per list.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd

from ..config import EventsConfig, PalLayoutConfig
from ..exceptions import RunDataError
from .event_run import EventRun, ImageBlock, open_file, positions, require_dataset

#: The three timestamp lists of a file, as the shots missing from each are reported.
LISTS = ("images", "QBPM", "metadata")
RUN_RE = re.compile(r"^run=(\d+)$")


def run_dir(ev: EventsConfig, number: int) -> Path:
    return ev.raw_root / f"run={number:03d}"


POINT_RE = re.compile(r"^scan=(\d+)/p(\d+)\.h5$")


def run_files(ev: EventsConfig, number: int) -> list[Path]:
    """The run's scan-point files, by scan folder and point number (p9999 before p10000, as the toolkit sorts)."""
    top = run_dir(ev, number)
    found = [(m, p) for p in top.glob("scan=*/p*.h5") if (m := POINT_RE.match(p.relative_to(top).as_posix()))]
    return [p for m, p in sorted(found, key=lambda mp: (int(mp[0].group(1)), int(mp[0].group(2))))]


def run_numbers(ev: EventsConfig) -> set[int]:
    """The run numbers of the run folders in the raw root."""
    return {int(m.group(1)) for p in ev.raw_root.iterdir() if (m := RUN_RE.match(p.name)) and p.is_dir()}


def _laser(meta: pd.DataFrame, path: Path, pal: PalLayoutConfig) -> np.ndarray:
    """The pump flag per row of ``meta``: its rate column (events.pal.xray_line and .pump_rate, or .laser_column)."""
    name = pal.laser_name()
    if name is None:
        return np.zeros(len(meta), dtype=bool)
    if name not in meta.columns:
        rates = [c for c in meta.columns if str(c).startswith("timestamp_info.RATE_")]
        key = "events.pal.laser_column" if pal.laser_column else "events.pal.xray_line and .pump_rate"
        raise RunDataError(f"{path}: metadata has no column {name!r} (from {key}); its rate columns: "
                           f"{rates or 'none'} (pump_rate: 0HZ for a run without pump)")
    return meta[name].to_numpy(bool)


def _scan_column(metas: list[pd.DataFrame], files: list[Path], pal: PalLayoutConfig) -> str:
    """The metadata column of the scan value: events.pal.scan_column, else the first of .scan_columns in every
    file whose values vary over the run, else the first in every file."""
    wanted = [pal.scan_column] if pal.scan_column else list(pal.scan_columns)
    present = [c for c in wanted if all(c in m.columns for m in metas)]
    if not present:
        key = "events.pal.scan_column" if pal.scan_column else "events.pal.scan_columns"
        which = [f"{f} has {[c for c in wanted if c in m.columns] or 'none of them'} (columns: {list(m.columns)})"
                 for f, m in zip(files, metas) if not set(wanted) <= set(m.columns)]
        raise RunDataError(f"no scan column of {wanted} ({key}) is in the metadata of every file of the run: "
                           + "; ".join(which[:3]) + (f"; and {len(which) - 3} more files" if len(which) > 3 else ""))
    for c in present:
        values = np.concatenate([m[c].to_numpy(np.float64) for m in metas])
        if np.isfinite(values).any() and np.nanmax(values) > np.nanmin(values):
            return c
    return present[0]


def read_run(ev: EventsConfig, run: str) -> EventRun:
    """The events of run ``run`` (``r0039``), joined on their timestamps, in file order (scan folder, point)."""
    files = run_files(ev, int(run[1:]))
    if not files:
        raise RunDataError(f"run {run}: no scan=*/p*.h5 files in {run_dir(ev, int(run[1:]))}")
    pal = ev.pal
    img_base = f"detector/{pal.hutch}/{pal.detector}/image"
    qbpm_base = f"qbpm/{pal.hutch}/{pal.qbpm}"
    parts: dict[str, list] = {k: [] for k in ("ts", "i0", "laser", "tt")}
    metas: list[pd.DataFrame] = []
    blocks, shape, offset = [], None, 0
    missing = dict.fromkeys(LISTS, 0)
    for path in files:
        with open_file(path) as f:
            images = require_dataset(f, f"{img_base}/block0_values", path)
            img_ts = require_dataset(f, f"{img_base}/block0_items", path)[()].astype(np.int64)
            if images.ndim != 3 or images.shape[0] != len(img_ts):
                raise RunDataError(f"{path}: {img_base}/block0_values has shape {images.shape} but "
                                   f"{img_base}/block0_items has {len(img_ts)} timestamps")
            if shape is None:
                shape = images.shape[1:]
            elif images.shape[1:] != shape:
                raise RunDataError(f"{path}: images of {images.shape[1:]} pixels, {files[0]} has {shape}")
            q_ts = require_dataset(f, f"{qbpm_base}/waveforms.ch1/axis1", path)[()].astype(np.int64)
            i0 = np.zeros(len(q_ts))
            for ch in range(1, 5):
                w = require_dataset(f, f"{qbpm_base}/waveforms.ch{ch}/block0_values", path)
                if w.shape[0] != len(q_ts):
                    raise RunDataError(f"{path}: {w.name} has {w.shape[0]} shots but "
                                       f"{qbpm_base}/waveforms.ch1/axis1 has {len(q_ts)} timestamps")
                i0 += w[()].reshape(len(q_ts), -1).sum(axis=1)
        try:
            meta = pd.read_hdf(path, key="metadata")
        except (KeyError, OSError, ValueError, TypeError) as e:
            raise RunDataError(f"{path}: no readable pandas table 'metadata' ({e})") from None
        meta_ts = np.asarray(meta.index, dtype=np.int64)
        common = np.intersect1d(np.intersect1d(img_ts, q_ts), meta_ts)
        shots = np.union1d(np.union1d(img_ts, q_ts), meta_ts)
        for name, ts in zip(LISTS, (img_ts, q_ts, meta_ts)):
            missing[name] += len(np.setdiff1d(shots, ts))
        rows = positions(img_ts, common, path, "image timestamps")
        m = meta.iloc[positions(meta_ts, common, path, "metadata timestamps")]
        metas.append(m)
        parts["ts"].append(common)
        parts["i0"].append(i0[positions(q_ts, common, path, "QBPM timestamps")])
        parts["laser"].append(_laser(m, path, pal))
        if pal.timing_tool_column:
            if pal.timing_tool_column not in meta.columns:
                raise RunDataError(f"{path}: metadata has no column {pal.timing_tool_column!r} "
                                   "(events.pal.timing_tool_column)")
            parts["tt"].append(m[pal.timing_tool_column].to_numpy(np.float64))
        order = np.argsort(rows, kind="stable")
        blocks.append(ImageBlock(path, f"{img_base}/block0_values", rows[order], offset + order))
        offset += len(common)
    scan = _scan_column(metas, files, pal)
    return EventRun(run=run, files=files, timestamp=np.concatenate(parts["ts"]), i0=np.concatenate(parts["i0"]),
                    scan=np.concatenate([m[scan].to_numpy(np.float64) for m in metas]),
                    laser=np.concatenate(parts["laser"]),
                    timing_tool=np.concatenate(parts["tt"]) if parts["tt"] else None, blocks=blocks,
                    shape=tuple(shape), missing=missing, scan_name=scan)
