"""Where each frame's bytes are in an HDF5 file, to read them with plain file reads.

Raw European XFEL detector data is stored uncompressed in chunks of whole frames, allocated
in order (with a small B-tree node between every few dozen chunks). For such a dataset, or a
contiguous one, the file offset of every frame follows from HDF5's chunk index, and a block of
frames is one ``preadv`` of its byte span into a reused buffer: no HDF5 read path, no per-chunk
calls, no page-table work (a memory map of the file spent as long filling its page tables as
the reduction took, measured). Whenever the layout is not understood (filters, chunks that
split frames, unallocated chunks, virtual datasets, foreign byte order, chunks out of order or
misaligned) :func:`frame_byte_offsets` says why and the caller reads through h5py instead.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import h5py
import numpy as np

from ..exceptions import RunDataError


def frame_byte_offsets(path: str | Path, dataset: str) -> tuple[np.ndarray, np.dtype] | str:
    """(file offset in bytes of every frame, dtype), or the reason the frames cannot be read directly."""
    with h5py.File(path, "r") as f:
        ds = f[dataset]
        dcpl = ds.id.get_create_plist()
        dtype = ds.dtype
        if dtype.kind not in "uif" or not dtype.isnative:
            return f"dtype {dtype} is not a native-order number"
        if dcpl.get_nfilters():
            return "the dataset is filtered (compressed)"
        n = ds.shape[0]
        frame_bytes = int(np.prod(ds.shape[1:], dtype=np.int64)) * dtype.itemsize
        layout = dcpl.get_layout()
        if layout == h5py.h5d.CONTIGUOUS:
            base = ds.id.get_offset()
            if base is None:
                return "the dataset's storage is not allocated"
            offsets = base + np.arange(n, dtype=np.int64) * frame_bytes
        elif layout == h5py.h5d.CHUNKED:
            if tuple(ds.chunks[1:]) != tuple(ds.shape[1:]):
                return f"chunks {ds.chunks} do not hold whole frames of {ds.shape[1:]}"
            k = ds.chunks[0]
            chunk_offsets = np.full(-(-n // k), -1, dtype=np.int64)

            def note(info):
                chunk_offsets[info.chunk_offset[0] // k] = info.byte_offset

            ds.id.chunk_iter(note)
            if (chunk_offsets < 0).any():
                return "some chunks are not allocated (fill value)"
            j = np.arange(n, dtype=np.int64)
            offsets = chunk_offsets[j // k] + (j % k) * frame_bytes
        else:
            return "the dataset is neither contiguous nor chunked (compact or virtual)"
    if n and (np.diff(offsets) < frame_bytes).any():
        return "chunks are not stored in frame order"
    if n and ((offsets - offsets[0]) % dtype.itemsize).any():
        return "frames are not aligned to the element size relative to each other"
    return offsets, dtype


def iter_direct_blocks(
    path: str | Path, offsets: np.ndarray, frame_bytes: int, dtype: np.dtype, wanted: np.ndarray,
    buf: np.ndarray,
) -> Iterator[tuple[int, int, np.ndarray, np.ndarray]]:
    """Yield ``(lo, hi, data, element_offsets)`` for blocks of frames ``lo:hi`` holding wanted frames.

    ``data`` is ``buf`` (a reused uint8 buffer) viewed as ``dtype``, holding the byte span of
    the block, and ``element_offsets`` where each frame of the block starts in it. Blocks are
    trimmed to their first and last wanted frame; frames with nothing wanted are not read.
    """
    cap = len(buf)
    view = memoryview(buf)
    hits = np.flatnonzero(wanted)
    fd = os.open(path, os.O_RDONLY)
    try:
        i = 0
        while i < len(hits):
            lo = int(hits[i])
            # The most frames whose byte span fits the buffer, then back to the last wanted one.
            hi = int(np.searchsorted(offsets, offsets[lo] + cap - frame_bytes, side="right"))
            if hi <= lo:
                raise ValueError(f"read buffer of {cap} bytes holds no frame of {frame_bytes} bytes")
            i_next = int(np.searchsorted(hits, hi))
            hi = int(hits[i_next - 1]) + 1
            span = int(offsets[hi - 1] - offsets[lo]) + frame_bytes
            got = os.preadv(fd, [view[:span]], int(offsets[lo]))
            if got != span:
                raise RunDataError(f"{path}: read {got} of {span} bytes at offset {int(offsets[lo])}; "
                                   "the file is shorter than its chunk index (truncated)")
            data = buf[:span].view(dtype)
            yield lo, hi, data, (offsets[lo:hi] - offsets[lo]) // dtype.itemsize
            i = i_next
    finally:
        os.close(fd)
