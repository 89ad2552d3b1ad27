"""The binning kernel: add detector frames into sum, sum of squares and count per group.

A *group* is one (scan point, frame type) cell of the output (or a memory cell for the
dark). Frames with group -1 are skipped and cost no arithmetic. Accumulators are float64
(sums of 16-bit data cannot overflow or lose precision at realistic run lengths) and int64
counts. Two implementations with the same contract:

- :func:`accumulate_numpy`: plain numpy, the reference (and the fallback when numba is missing);
- :func:`accumulate_numba`: compiled, one thread; parallelism comes from one process per
  module (a serial kernel can be compiled in the executor's forkserver and survive the fork).

Array shapes: ``frames`` (n, pixels); ``group``, ``dark_row`` (n,); ``dark`` (cells, pixels)
or None; ``sums``, ``sumsq`` (groups, pixels); ``counts`` (groups,).
"""

from __future__ import annotations

import numpy as np

try:
    import numba
except ImportError:  # pragma: no cover - numba is a pinned dependency
    numba = None

#: Frames per numpy sub-block: bounds the reference's float64 temporaries.
_NUMPY_BLOCK = 64
#: Pixels per numba work item: a slice of accumulator rows that stays in cache.
_PIXEL_BLOCK = 2048


def accumulate_numpy(frames, group, dark_row, dark, sums, sumsq, counts) -> None:
    """Reference: add ``frames - dark[dark_row]`` into the accumulators of their groups."""
    for a in range(0, len(frames), _NUMPY_BLOCK):
        g = group[a: a + _NUMPY_BLOCK]
        for gid in np.unique(g[g >= 0]):
            sel = np.flatnonzero(g == gid) + a
            x = frames[sel].astype(np.float64)
            if dark is not None:
                x -= dark[dark_row[sel]]
            sums[gid] += x.sum(axis=0)
            sumsq[gid] += (x * x).sum(axis=0)
            counts[gid] += len(sel)


if numba is not None:

    @numba.njit(cache=True, nogil=True)
    def _accumulate_kernel(frames, group, dark_row, dark, use_dark, sums, sumsq):
        n, npix = frames.shape
        nblocks = (npix + _PIXEL_BLOCK - 1) // _PIXEL_BLOCK
        for b in range(nblocks):
            p0 = b * _PIXEL_BLOCK
            p1 = min(npix, p0 + _PIXEL_BLOCK)
            for i in range(n):
                g = group[i]
                if g < 0:
                    continue
                if use_dark:
                    c = dark_row[i]
                    for p in range(p0, p1):
                        v = np.float64(frames[i, p]) - np.float64(dark[c, p])
                        sums[g, p] += v
                        sumsq[g, p] += v * v
                else:
                    for p in range(p0, p1):
                        v = np.float64(frames[i, p])
                        sums[g, p] += v
                        sumsq[g, p] += v * v


def accumulate_numba(frames, group, dark_row, dark, sums, sumsq, counts) -> None:
    """Compiled kernel with the contract of :func:`accumulate_numpy`."""
    group = np.ascontiguousarray(group, dtype=np.int64)
    use_dark = dark is not None
    if use_dark:
        dark_row = np.ascontiguousarray(dark_row, dtype=np.int64)
    else:
        dark_row = np.zeros(1, np.int64)
        dark = np.zeros((1, 1), np.float32)
    _accumulate_kernel(frames, group, dark_row, dark, use_dark, sums, sumsq)
    kept = group[group >= 0]
    counts += np.bincount(kept, minlength=len(counts))[: len(counts)]


accumulate = accumulate_numba if numba is not None else accumulate_numpy


def warm_up() -> None:
    """Compile (or load from the disk cache) the kernel for 16-bit and float32 frames, without running it."""
    if numba is None:
        return
    for frame_type in (numba.uint16, numba.float32):
        _accumulate_kernel.compile((
            frame_type[:, ::1], numba.int64[::1], numba.int64[::1], numba.float32[:, ::1], numba.boolean,
            numba.float64[:, ::1], numba.float64[:, ::1],
        ))


def finalize(sums: np.ndarray, sumsq: np.ndarray, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and standard error of the mean from the accumulators (NaN where count < 1 or < 2)."""
    n = counts.reshape(counts.shape + (1,) * (sums.ndim - counts.ndim)).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(n > 0, sums / n, np.nan)
        var = np.where(n > 1, (sumsq - sums * mean) / (n - 1), np.nan)
        sem = np.sqrt(np.clip(var, 0, None) / n)
    return mean, sem
