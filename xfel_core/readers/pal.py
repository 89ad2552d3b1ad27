"""PAL-XFEL event files: ``<raw_root>/run=039/scan=001/p0005.h5``, one file per scan point.

Images at ``detector/<hutch>/<detector>/image/block0_values`` (shots, y, x) with their timestamps in
``.../block0_items``; the QBPM's four channels at ``qbpm/<hutch>/<qbpm>/waveforms.chN/block0_values``
(shots, samples; I0 = the sum over channels and samples) with timestamps in ``.../waveforms.ch1/axis1``;
a pandas table ``metadata`` indexed by timestamp (laser flag ``timestamp_info.RATE_*``,
``delay_value`` or ``th_value``). Images, I0 and metadata are joined on the timestamp: a shot
missing from any of them is left out (and counted).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd

from ..config import EventsConfig
from ..exceptions import RunDataError
from .event_run import EventRun, ImageBlock, open_file, positions, require_dataset

RUN_RE = re.compile(r"^run=(\d+)$")


def run_dir(ev: EventsConfig, number: int) -> Path:
    return ev.raw_root / f"run={number:03d}"


def run_files(ev: EventsConfig, number: int) -> list[Path]:
    """The run's scan-point files, in scan order."""
    return sorted(run_dir(ev, number).glob("scan=*/p*.h5"))


def run_numbers(ev: EventsConfig) -> set[int]:
    """The run numbers of the run folders in the raw root."""
    return {int(m.group(1)) for p in ev.raw_root.iterdir() if (m := RUN_RE.match(p.name)) and p.is_dir()}


def _pal_laser_column(meta: pd.DataFrame, path: Path, wanted: str | None) -> str | None:
    if wanted is not None:
        if wanted not in meta.columns:
            raise RunDataError(f"{path}: metadata has no column {wanted!r} (events.pal.laser_column)")
        return wanted
    rates = [c for c in meta.columns if c.startswith("timestamp_info.RATE_") and not c.endswith("_0HZ")]
    return rates[0] if rates else None


def _pal_scan_column(meta: pd.DataFrame, path: Path, wanted: str | None) -> str:
    for c in ([wanted] if wanted else ["delay_value", "th_value"]):
        if c in meta.columns:
            return c
    raise RunDataError(f"{path}: metadata has no scan column {wanted or 'delay_value or th_value'!r} "
                       f"(columns: {list(meta.columns)})")


def read_run(ev: EventsConfig, run: str) -> EventRun:
    """The events of run ``run`` (``r0039``), joined on their timestamps."""
    files = run_files(ev, int(run[1:]))
    if not files:
        raise RunDataError(f"run {run}: no scan=*/p*.h5 files in {run_dir(ev, int(run[1:]))}")
    pal = ev.pal
    img_base = f"detector/{pal.hutch}/{pal.detector}/image"
    qbpm_base = f"qbpm/{pal.hutch}/{pal.qbpm}"
    parts: dict[str, list] = {k: [] for k in ("ts", "i0", "scan", "laser", "tt")}
    blocks, shape, dropped, offset = [], None, {"images": 0, "i0": 0, "metadata": 0}, 0
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
        dropped["images"] += len(img_ts) - len(common)
        dropped["i0"] += len(q_ts) - len(common)
        dropped["metadata"] += len(meta_ts) - len(common)
        rows = positions(img_ts, common, path, "image timestamps")
        laser_col = _pal_laser_column(meta, path, pal.laser_column)
        m = meta.loc[common]
        parts["ts"].append(common)
        parts["i0"].append(i0[positions(q_ts, common, path, "QBPM timestamps")])
        parts["scan"].append(m[_pal_scan_column(meta, path, pal.scan_column)].to_numpy(np.float64))
        parts["laser"].append(m[laser_col].to_numpy(bool) if laser_col else np.ones(len(common), bool))
        if pal.timing_tool_column:
            if pal.timing_tool_column not in meta.columns:
                raise RunDataError(f"{path}: metadata has no column {pal.timing_tool_column!r} "
                                   "(events.pal.timing_tool_column)")
            parts["tt"].append(m[pal.timing_tool_column].to_numpy(np.float64))
        order = np.argsort(rows, kind="stable")
        blocks.append(ImageBlock(path, f"{img_base}/block0_values", rows[order], offset + order))
        offset += len(common)
    return EventRun(run=run, files=files, timestamp=np.concatenate(parts["ts"]), i0=np.concatenate(parts["i0"]),
                    scan=np.concatenate(parts["scan"]), laser=np.concatenate(parts["laser"]),
                    timing_tool=np.concatenate(parts["tt"]) if parts["tt"] else None, blocks=blocks,
                    shape=tuple(shape), dropped=dropped)
