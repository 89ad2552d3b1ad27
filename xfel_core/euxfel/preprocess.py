"""Reduce one detector module of one run: sum, sum of squares and count per (scan point, frame type).

The `preprocessed_module` asset: frames are read in blocks, the dark of their memory cell is
subtracted, each frame goes to the group of its train's scan point and its frame type (its
position in the train modulo the frame pattern), and masked frames are skipped. The `dark`
asset is the same reduction grouped by memory cell instead.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

from .. import binning_kernel
from ..exceptions import MissingInputError, RunDataError
from ..outputs import atomic_h5
from ..readers import frame_map
from ..readers.euxfel import ModuleFrames, frame_ranges, read_entry_blocks, read_mask_blocks
from ..scan import ScanBins, lookup_rows
from .framemask import REASONS, FrameMask


@dataclass
class DarkConstants:
    """Per memory cell: the mean and standard deviation of each pixel in a dark run (ADU)."""

    cell_id: np.ndarray  # (cells,)
    mean: np.ndarray  # (cells, y, x) float32
    std: np.ndarray  # (cells, y, x) float32
    count: np.ndarray  # (cells,) frames averaged
    source: str = ""
    #: A short content hash of the constants, recorded in everything made with them.
    version: str = ""

    def rows_for(self, cells: np.ndarray, what: str) -> np.ndarray:
        """Row of each memory cell in the constants; fails naming cells the dark lacks."""
        order = np.argsort(self.cell_id)
        rows = lookup_rows(self.cell_id[order], cells, order)
        if (rows < 0).any():
            missing = np.unique(np.asarray(cells)[rows < 0])
            raise RunDataError(f"{what}: memory cells {missing.tolist()[:20]} have no dark "
                               f"(the dark {self.source} has cells {self.cell_id.tolist()[:20]}...)")
        return rows


def constants_version(cell_id: np.ndarray, mean: np.ndarray) -> str:
    """A short content hash of dark constants (cells and means)."""
    h = hashlib.sha256(np.ascontiguousarray(cell_id, np.int64).tobytes())
    h.update(np.ascontiguousarray(mean, np.float32).tobytes())
    return h.hexdigest()[:16]


#: How the frames of a file with a layout that can be read directly are read.
DIRECT_PATH = "memory-mapped file"


@dataclass
class FrameStats:
    """How many frames were read and why frames were not used."""

    total: int = 0
    kept: int = 0
    rejected: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    bytes_read: int = 0
    #: How each file's frames were read: DIRECT_PATH or "h5py blocks (why not direct)".
    read_paths: dict[str, str] = field(default_factory=dict)


def assign_groups(frames: ModuleFrames, scan: ScanBins, fm: FrameMask, ntypes: int,
                  names: list[str] | None = None) -> tuple[np.ndarray, FrameStats]:
    """Group of every frame (scan point x frame types + frame type), -1 if not used; and why. With per-pulse
    scan values (``names``: the frame types) a frame's scan point is its X-ray pulse's."""
    n = frames.nframes
    pos = frames.position.astype(np.int64)
    row = lookup_rows(fm.train_id, frames.train_id, np.arange(len(fm.train_id)))
    nfm = fm.mask.shape[1]
    in_mask = (row >= 0) & (pos < nfm)
    bins = scan.bins_of(frames.train_id, None if names is None else fm.slots_of(row, pos, names))
    reason = np.full(n, 255, np.uint8)  # 255: outside the framemask
    reason[in_mask] = fm.reason[row[in_mask], pos[in_mask]]
    keep = (reason == 0) & (bins >= 0)
    ftype = np.zeros(n, np.int64)
    ftype[in_mask] = fm.types_of(row[in_mask], pos[in_mask], ntypes)
    group = np.where(keep, bins * ntypes + ftype, -1)

    stats = FrameStats(total=n, kept=int(keep.sum()))
    rejected = {"no scan value": int(((bins < 0) & in_mask).sum()),
                "beyond maxframes or framemask": int((~in_mask).sum())}
    for code, name in REASONS.items():
        if code:
            rejected[name] = int(((reason == code) & (bins >= 0)).sum())
    stats.rejected = {k: v for k, v in rejected.items() if v}
    return group, stats


#: Bytes of one h5py read (a block of frames, or of their masks): 32 MB, whatever the detector's frame size.
BLOCK_BYTES = 32 << 20


def reduce_frames(frames: ModuleFrames, group: np.ndarray, ngroups: int, dark: DarkConstants | None,
                  block_frames: int, stats: FrameStats | None = None, threads: int = 1,
                  direct: bool = True):
    """Run the binning kernel over the wanted frames; returns (sums, sumsq, counts).

    Where the layout allows (``direct``: uncompressed frames whose file offsets HDF5's chunk index
    gives) the kernel reads the frames from a memory map of the file, window by window, each once a
    thread (reading up to two windows ahead) has brought it into the page cache; else h5py reads
    blocks of at most ``block_frames`` frames into one reused buffer. With corrected data the masks of
    the same frames (compressed in the facility's files) come block by block beside them
    (:func:`~xfel_core.readers.euxfel.read_mask_blocks`), and ``counts`` is per group and pixel (the
    frames each pixel was added from).
    """
    npix = frames.npixels
    masked = frames.mask_dataset is not None
    # With masks, inflating them is the slow part (zlib, ~2 GB/s a core): the threads inflate, one adds up.
    acc = binning_kernel.Accumulators(ngroups, npix, 1 if masked else threads, per_pixel=masked)
    wanted = group >= 0
    dark_mean = dark_rows = None
    if dark is not None and wanted.any():
        dark_rows = np.full(frames.nframes, -1, np.int64)
        dark_rows[wanted] = dark.rows_for(frames.cell_id[wanted], f"module {frames.module:02d} ({frames.source})")
        dark_mean = dark.mean.reshape(len(dark.cell_id), -1)
        if dark_mean.shape[1] != npix:
            raise RunDataError(f"dark {dark.source} has {dark_mean.shape[1]} pixels per frame, "
                               f"module {frames.module:02d} has {npix}")
    if dark_rows is None:
        dark_rows = np.zeros(frames.nframes, np.int64)
    t0 = time.perf_counter()
    nbytes, paths = 0, {}
    fpe = frames.frames_per_entry
    entry_bytes = frames.entry_elements * frames.dtype.itemsize
    block_entries = max(1, min(block_frames // fpe, BLOCK_BYTES // entry_bytes))
    buf = None
    start = 0
    for seg in frames.segments:
        sl = slice(start, start + seg.frames)
        start += seg.frames
        w = wanted[sl]
        if not w.any():
            continue
        located = frame_map.frame_byte_offsets(seg.path, seg.dataset) if direct else "direct reads disabled"
        mapped = isinstance(located, tuple)
        ranges = frame_ranges(w, (frame_map.WINDOW_FRAMES // fpe if mapped and not masked else block_entries) * fpe)
        g, r = group[sl], dark_rows[sl]
        if masked:
            masks = read_mask_blocks(seg, frames.mask_dataset, ranges, fpe, block_entries, frames.entry_shape,
                                     threads)
        if mapped:
            offsets, dtype = located
            offsets = offsets[seg.first: seg.first + seg.total]
            data, elements, mmapped = frame_map.map_frames(seg.path, offsets, entry_bytes, dtype)
            spans = [(int(offsets[lo // fpe]), int(offsets[(hi - 1) // fpe]) + entry_bytes) for lo, hi in ranges]
            with frame_map.ReadAhead(seg.path, spans) as ahead:
                for (lo, hi), (_, end) in zip(ranges, spans):
                    ahead.ready()
                    ahead.require_size(end, seg.path)
                    f = np.arange(lo, hi)
                    offs = elements[f // fpe] + (f % fpe) * npix
                    mask = (*next(masks), frames.mask_bits_or_all()) if masked else None
                    acc.add(data, offs, g[lo:hi], r[lo:hi], dark_mean, mask=mask)
                    nbytes += int(w[lo:hi].sum()) * npix * frames.dtype.itemsize
            del data, mmapped
            paths[seg.path] = DIRECT_PATH
        else:
            if buf is None:
                buf = np.empty((block_entries,) + frames.entry_shape, dtype=frames.dtype)
            for (lo, hi), (block, offs) in zip(ranges, read_entry_blocks(seg, seg.dataset, ranges, fpe, buf)):
                mask = (*next(masks), frames.mask_bits_or_all()) if masked else None
                acc.add(block, offs, g[lo:hi], r[lo:hi], dark_mean, mask=mask)
                nbytes += int(w[lo:hi].sum()) * npix * frames.dtype.itemsize
            paths[seg.path] = f"h5py blocks ({located})"
    sums, sumsq, counts = acc.result()
    if stats is not None:
        stats.seconds = time.perf_counter() - t0
        stats.bytes_read = nbytes
        stats.read_paths = paths
    return sums, sumsq, (acc.pixel_counts if masked else counts)


def compute_dark(frames: ModuleFrames, block_frames: int) -> DarkConstants:
    """Per memory cell mean and standard deviation of every pixel of a dark run."""
    cells, group = np.unique(frames.cell_id, return_inverse=True)
    sums, sumsq, counts = reduce_frames(frames, group.astype(np.int64), len(cells), None, block_frames)
    mean, sem = binning_kernel.finalize(sums, sumsq, counts)
    std = sem * np.sqrt(counts.astype(np.float64))[:, None]
    shape = (len(cells),) + tuple(frames.entry_shape[-2:])
    mean32 = mean.reshape(shape).astype(np.float32)
    return DarkConstants(cells, mean32, std.reshape(shape).astype(np.float32), counts, source=frames.source,
                         version=constants_version(cells, mean32))


def write_dark(path: Path, dark: DarkConstants, attrs: dict) -> None:
    with atomic_h5(path) as f:
        f["cell_id"] = dark.cell_id
        f["mean"] = dark.mean
        f["mean"].attrs.update(units="ADU", axes="cell, y, x")
        f["std"] = dark.std
        f["std"].attrs.update(units="ADU", axes="cell, y, x")
        f["count"] = dark.count
        f.attrs.update(attrs)
        f.attrs["source"] = dark.source
        f.attrs["dark_version"] = dark.version


def read_dark(path: Path) -> DarkConstants:
    try:
        with h5py.File(path, "r") as f:
            cell_id, mean = f["cell_id"][()], f["mean"][()]
            # Darks written before the version was stored: the same hash, from the arrays read.
            version = f.attrs.get("dark_version") or constants_version(cell_id, mean)
            return DarkConstants(cell_id, mean, f["std"][()], f["count"][()], source=str(path), version=str(version))
    except FileNotFoundError:
        raise MissingInputError(f"{path} does not exist: materialize the dark for this module first") from None


def write_module_sums(path: Path, sums, sumsq, counts, scan: ScanBins, pattern: list[str],
                      frame_shape: tuple[int, int], units: str, attrs: dict, pixel_counts=None) -> None:
    """The preprocessed_module output: float64 sums (scan point, frame type, y, x) and counts of frames
    (scan point, frame type); with masks (corrected data) ``pixel_count``: the frames each pixel was summed from."""
    shape = (scan.nbins, len(pattern)) + tuple(frame_shape)
    with atomic_h5(path) as f:
        f["sum"] = sums.reshape(shape)
        f["sumsq"] = sumsq.reshape(shape)
        for name in ("sum", "sumsq"):
            f[name].attrs.update(units="ADU" if name == "sum" else "ADU^2", axes="scan_variable, frame_type, y, x")
        f["count"] = counts.reshape(shape[:2])
        f["count"].attrs["axes"] = "scan_variable, frame_type"
        if pixel_counts is not None:
            f["pixel_count"] = pixel_counts.reshape(shape).astype(np.int32)
            f["pixel_count"].attrs["axes"] = "scan_variable, frame_type, y, x"
        f["scan_variable"] = scan.centres
        f["scan_variable"].attrs["units"] = units
        f["frame_type"] = np.array(pattern, dtype=h5py.string_dtype())
        f.attrs.update(attrs)


def read_module_sums(path: Path) -> dict:
    try:
        with h5py.File(path, "r") as f:
            return {
                "sum": f["sum"][()], "sumsq": f["sumsq"][()], "count": f["count"][()],
                **({"pixel_count": f["pixel_count"][()]} if "pixel_count" in f else {}),
                "scan_variable": f["scan_variable"][()],
                "frame_type": [s.decode() if isinstance(s, bytes) else s for s in f["frame_type"][()]],
                "attrs": dict(f.attrs),
            }
    except FileNotFoundError:
        raise MissingInputError(f"{path} does not exist: materialize preprocessed_module for it first") from None
