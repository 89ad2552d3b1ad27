"""One pass over each detector image: dark subtraction, mask, total, clipping, peak, ROI sums and radial histogram.

The per-event small data reduce every image to a few numbers. Done as numpy passes, that is eight
passes over each image's bytes (subtract, mask, sum, clip, mask, max, ROI sums, a sparse product);
here it is one, with two implementations of one contract:

- :func:`reduce_numpy`: plain numpy, the reference (and the fallback when numba is missing);
- :func:`reduce_numba`: compiled, each image read once, a row at a time (the ROI sums read the row
  again from cache). It releases the GIL, so threads can each take their own images.

Contract, for ``k`` images of ``npix = y * x`` pixels:

- ``images`` (k, y, x), any real dtype (float32 or uint16 as the files hold them), or :class:`Frames`
  (images where they lie in a memory map of the file);
- ``dark`` (npix,) float32 or None; ``masked`` (npix,) bool;
- ``bin_of`` (npix,) int32: the radial bin of each pixel, -1 for none (masked, outside the range);
- ``rects`` (rois, 4) int64: each ROI's [y0, y1, x0, x1), inside the image;
- outputs, float64: ``total`` (k,) the sum of ``image - dark`` over unmasked pixels before clipping;
  ``peak`` (k,) the largest pixel after clipping at 0 (masked pixels count as 0); ``roi`` (k, rois)
  and ``hist`` (k, nbins) the sums of the clipped pixels of each ROI and each radial bin (masked
  pixels count as 0);
- optionally ``special`` (npix,) int32, a column of ``cand`` (k, columns) float64 for pixels set
  apart (-1: none): such a pixel's ``image - dark`` goes to its column and it counts in no other
  output, as if masked and left out of ``total`` too (the pixels that may turn out hot, added back
  when they do not: :mod:`xfel_core.events.smalldata`);
- optionally ``acc`` (npix,) float64: ``image - dark`` of every pixel (masked ones too) added in (the
  run's mean image, for its hot pixels, in the same pass).

The compiled kernel goes through a block row by row and, within a row, image by image: a row of the
per-pixel arrays (dark, mask, bins, ``acc``) stays in cache for the whole block while each image's
bytes are read once. Per image row, one vectorised loop (subtract, mean image, mask, total, clip as
(v + |v|) / 2), the largest pixel as the largest bit pattern of the clipped row (non-negative doubles
order as integers: an integer reduction vectorises, a float maximum does not), then the histogram's
scatter and the ROI sums.
Values are float64 from the first subtraction on (ADU, as the images).

The event cube's pass over the kept shots is here too (:func:`group_sums`, with :func:`group_sums_numpy`
its reference): each image's ``weight x max(image - dark, 0)``, masked pixels 0, added into its group's
sums and sums of squares in one pass.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from . import jit

numba: Any = None  # the module, set by kernels.ready()
kernels = jit.Kernels(globals())


def reduce_numpy(images, dark, masked, bin_of, nbins, rects, total, peak, roi, hist, special=None, cand=None,
                 acc=None) -> None:
    """Reference: the contract above in numpy passes."""
    images = as_array(images)
    k = len(images)
    x = images.reshape(k, -1).astype(np.float64)
    if dark is not None:
        x -= dark
    if acc is not None:
        acc += x.sum(axis=0)
    masked = np.asarray(masked, bool).copy()
    bin_of = np.asarray(bin_of, np.int64)
    if special is not None:
        apart = np.flatnonzero(special >= 0)
        cand[:, special[apart]] = x[:, apart]
        masked[apart] = True
        bin_of = np.where(special >= 0, -1, bin_of)
    x[:, masked] = 0
    total[:] = x.sum(axis=1)
    np.clip(x, 0, None, out=x)
    peak[:] = x.max(axis=1) if x.shape[1] else 0.0
    img = x.reshape(images.shape)
    for j, (y0, y1, x0, x1) in enumerate(np.asarray(rects).reshape(-1, 4)):
        roi[:, j] = img[:, y0:y1, x0:x1].sum(axis=(1, 2))
    use = np.flatnonzero(bin_of >= 0)
    index = (np.arange(k)[:, None] * nbins + bin_of[use][None, :]).ravel()
    hist[:] = np.bincount(index, weights=x[:, use].ravel(), minlength=k * nbins).reshape(k, nbins)


def sum_numpy(images, dark, acc) -> None:
    """Reference: add each ``image - dark`` (k, y, x) into ``acc`` (npix,) float64."""
    x = as_array(images).reshape(len(images), -1).astype(np.float64)
    if dark is not None:
        x -= dark
    acc += x.sum(axis=0)


if jit.AVAILABLE:

    @kernels.njit(cache=True, nogil=True, fastmath={"reassoc", "nsz", "contract"})
    def _reduce(data, starts, ny, nx, dark, off, bin_of, rects, sp_ptr, sp_x, sp_col, cand, acc, use_acc, total,
                peak_bits, roi, hist):
        # (The order and the tricks: see the module docstring.)
        k = starts.shape[0]
        row = np.empty(nx, np.float64)
        bits = row.view(np.int64)
        for y in range(ny):
            base = y * nx
            d = dark[base:base + nx]
            m = off[base:base + nx]
            a = acc[base:base + nx]
            bo = bin_of[base:base + nx]
            for i in range(k):
                img = data[starts[i] + base:starts[i] + base + nx]
                t = 0.0
                if use_acc:
                    for x in range(nx):
                        v = np.float64(img[x]) - np.float64(d[x])
                        a[x] += v
                        v = 0.0 if m[x] else v
                        t += v
                        row[x] = 0.5 * (v + abs(v))
                else:
                    for x in range(nx):
                        v = np.float64(img[x]) - np.float64(d[x])
                        v = 0.0 if m[x] else v
                        t += v
                        row[x] = 0.5 * (v + abs(v))
                total[i] += t
                for q in range(sp_ptr[y], sp_ptr[y + 1]):  # the pixels set apart: their values, nothing else
                    x = sp_x[q]
                    cand[i, sp_col[q]] = np.float64(img[x]) - np.float64(d[x])
                pk = peak_bits[i]
                for x in range(nx):
                    pk = max(pk, bits[x])
                peak_bits[i] = pk
                h = hist[i]
                for x in range(nx):
                    b = bo[x]
                    if b >= 0:
                        h[b] += row[x]
                for r in range(rects.shape[0]):
                    if rects[r, 0] <= y < rects[r, 1]:
                        s = 0.0
                        for x in range(rects[r, 2], rects[r, 3]):
                            s += row[x]
                        roi[i, r] += s

    @kernels.njit(cache=True, nogil=True)
    def _sum(data, starts, dark, use_dark, acc):
        npix = acc.shape[0]
        for i in range(starts.shape[0]):
            img = data[starts[i]:starts[i] + npix]
            for p in range(npix):
                v = np.float64(img[p])
                if use_dark:
                    v -= np.float64(dark[p])
                acc[p] += v


    @kernels.njit(cache=True, nogil=True)
    def _group_sums(data, starts, npix, dark, use_dark, masked, weights, groups, sums, sumsq):
        for i in range(starts.shape[0]):
            g = groups[i]
            if g < 0:
                continue
            w = weights[i]
            img = data[starts[i]:starts[i] + npix]
            s = sums[g]
            q = sumsq[g]
            for p in range(npix):
                v = np.float64(img[p])
                if use_dark:
                    v -= np.float64(dark[p])
                v = 0.0 if (masked[p] or v < 0.0) else v * w
                s[p] += v
                q[p] += v * v


def group_sums_numpy(images, dark, masked, weights, groups, sums, sumsq, counts) -> None:
    """Reference: add each image's ``weight x max(image - dark, 0)`` (masked pixels 0) and its square into the
    (groups, npix) float64 ``sums`` and ``sumsq`` of its group (-1: skipped); ``counts`` (groups,) the images."""
    x = as_array(images).reshape(len(images), -1).astype(np.float64)
    if dark is not None:
        x -= dark
    np.clip(x, 0, None, out=x)
    x[:, np.asarray(masked, bool)] = 0
    x *= np.asarray(weights, np.float64)[:, None]
    groups = np.asarray(groups)
    for g in np.unique(groups[groups >= 0]):
        sel = groups == g
        sums[g] += x[sel].sum(axis=0)
        sumsq[g] += (x[sel] ** 2).sum(axis=0)
        counts[g] += int(sel.sum())


def group_sums(images, dark, masked, weights, groups, sums, sumsq, counts) -> None:
    """:func:`group_sums_numpy` in one compiled pass over each image (an array or :class:`Frames`)."""
    if not jit.AVAILABLE:
        return group_sums_numpy(images, dark, masked, weights, groups, sums, sumsq, counts)
    kernels.ready()
    data, starts, ny, nx = _flat(images)
    npix = ny * nx
    d, use_dark = _dark_arg(dark, npix)
    groups = np.ascontiguousarray(groups, np.int64)
    _group_sums(data, starts, npix, d, use_dark, np.ascontiguousarray(masked, np.bool_).reshape(npix),
                np.ascontiguousarray(weights, np.float64), groups, sums, sumsq)
    counts += np.bincount(groups[groups >= 0], minlength=len(counts))[: len(counts)]


class Frames:
    """Images where they lie in a flat array (a memory map of the file): ``data[starts[i]:starts[i] + y * x]``."""

    def __init__(self, data: np.ndarray, starts: np.ndarray, shape: tuple[int, int]):
        self.data, self.starts, self.frame_shape = data, np.asarray(starts, np.int64), tuple(shape)

    def __len__(self) -> int:
        return len(self.starts)

    @property
    def shape(self) -> tuple[int, int, int]:
        return (len(self.starts),) + self.frame_shape

    def array(self) -> np.ndarray:
        """A (k, y, x) copy."""
        npix = int(np.prod(self.frame_shape))
        return np.stack([self.data[s:s + npix] for s in self.starts]).reshape(self.shape) if len(self) else \
            np.empty(self.shape, self.data.dtype)


def as_array(images) -> np.ndarray:
    """(k, y, x) images as an array (a copy of :class:`Frames`)."""
    return images.array() if isinstance(images, Frames) else np.asarray(images)


def _flat(images) -> tuple[np.ndarray, np.ndarray, int, int]:
    """(flat data, start of each image in it, y, x) of an array of images or :class:`Frames`."""
    if isinstance(images, Frames):
        return images.data, images.starts, *images.frame_shape
    images = np.ascontiguousarray(images)
    k = len(images)
    ny, nx = images.shape[1:] if images.ndim == 3 else (0, 0)
    return images.reshape(-1), np.arange(k, dtype=np.int64) * (ny * nx), ny, nx


def _dark_arg(dark, npix):
    """(dark as float32 (npix,), whether there is one) for the compiled kernels."""
    return (np.zeros(1, np.float32), False) if dark is None else (np.ascontiguousarray(dark, np.float32).reshape(npix), True)


def reduce_numba(images, dark, masked, bin_of, nbins, rects, total, peak, roi, hist, special=None, cand=None,
                 acc=None) -> None:
    """Compiled kernel with the contract of :func:`reduce_numpy` (the outputs are set, not added to; ``acc`` added to);
    ``images`` an array or :class:`Frames`."""
    kernels.ready()
    data, starts, ny, nx = _flat(images)
    k, npix = len(starts), ny * nx
    d = np.zeros(npix, np.float32) if dark is None else np.ascontiguousarray(dark, np.float32).reshape(npix)
    off = np.ascontiguousarray(masked, np.bool_).reshape(npix)
    if special is not None:  # pixels set apart count as masked, their values go to cand row by row
        special = np.asarray(special).reshape(npix)
        apart = np.flatnonzero(special >= 0)
        off = off | (special >= 0)
        sp_ptr = np.searchsorted(apart, np.arange(ny + 1) * nx).astype(np.int64)
        sp_x, sp_col = (apart % max(nx, 1)).astype(np.int64), special[apart].astype(np.int64)
    else:
        sp_ptr, sp_x, sp_col, cand = np.zeros(ny + 1, np.int64), np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros((k, 0))
    total[:] = 0.0
    roi[:] = 0.0
    hist[:] = 0.0
    peak_bits = np.zeros(k, np.int64)  # +0.0
    _reduce(data, starts, ny, nx, d, off, np.ascontiguousarray(bin_of, np.int32).reshape(npix),
            np.ascontiguousarray(rects, np.int64).reshape(-1, 4), sp_ptr, sp_x, sp_col, cand,
            np.zeros(1) if acc is None else acc, acc is not None, total, peak_bits, roi, hist)
    peak[:] = peak_bits.view(np.float64)


def sum_numba(images, dark, acc) -> None:
    """Compiled :func:`sum_numpy`; ``images`` an array or :class:`Frames`."""
    kernels.ready()
    data, starts, _, _ = _flat(images)
    d, use_dark = _dark_arg(dark, acc.shape[0])
    _sum(data, starts, d, use_dark, acc)


def reduce_frames(images, dark, masked, bin_of, nbins, rects, total, peak, roi, hist, special=None, cand=None,
                  acc=None) -> None:
    """The contract above, compiled where numba is installed."""
    (reduce_numba if jit.AVAILABLE else reduce_numpy)(images, dark, masked, bin_of, nbins, rects, total, peak, roi,
                                                      hist, special, cand, acc)


def sum_frames(images, dark, acc) -> None:
    """Add each ``image - dark`` into ``acc``, compiled where numba is installed."""
    (sum_numba if jit.AVAILABLE else sum_numpy)(images, dark, acc)


def warm_up() -> None:
    """Compile (or load from numba's disk cache) the kernels for float32 and uint16 images."""
    if not jit.AVAILABLE:
        return
    for dtype in (np.float32, np.uint16):
        images = np.zeros((1, 2, 2), dtype)
        reduce_numba(images, None, np.zeros(4, bool), np.zeros(4, np.int32), 1, np.zeros((0, 4), np.int64),
                     np.zeros(1), np.zeros(1), np.zeros((1, 0)), np.zeros((1, 1)))
        sum_numba(images, None, np.zeros(4))
        group_sums(images, None, np.zeros(4, bool), np.ones(1), np.zeros(1, np.int64), np.zeros((1, 4)),
                   np.zeros((1, 4)), np.zeros(1, np.int64))
