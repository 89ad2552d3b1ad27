"""The binning kernel: add detector frames into sum, sum of squares and count per group.

A *group* is one (scan point, frame type) cell of the output (or a memory cell for the
dark). Frames with group -1 are skipped and cost no arithmetic. Accumulators are float64
(sums of 16-bit data cannot overflow or lose precision at realistic run lengths) and int64
counts. Two implementations with the same contract:

- :func:`accumulate_numpy`: plain numpy, the reference (and the fallback when numba is missing);
- :func:`accumulate_numba`: compiled. Frames are taken in batches of consecutive frames, sorted
  by group and memory cell within a batch, and added pixel block by pixel block, four frames of
  a group at a time, so the few accumulator and dark rows a batch touches stay in cache and are
  loaded once per four frames while each frame's bytes are read once. With ``threads > 1`` each thread takes a part of every batch into private
  accumulators, summed at the end: no two threads write the same memory.

The frames are given as a flat array ``data`` and the element offset of each frame in it, so
the same kernel reads a block read by h5py or the frames in a memory map of the whole file
(between small gaps of HDF5 metadata).

Shapes: ``data`` (any,); ``offsets``, ``group``, ``dark_row`` (n,); ``dark`` (cells, pixels)
or None; ``sums``, ``sumsq`` (groups, pixels); ``counts`` (groups,). Corrected data come with a
per-pixel mask (mask data and each frame's offset in it, like the frames): a masked pixel adds
nothing, and a (groups, pixels) count says from how many frames each pixel's sums are.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from . import jit

numba: Any = None  # the module, set by kernels.ready()
kernels = jit.Kernels(globals())

#: Consecutive frames per batch (128 MB of raw DSSC frames, ten trains), sorted by group and memory
#: cell: each cell's dark row serves about ten frames while in cache (10 % faster than 256, measured).
BATCH_FRAMES = 1024
#: Pixels per block: with a handful of groups per batch, their accumulator slices stay in L2.
_PIXEL_BLOCK = 4096
_NUMPY_BLOCK = 64


def accumulate_numpy(data, offsets, npix, group, dark_row, dark, sums, sumsq, counts, mask=None) -> None:
    """Reference: add ``frame - dark[dark_row]`` into the accumulators of each frame's group.

    ``mask``: (mask data, element offset of each frame's mask, bits, pixel counts (groups, pixels)): a pixel
    whose mask value has one of ``bits`` set is left out of its frame's sums, and ``pixel counts`` counts the
    frames each pixel was added from (``counts`` still the frames)."""
    idx = np.flatnonzero(np.asarray(group) >= 0)
    for a in range(0, len(idx), _NUMPY_BLOCK):
        sel = idx[a: a + _NUMPY_BLOCK]
        frames = data[np.asarray(offsets)[sel, None] + np.arange(npix)].astype(np.float64)
        if dark is not None:
            frames -= dark[np.asarray(dark_row)[sel]]
        good = None
        if mask is not None:
            mdata, moffsets, bits, pixel_counts = mask
            good = (mdata[np.asarray(moffsets)[sel, None] + np.arange(npix)] & bits) == 0
            frames = np.where(good, frames, 0.0)
        g = np.asarray(group)[sel]
        for gid in np.unique(g):
            x = frames[g == gid]
            sums[gid] += x.sum(axis=0)
            sumsq[gid] += (x * x).sum(axis=0)
            counts[gid] += len(x)
            if good is not None:
                pixel_counts[gid] += good[g == gid].sum(axis=0)


if jit.AVAILABLE:

    @kernels.njit(cache=True, nogil=True)
    def _add_batch(data, offsets, group, dark_row, dark, use_dark, lo, hi, sums, sumsq):
        """Frames lo:hi (sorted by group) into the accumulators, pixel block by pixel block.

        Four frames of a group at a time: each accumulator element is loaded and stored once per
        four frames, not once per frame (1.7x faster, measured: the accumulators' traffic, not the
        arithmetic, was the limit).
        """
        npix = sums.shape[1]
        zero = np.zeros(_PIXEL_BLOCK, dark.dtype)  # the dark row of every frame without a dark
        for p0 in range(0, npix, _PIXEL_BLOCK):
            p1 = min(npix, p0 + _PIXEL_BLOCK)
            n = p1 - p0
            i = lo
            while i < hi:
                g = group[i]
                j = i + 1
                while j < hi and group[j] == g:
                    j += 1
                # 1-D views of this block: LLVM vectorizes the loops below (3.5x faster than
                # indexing the 2-D arrays in the loop, measured).
                s = sums[g, p0:p1]
                q = sumsq[g, p0:p1]
                k = i
                while k + 4 <= j:
                    x0 = data[offsets[k] + p0: offsets[k] + p1]
                    x1 = data[offsets[k + 1] + p0: offsets[k + 1] + p1]
                    x2 = data[offsets[k + 2] + p0: offsets[k + 2] + p1]
                    x3 = data[offsets[k + 3] + p0: offsets[k + 3] + p1]
                    d0 = dark[dark_row[k], p0:p1] if use_dark else zero[:n]
                    d1 = dark[dark_row[k + 1], p0:p1] if use_dark else zero[:n]
                    d2 = dark[dark_row[k + 2], p0:p1] if use_dark else zero[:n]
                    d3 = dark[dark_row[k + 3], p0:p1] if use_dark else zero[:n]
                    for p in range(n):
                        v0 = np.float64(x0[p]) - np.float64(d0[p])
                        v1 = np.float64(x1[p]) - np.float64(d1[p])
                        v2 = np.float64(x2[p]) - np.float64(d2[p])
                        v3 = np.float64(x3[p]) - np.float64(d3[p])
                        s[p] += (v0 + v1) + (v2 + v3)
                        q[p] += (v0 * v0 + v1 * v1) + (v2 * v2 + v3 * v3)
                    k += 4
                while k < j:
                    x = data[offsets[k] + p0: offsets[k] + p1]
                    d = dark[dark_row[k], p0:p1] if use_dark else zero[:n]
                    for p in range(n):
                        v = np.float64(x[p]) - np.float64(d[p])
                        s[p] += v
                        q[p] += v * v
                    k += 1
                i = j

    @kernels.njit(cache=True, nogil=True)
    def _add_batch_masked(data, offsets, mdata, moffsets, bits, group, dark_row, dark, use_dark, lo, hi, sums, sumsq,
                          pixel_counts):
        """:func:`_add_batch` with a per-pixel mask: one frame at a time, a masked pixel adds nothing."""
        npix = sums.shape[1]
        for p0 in range(0, npix, _PIXEL_BLOCK):
            p1 = min(npix, p0 + _PIXEL_BLOCK)
            n = p1 - p0
            for k in range(lo, hi):
                g = group[k]
                s = sums[g, p0:p1]
                q = sumsq[g, p0:p1]
                c = pixel_counts[g, p0:p1]
                x = data[offsets[k] + p0: offsets[k] + p1]
                m = mdata[moffsets[k] + p0: moffsets[k] + p1]
                d = dark[dark_row[k], p0:p1] if use_dark else dark[0, :1]
                for p in range(n):
                    if (m[p] & bits) == 0:
                        v = np.float64(x[p]) - (np.float64(d[p]) if use_dark else 0.0)
                        s[p] += v
                        q[p] += v * v
                        c[p] += 1

    @kernels.njit(cache=True, nogil=True)
    def _add_serial_masked(data, offsets, mdata, moffsets, bits, group, dark_row, dark, use_dark, bounds, sums,
                           sumsq, pixel_counts):
        for k in range(len(bounds) - 1):
            _add_batch_masked(data, offsets, mdata, moffsets, bits, group, dark_row, dark, use_dark, bounds[k],
                              bounds[k + 1], sums, sumsq, pixel_counts)

    @kernels.njit(parallel=True, cache=True, nogil=True)
    def _add_parallel_masked(data, offsets, mdata, moffsets, bits, group, dark_row, dark, use_dark, bounds,
                             priv_sums, priv_sumsq, priv_counts):
        nthreads = priv_sums.shape[0]
        nbatches = len(bounds) - 1
        for t in numba.prange(nthreads):
            for k in range(t, nbatches, nthreads):
                _add_batch_masked(data, offsets, mdata, moffsets, bits, group, dark_row, dark, use_dark, bounds[k],
                                  bounds[k + 1], priv_sums[t], priv_sumsq[t], priv_counts[t])

    @kernels.njit(cache=True, nogil=True)
    def _add_serial(data, offsets, group, dark_row, dark, use_dark, bounds, sums, sumsq):
        for k in range(len(bounds) - 1):
            _add_batch(data, offsets, group, dark_row, dark, use_dark, bounds[k], bounds[k + 1], sums, sumsq)

    @kernels.njit(parallel=True, cache=True, nogil=True)
    def _add_parallel(data, offsets, group, dark_row, dark, use_dark, bounds, priv_sums, priv_sumsq):
        nthreads = priv_sums.shape[0]
        nbatches = len(bounds) - 1
        for t in numba.prange(nthreads):
            for k in range(t, nbatches, nthreads):
                _add_batch(data, offsets, group, dark_row, dark, use_dark, bounds[k], bounds[k + 1],
                           priv_sums[t], priv_sumsq[t])


def _sorted_batches(offsets, group, dark_row, mask_offsets=None):
    """Wanted frames only, sorted by group and then memory cell within batches of consecutive
    frames (frames of one cell from neighbouring trains then share the dark row in cache: 25 %
    faster, measured); and the batch bounds (and the masks' offsets in the same order)."""
    keep = np.flatnonzero(group >= 0)
    batch = keep // BATCH_FRAMES  # ascending, as keep is
    order = keep[np.lexsort((dark_row[keep], group[keep], batch))]
    bounds = np.concatenate([[0], np.flatnonzero(np.diff(batch)) + 1, [len(keep)]])
    moffs = None if mask_offsets is None else np.ascontiguousarray(np.asarray(mask_offsets)[order], np.int64)
    return (np.ascontiguousarray(offsets[order], np.int64), np.ascontiguousarray(group[order], np.int64),
            np.ascontiguousarray(dark_row[order], np.int64), bounds.astype(np.int64), moffs)


class Accumulators:
    """Sum, sum of squares and count per group, with private copies for kernel threads.

    ``per_pixel``: frames come with masks (:meth:`add`'s ``mask``), and ``pixel_counts`` (groups, pixels)
    counts the frames each pixel was added from."""

    def __init__(self, ngroups: int, npix: int, threads: int = 1, per_pixel: bool = False):
        self.sums = np.zeros((ngroups, npix), np.float64)
        self.sumsq = np.zeros((ngroups, npix), np.float64)
        self.counts = np.zeros(ngroups, np.int64)
        self.pixel_counts = np.zeros((ngroups, npix), np.int64) if per_pixel else None
        self.threads = max(1, threads)
        self._priv = None
        if self.threads > 1 and jit.AVAILABLE:
            shape = (self.threads, ngroups, npix)
            self._priv = (np.zeros(shape), np.zeros(shape), np.zeros(shape, np.int64) if per_pixel else None)

    def add(self, data, offsets, group, dark_row=None, dark=None, mask=None) -> None:
        """Add frames ``data[offsets[i]:offsets[i] + pixels]`` to the groups ``group[i]`` (-1: skip); ``mask``:
        (mask data, offset of each frame's mask, bits) with ``per_pixel``."""
        if (mask is None) != (self.pixel_counts is None):
            raise ValueError("masks go with per_pixel accumulators, and only with them")
        if mask is not None:
            mask = (*mask, self.pixel_counts)
        accumulate(data, offsets, self.sums.shape[1], group, dark_row, dark, self.sums, self.sumsq, self.counts,
                   self._priv, mask)

    def result(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(sums, sums of squares, counts), the threads' private parts added in (and into ``pixel_counts``)."""
        if self._priv is not None:
            self.sums += self._priv[0].sum(axis=0)
            self.sumsq += self._priv[1].sum(axis=0)
            if self.pixel_counts is not None:
                self.pixel_counts += self._priv[2].sum(axis=0)
            self._priv = None
        return self.sums, self.sumsq, self.counts


def accumulate_numba(data, offsets, npix, group, dark_row, dark, sums, sumsq, counts, private=None,
                     mask=None) -> None:
    """Compiled kernel with the contract of :func:`accumulate_numpy`; ``private`` for threads."""
    kernels.ready()
    group = np.asarray(group, np.int64)
    use_dark = dark is not None
    if not use_dark:
        dark_row = np.zeros(len(group), np.int64)
        dark = np.zeros((1, 1), np.float32)
    offs, grp, rows, bounds, moffs = _sorted_batches(np.asarray(offsets), group, np.asarray(dark_row),
                                                     None if mask is None else mask[1])
    counts += np.bincount(grp, minlength=len(counts))[: len(counts)]
    if len(grp) == 0:
        return
    if private is not None:
        # One part of every batch per thread: a call often holds a single batch (one read block).
        nthreads = private[0].shape[0]
        parts = bounds[:-1, None] + (np.diff(bounds)[:, None] * np.arange(nthreads)[None, :]) // nthreads
        bounds = np.unique(np.append(parts.ravel(), bounds[-1]))
    if mask is not None:
        mdata = mask[0]
        bits = mdata.dtype.type(int(mask[2]) & int(np.iinfo(mdata.dtype).max))
        if private is None:
            _add_serial_masked(data, offs, mdata, moffs, bits, grp, rows, dark, use_dark, bounds, sums, sumsq, mask[3])
        else:
            _add_parallel_masked(data, offs, mdata, moffs, bits, grp, rows, dark, use_dark, bounds, *private)
    elif private is None:
        _add_serial(data, offs, grp, rows, dark, use_dark, bounds, sums, sumsq)
    else:
        _add_parallel(data, offs, grp, rows, dark, use_dark, bounds, private[0], private[1])


def accumulate(data, offsets, npix, group, dark_row, dark, sums, sumsq, counts, private=None, mask=None) -> None:
    if not jit.AVAILABLE:
        accumulate_numpy(data, offsets, npix, group, dark_row, dark, sums, sumsq, counts, mask)
    else:
        accumulate_numba(data, offsets, npix, group, dark_row, dark, sums, sumsq, counts, private, mask)


def warm_up() -> None:
    """Compile (or load from the disk cache) the serial kernels for 16-bit and float32 frames (and masked float32).

    Called in the executor's forkserver so forked steps inherit it. Only the serial kernel:
    numba's parallel machinery does not survive a fork.
    """
    if not jit.AVAILABLE:
        return
    numba = kernels.ready()
    i8 = numba.int64[::1]
    for frame_type in (numba.uint16, numba.float32):
        _add_serial.compile((frame_type[::1], i8, i8, i8, numba.float32[:, ::1], numba.boolean, i8,
                             numba.float64[:, ::1], numba.float64[:, ::1]))
    # Corrected data: float32 frames with the correction's uint32 masks.
    _add_serial_masked.compile((numba.float32[::1], i8, numba.uint32[::1], i8, numba.uint32, i8, i8,
                                numba.float32[:, ::1], numba.boolean, i8, numba.float64[:, ::1],
                                numba.float64[:, ::1], numba.int64[:, ::1]))
    f8 = numba.float64[::1]
    _finalize.compile((f8, f8, f8, f8, f8))


def finalize_numpy(sums: np.ndarray, sumsq: np.ndarray, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Reference of :func:`finalize`."""
    n = counts.reshape(counts.shape + (1,) * (sums.ndim - counts.ndim)).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(n > 0, sums / n, np.nan)
        var = np.where(n > 1, (sumsq - sums * mean) / (n - 1), np.nan)
        sem = np.sqrt(np.clip(var, 0, None) / n)
    return mean, sem


if jit.AVAILABLE:

    @kernels.njit(cache=True, nogil=True)
    def _finalize(sums, sumsq, n, mean, sem):
        for i in range(sums.shape[0]):
            c = n[i]
            if c > 0:
                m = sums[i] / c
                mean[i] = m
                if c > 1:
                    sem[i] = np.sqrt(max((sumsq[i] - sums[i] * m) / (c - 1), 0.0) / c)
                else:
                    sem[i] = np.nan
            else:
                mean[i] = np.nan
                sem[i] = np.nan


def finalize(sums: np.ndarray, sumsq: np.ndarray, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and standard error of the mean from the accumulators (NaN where count < 1 or < 2); ``counts`` per
    group, or per group and pixel (the shape of ``sums``). One compiled pass (the numpy reference makes a
    dozen temporaries of the cube's size: 0.69 s against 0.04 s for 10 Mpixels, measured)."""
    if not jit.AVAILABLE:
        return finalize_numpy(sums, sumsq, counts)
    kernels.ready()
    n = np.broadcast_to(counts.reshape(counts.shape + (1,) * (sums.ndim - counts.ndim)), sums.shape)
    mean, sem = np.empty(sums.shape), np.empty(sums.shape)
    _finalize(np.ascontiguousarray(sums, np.float64).reshape(-1), np.ascontiguousarray(sumsq, np.float64).reshape(-1),
              np.ascontiguousarray(n, np.float64).reshape(-1), mean.reshape(-1), sem.reshape(-1))
    return mean, sem
