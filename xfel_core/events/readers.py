"""Read event files: which events a run has (timestamp, I0, scan value, laser, timing tool) and their images.

Two layouts:

- **pal** (PAL-XFEL): ``<raw_root>/run=039/scan=001/p0005.h5``, one file per scan point. Images
  at ``detector/<hutch>/<detector>/image/block0_values`` (shots, y, x) with their timestamps in
  ``.../block0_items``; the QBPM's four channels at ``qbpm/<hutch>/<qbpm>/waveforms.chN/block0_values``
  (shots, samples; I0 = the sum over channels and samples) with timestamps in ``.../waveforms.ch1/axis1``;
  a pandas table ``metadata`` indexed by timestamp (laser flag ``timestamp_info.RATE_*``,
  ``delay_value`` or ``th_value``). Images, I0 and metadata are joined on the timestamp: a shot
  missing from any of them is left out (and counted).
- **generic**: one file per run, dataset paths from the config; every per-event dataset must
  have as many entries as there are images.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np
import pandas as pd

from ..config import EventsConfig, run_key
from ..exceptions import RunDataError

PAL_RUN_RE = re.compile(r"^run=(\d+)$")
GENERIC_RUN_RE_CACHE: dict[str, re.Pattern] = {}


@dataclass
class ImageBlock:
    """Where some events' images are: rows of one (events, y, x) dataset of one file."""

    path: Path
    dataset: str
    rows: np.ndarray  # (k,) row of each event in the dataset, increasing
    events: np.ndarray  # (k,) index of each event in the run


@dataclass
class EventRun:
    """The events of a run, in file order; per-event arrays are (events,)."""

    run: str
    files: list[Path]
    timestamp: np.ndarray  # int64
    i0: np.ndarray  # float64
    scan: np.ndarray  # float64, nominal scan value
    laser: np.ndarray  # bool, pump laser on
    timing_tool: np.ndarray | None  # float64 correction in the timing tool's units, or None
    blocks: list[ImageBlock]
    shape: tuple[int, int]  # (y, x) pixels of an image
    dropped: dict[str, int] = field(default_factory=dict)  # shots left out by the timestamp join, by list

    @property
    def nevents(self) -> int:
        return len(self.timestamp)

    def iter_images(self, chunk: int, events: np.ndarray | None = None) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(event indices, float32 images (k, y, x)) in blocks of up to ``chunk`` events; only ``events`` if given."""
        wanted = None if events is None else np.zeros(self.nevents, dtype=bool)
        if wanted is not None:
            wanted[events] = True
        buf = np.empty((chunk,) + self.shape, dtype=np.float32)  # reused
        for block in self.blocks:
            sel = np.arange(len(block.rows)) if wanted is None else np.flatnonzero(wanted[block.events])
            if sel.size == 0:
                continue
            with h5py.File(block.path, "r") as f:
                ds = f[block.dataset]
                for start in range(0, len(sel), chunk):
                    part = sel[start:start + chunk]
                    rows = block.rows[part]
                    out = buf[: len(part)]
                    lo, hi = int(rows[0]), int(rows[-1]) + 1
                    try:
                        if hi - lo == len(rows):  # contiguous rows: one read straight into the buffer
                            ds.read_direct(out, np.s_[lo:hi])
                        else:  # one read of the span, then the wanted rows
                            out[:] = ds[lo:hi][rows - lo]
                    except (OSError, ValueError) as e:
                        raise RunDataError(f"{block.path}: cannot read {block.dataset} rows {lo}-{hi - 1}: {e}") from None
                    yield block.events[part], out


def _dataset(f: h5py.File, name: str, path: Path) -> h5py.Dataset:
    if name not in f or not isinstance(f[name], h5py.Dataset):
        raise RunDataError(f"{path}: no dataset {name!r} (check the events section of the config)")
    return f[name]


def _open(path: Path) -> h5py.File:
    try:
        return h5py.File(path, "r")
    except (OSError, ValueError) as e:
        raise RunDataError(f"{path}: not a readable HDF5 file ({e}); truncated or still being written?") from None


# ---------------------------------------------------------------- run discovery


def pal_run_dir(ev: EventsConfig, number: int) -> Path:
    return ev.raw_root / f"run={number:03d}"


def generic_run_file(ev: EventsConfig, number: int) -> Path:
    return ev.raw_root / ev.generic.file.format(run=number)


def run_files(ev: EventsConfig, run: str) -> list[Path]:
    """The raw files of a run (pal: its scan-point files in scan order; generic: its file)."""
    number = int(run[1:])
    if ev.layout == "pal":
        return sorted(pal_run_dir(ev, number).glob("scan=*/p*.h5"))
    path = generic_run_file(ev, number)
    return [path] if path.is_file() else []


def event_runs(ev: EventsConfig) -> list[str]:
    """Run keys (``r0039``) found in the raw root, the dark run and ignored runs left out."""
    if not ev.raw_root.is_dir():
        return []
    numbers = set()
    if ev.layout == "pal":
        for p in ev.raw_root.iterdir():
            m = PAL_RUN_RE.match(p.name)
            if m and p.is_dir():
                numbers.add(int(m.group(1)))
    else:
        pattern = GENERIC_RUN_RE_CACHE.setdefault(ev.generic.file, _file_pattern(ev.generic.file))
        for p in ev.raw_root.rglob("*"):
            m = pattern.match(str(p.relative_to(ev.raw_root)))
            if m and p.is_file():
                numbers.add(int(m.group(1)))
    skip = set(ev.ignore_runs) | ({ev.dark_run} if ev.dark_run is not None else set())
    return [run_key(n) for n in sorted(numbers - skip) if n <= 9999]


def _file_pattern(template: str) -> re.Pattern:
    """A regex matching ``template`` with its ``{run...}`` field as the run number."""
    head, _, rest = template.partition("{run")
    _, _, tail = rest.partition("}")
    return re.compile("^" + re.escape(head) + r"(\d+)" + re.escape(tail) + "$")


# ---------------------------------------------------------------- PAL-XFEL


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


def read_pal_run(ev: EventsConfig, run: str) -> EventRun:
    files = run_files(ev, run)
    if not files:
        raise RunDataError(f"run {run}: no scan=*/p*.h5 files in {pal_run_dir(ev, int(run[1:]))}")
    pal = ev.pal
    img_base = f"detector/{pal.hutch}/{pal.detector}/image"
    qbpm_base = f"qbpm/{pal.hutch}/{pal.qbpm}"
    parts: dict[str, list] = {k: [] for k in ("ts", "i0", "scan", "laser", "tt")}
    blocks, shape, dropped, offset = [], None, {"images": 0, "i0": 0, "metadata": 0}, 0
    for path in files:
        with _open(path) as f:
            images = _dataset(f, f"{img_base}/block0_values", path)
            img_ts = _dataset(f, f"{img_base}/block0_items", path)[()].astype(np.int64)
            if images.ndim != 3 or images.shape[0] != len(img_ts):
                raise RunDataError(f"{path}: {img_base}/block0_values has shape {images.shape} but "
                                   f"{img_base}/block0_items has {len(img_ts)} timestamps")
            if shape is None:
                shape = images.shape[1:]
            elif images.shape[1:] != shape:
                raise RunDataError(f"{path}: images of {images.shape[1:]} pixels, {files[0]} has {shape}")
            q_ts = _dataset(f, f"{qbpm_base}/waveforms.ch1/axis1", path)[()].astype(np.int64)
            i0 = np.zeros(len(q_ts))
            for ch in range(1, 5):
                w = _dataset(f, f"{qbpm_base}/waveforms.ch{ch}/block0_values", path)
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
        rows = _positions(img_ts, common, path, "image timestamps")
        laser_col = _pal_laser_column(meta, path, pal.laser_column)
        m = meta.loc[common]
        parts["ts"].append(common)
        parts["i0"].append(i0[_positions(q_ts, common, path, "QBPM timestamps")])
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


def _positions(sorted_or_not: np.ndarray, wanted: np.ndarray, path: Path, what: str) -> np.ndarray:
    """Index in ``sorted_or_not`` of each value of ``wanted`` (all present); repeated timestamps are an error."""
    order = np.argsort(sorted_or_not, kind="stable")
    s = sorted_or_not[order]
    if len(s) > 1 and np.any(s[1:] == s[:-1]):
        raise RunDataError(f"{path}: repeated {what}")
    return order[np.searchsorted(s, wanted)]


# ---------------------------------------------------------------- generic


def read_generic_run(ev: EventsConfig, run: str) -> EventRun:
    g = ev.generic
    path = generic_run_file(ev, int(run[1:]))
    if not path.is_file():
        raise RunDataError(f"run {run}: no file {path} (events.generic.file {g.file!r})")
    with _open(path) as f:
        images = _dataset(f, g.images, path)
        if images.ndim != 3:
            raise RunDataError(f"{path}: {g.images} has shape {images.shape}; expected (events, y, x)")
        n = images.shape[0]

        def per_event(name: str, dtype) -> np.ndarray:
            d = _dataset(f, name, path)
            values = d[()]
            if values.ndim > 1 and values.shape[1:] == (1,) * (values.ndim - 1):
                values = values.reshape(len(values))
            if values.shape != (n,):
                raise RunDataError(f"{path}: {name} has shape {values.shape} but {g.images} has {n} events; "
                                   "every per-event dataset needs one value per image")
            return values.astype(dtype)

        ts = per_event(g.timestamps, np.int64) if g.timestamps else np.arange(n, dtype=np.int64)
        i0 = per_event(g.i0, np.float64)
        scan = per_event(g.scan, np.float64)
        laser = per_event(g.laser, bool) if g.laser else np.ones(n, bool)
        tt = per_event(g.timing_tool, np.float64) if g.timing_tool else None
        shape = images.shape[1:]
    return EventRun(run=run, files=[path], timestamp=ts, i0=i0, scan=scan, laser=laser, timing_tool=tt,
                    blocks=[ImageBlock(path, g.images, np.arange(n), np.arange(n))], shape=tuple(shape))


def read_run(ev: EventsConfig, run: str) -> EventRun:
    """The events of a run in the configured layout."""
    return read_pal_run(ev, run) if ev.layout == "pal" else read_generic_run(ev, run)
