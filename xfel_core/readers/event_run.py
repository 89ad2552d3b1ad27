"""The events of a run, whatever the event-file layout: per-event arrays and where each image is.

The layout readers (:mod:`.pal`, :mod:`.event_h5`) make an :class:`EventRun`; the reductions read
its images block by block, in threads, each into a reused buffer or from a memory map
(:meth:`EventRun.for_each_block`).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

from ..exceptions import RawFileChangedError, RunDataError
from ..frame_kernel import Frames
from .frame_map import frame_byte_offsets, map_frames


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
    #: Per (file, dataset): its memory map and where each image lies in it, or None (read through h5py);
    #: found once per run, shared by the reading threads.
    _maps: dict = field(default_factory=dict, init=False, repr=False, compare=False)
    _maps_lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False, compare=False)

    @property
    def nevents(self) -> int:
        return len(self.timestamp)

    def read_plan(self, chunk: int, events: np.ndarray | None = None) -> list[tuple[ImageBlock, np.ndarray]]:
        """The reads of the images, in blocks of up to ``chunk`` events: (block, positions in it); only ``events``."""
        wanted = None if events is None else np.zeros(self.nevents, dtype=bool)
        if wanted is not None:
            wanted[events] = True
        plan = []
        for block in self.blocks:
            sel = np.arange(len(block.rows)) if wanted is None else np.flatnonzero(wanted[block.events])
            plan += [(block, sel[start:start + chunk]) for start in range(0, len(sel), chunk)]
        return plan

    def read(self, block: ImageBlock, part: np.ndarray, buf: np.ndarray, files: dict,
             mapped: bool = False) -> tuple[np.ndarray, np.ndarray | Frames]:
        """(event indices, float32 images (k, y, x) in ``buf``) of one read of :meth:`read_plan`; ``files``: the
        caller's open HDF5 files by path (kept open between its reads, closed by :func:`close_files`).

        ``mapped``: where the images lie whole and uncompressed in the file, the images as :class:`Frames` of a
        read-only memory map of it instead (no copy, no HDF5 read path; read-only: not to be changed in place).
        """
        if mapped:
            frames = self._mapped(block, part)
            if frames is not None:
                return block.events[part], frames
        f = files.get(block.path)
        if f is None:
            f = files[block.path] = open_file(block.path)
        ds = f[block.dataset]
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
        return block.events[part], out

    def _map(self, block: ImageBlock) -> tuple | None:
        """(mapped data, element offset of each image, byte offsets, bytes per image) of a block's dataset, or None."""
        key = (block.path, block.dataset)
        with self._maps_lock:
            if key not in self._maps:
                try:
                    located = frame_byte_offsets(block.path, block.dataset)
                except (OSError, KeyError, ValueError) as e:  # the h5py read names the file and the problem
                    located = str(e)
                if isinstance(located, str):  # the layout says why not: read through h5py
                    self._maps[key] = None
                else:
                    offsets, dtype = located
                    frame_bytes = int(np.prod(self.shape)) * dtype.itemsize
                    data, elements, _ = map_frames(block.path, offsets, frame_bytes, dtype)
                    self._maps[key] = (data, elements, offsets, frame_bytes)
            return self._maps[key]

    def _mapped(self, block: ImageBlock, part: np.ndarray) -> Frames | None:
        found = self._map(block)
        if found is None:
            return None
        data, elements, offsets, frame_bytes = found
        rows = block.rows[part]
        end = int(offsets[rows].max()) + frame_bytes
        size = os.stat(block.path).st_size
        if size < end:  # touching a mapped page past the end of a file is SIGBUS: check before each read
            raise RawFileChangedError(f"{block.path}: the file was truncated while it was read (now {size} bytes, "
                                      f"the images being read end at byte {end})")
        return Frames(data, elements[rows], self.shape)

    def for_each_block(self, chunk: int, threads: int, fn: Callable[[int, np.ndarray, np.ndarray], None],
                       events: np.ndarray | None = None, plan: list | None = None, mapped: bool = False) -> None:
        """Call ``fn(worker, event indices, images)`` for every block of :meth:`read_plan` (or of ``plan``, a part
        of it), in ``threads`` threads.

        Each worker reads its blocks into a buffer of its own (h5py serialises the reads) and runs ``fn``
        on them while the others read: with a kernel that releases the GIL, reading and reducing overlap
        and the reductions run in parallel (``mapped``: :class:`Frames` of a memory map where the layout
        allows, see :meth:`read`). ``fn`` must write only what its worker or its events own.
        Memory: one block buffer per worker, whatever the run's length.
        """
        plan = self.read_plan(chunk, events) if plan is None else plan
        if threads > 1:
            plan = balanced(plan, threads)
        threads = max(1, min(threads, len(plan)))
        lock, failed = threading.Lock(), threading.Event()
        todo = iter(plan)

        def work(worker: int) -> None:
            buf = np.empty((chunk,) + self.shape, dtype=np.float32)
            files: dict = {}
            try:
                while not failed.is_set():
                    with lock:
                        item = next(todo, None)
                    if item is None:
                        return
                    fn(worker, *self.read(*item, buf, files, mapped))
            except BaseException:
                failed.set()  # the other workers stop after their current block
                raise
            finally:
                close_files(files)

        if threads == 1:
            work(0)
            return
        with ThreadPoolExecutor(threads) as pool:
            for future in [pool.submit(work, w) for w in range(threads)]:
                future.result()  # the first error, named by the reader or the kernel


#: With several threads, a run is cut into at least this many reads per thread: the threads then end within
#: a small read of each other (7 reads of 64 images for 2 threads left one thread idle for a seventh of the pass).
READS_PER_THREAD = 8


def balanced(plan: list[tuple[ImageBlock, np.ndarray]], threads: int) -> list[tuple[ImageBlock, np.ndarray]]:
    """The reads of ``plan`` cut into smaller ones where it has fewer than READS_PER_THREAD per thread."""
    want = READS_PER_THREAD * threads
    if len(plan) >= want:
        return plan
    total = sum(len(part) for _, part in plan)
    size = max(1, -(-total // want))
    return [(block, part[i:i + size]) for block, part in plan for i in range(0, len(part), size)]


def close_files(files: dict) -> None:
    """Close the HDF5 files of a reader's ``files``."""
    for f in files.values():
        f.close()


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
