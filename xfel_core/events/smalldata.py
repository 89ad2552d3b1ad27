"""Per-event small data: dark-subtracted, masked images reduced to ROI sums, totals and radial profiles.

Each image is read once, in blocks of events into a reused buffer per worker thread, and reduced by
one pass of the frame kernel (:mod:`xfel_core.frame_kernel`): the dark subtracted, masked pixels
set to 0, the total taken, negative values clipped to 0 (as the PAL-XFEL toolkit does), then the
largest pixel, each ROI's sum and each radial bin's sum (a bin index per pixel from pyFAI's
geometry, divided by the bin's solid angle at the end).
"""

from __future__ import annotations

import numpy as np

from ..config import Roi
from ..azimuthal import RadialIntegrator
from ..binning_kernel import Accumulators
from ..frame_kernel import reduce_frames, sum_frames
from ..readers.events import EventRun


def prepare(images: np.ndarray, dark: np.ndarray | None, mask: np.ndarray, total: np.ndarray | None = None) -> np.ndarray:
    """In place: images - dark, clipped at 0, masked pixels 0. ``total`` (if given) receives each image's
    sum over unmasked pixels before the clipping (clipping the noise of an empty frame would add to it)."""
    if dark is not None:
        images -= dark
    if total is not None:
        images[:, mask] = 0
        total[:] = images.sum(axis=(1, 2), dtype=np.float64)
    np.clip(images, 0, None, out=images)
    images[:, mask] = 0
    return images


def mean_image(run: EventRun, chunk: int, dark: np.ndarray | None = None, threads: int = 1) -> np.ndarray:
    """(y, x) float64 mean image of a run's events (the dark of a dark run; hot pixels of a run)."""
    npix = int(np.prod(run.shape))
    acc = np.zeros((max(1, threads), npix), dtype=np.float64)  # one accumulator per worker
    run.for_each_block(chunk, threads, lambda w, idx, imgs: sum_frames(imgs, dark, acc[w]))
    return (acc.sum(axis=0) / max(run.nevents, 1)).reshape(run.shape)


def reduce_events(run: EventRun, dark: np.ndarray | None, mask: np.ndarray, rois: list[Roi],
                  radial: RadialIntegrator, chunk: int, threads: int = 1) -> dict[str, np.ndarray]:
    """Per event: ``total`` (before clipping), ``peak`` (largest pixel), ``roi`` (events, rois) and ``profile``
    (events, bins): one pass of the frame kernel over each image, blocks of ``chunk`` events in ``threads``."""
    n, nbins = run.nevents, len(radial.radial)
    out = {"total": np.zeros(n), "peak": np.zeros(n), "roi": np.zeros((n, len(rois))), "hist": np.zeros((n, nbins))}
    masked = np.ascontiguousarray(mask, bool).reshape(-1)
    rects = np.array([[r.y[0], r.y[1], r.x[0], r.x[1]] for r in rois], dtype=np.int64).reshape(-1, 4)
    flat_dark = None if dark is None else np.ascontiguousarray(dark, np.float32).reshape(-1)

    def reduce(worker: int, idx: np.ndarray, imgs: np.ndarray) -> None:
        # The block's events are consecutive in the run: the outputs' rows are views, written in place.
        lo, hi = int(idx[0]), int(idx[-1]) + 1
        if hi - lo == len(idx) and np.all(np.diff(idx) == 1):
            reduce_frames(imgs, flat_dark, masked, radial.bin_of, nbins, rects, out["total"][lo:hi],
                          out["peak"][lo:hi], out["roi"][lo:hi], out["hist"][lo:hi])
            return
        parts = [np.empty(len(idx)), np.empty(len(idx)), np.empty((len(idx), len(rois))), np.empty((len(idx), nbins))]
        reduce_frames(imgs, flat_dark, masked, radial.bin_of, nbins, rects, *parts)
        for key, part in zip(("total", "peak", "roi", "hist"), parts):
            out[key][idx] = part

    run.for_each_block(chunk, threads, reduce)
    out["profile"] = radial.from_sums(out.pop("hist"))
    return out


def accumulate_groups(run: EventRun, events: np.ndarray, groups: np.ndarray, weights: np.ndarray, ngroups: int,
                      dark: np.ndarray | None, mask: np.ndarray, chunk: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Float64 sum and sum of squares (groups, y, x) and counts (groups,) of weight x prepared image, over ``events``.

    ``groups`` and ``weights`` are per event of the run; the blocks go through the binning kernel
    that makes the DSSC cubes (its numba path, tested against its numpy reference).
    """
    npix = int(np.prod(run.shape))
    acc = Accumulators(ngroups, npix)
    for idx, imgs in run.iter_images(chunk, events):
        imgs = prepare(imgs, dark, mask)
        imgs *= weights[idx].astype(np.float32)[:, None, None]
        acc.add(np.ascontiguousarray(imgs, np.float32).reshape(-1), np.arange(len(idx), dtype=np.int64) * npix,
                np.asarray(groups[idx], np.int64))
    sums, sumsq, counts = acc.result()
    return sums.reshape((ngroups,) + run.shape), sumsq.reshape((ngroups,) + run.shape), counts
