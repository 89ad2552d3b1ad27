"""The events of a run, whatever the event-file layout: per-event arrays and where each image is.

The layout readers (:mod:`.pal`, :mod:`.event_h5`) make an :class:`EventRun`; the reductions read
its images block by block into a reused buffer (:meth:`EventRun.iter_images`).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

from ..exceptions import RunDataError


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
    #: Shots missing from each of the layout's timestamp lists (so left out by the join): {"QBPM": 3, ...}.
    missing: dict[str, int] = field(default_factory=dict)
    scan_name: str = ""  # where the scan value was read (a metadata column, a dataset)

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


def require_dataset(f: h5py.File, name: str, path: Path) -> h5py.Dataset:
    """The dataset ``name`` of the open file, or a RunDataError naming the file and the dataset."""
    if name not in f or not isinstance(f[name], h5py.Dataset):
        raise RunDataError(f"{path}: no dataset {name!r} (check the events section of the config)")
    return f[name]


def open_file(path: Path) -> h5py.File:
    """The HDF5 file open for reading, or a RunDataError naming it (truncated, still being written)."""
    try:
        return h5py.File(path, "r")
    except (OSError, ValueError) as e:
        raise RunDataError(f"{path}: not a readable HDF5 file ({e}); truncated or still being written?") from None


def positions(sorted_or_not: np.ndarray, wanted: np.ndarray, path: Path, what: str) -> np.ndarray:
    """Index in ``sorted_or_not`` of each value of ``wanted`` (all present); repeated timestamps are an error."""
    order = np.argsort(sorted_or_not, kind="stable")
    s = sorted_or_not[order]
    if len(s) > 1 and np.any(s[1:] == s[:-1]):
        raise RunDataError(f"{path}: repeated {what}")
    return order[np.searchsorted(s, wanted)]
