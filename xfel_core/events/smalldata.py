"""Per-event small data: dark-subtracted, masked images reduced to ROI sums, totals and radial profiles.

Images are (event, y, x) float32 blocks, processed a block at a time (a reused buffer): the dark
is subtracted, negative values clipped to 0 (as the PAL-XFEL toolkit does), masked pixels set
to 0; then each block gives per event the total, the largest pixel, each ROI's sum and the
radial profile (one sparse matrix product for the whole block).
"""

from __future__ import annotations

import numpy as np

from ..config import Roi
from ..azimuthal import RadialIntegrator
from ..binning_kernel import Accumulators
from ..rois import roi_sums
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


def mean_image(run: EventRun, chunk: int, dark: np.ndarray | None = None) -> np.ndarray:
    """(y, x) float64 mean image of a run's events (the dark of a dark run; hot pixels of a run)."""
    total = np.zeros(run.shape, dtype=np.float64)
    for _, imgs in run.iter_images(chunk):
        if dark is not None:
            imgs -= dark
        total += imgs.sum(axis=0, dtype=np.float64)
    return total / max(run.nevents, 1)


def reduce_events(run: EventRun, dark: np.ndarray | None, mask: np.ndarray, rois: list[Roi],
                  radial: RadialIntegrator, chunk: int) -> dict[str, np.ndarray]:
    """Per event: ``total`` (before clipping), ``peak`` (largest pixel), ``roi`` (events, rois) and ``profile`` (events, bins)."""
    n = run.nevents
    out = {"total": np.zeros(n), "peak": np.zeros(n), "roi": np.zeros((n, len(rois))),
           "profile": np.empty((n, len(radial.radial)))}
    for idx, imgs in run.iter_images(chunk):
        total = np.empty(len(idx))
        imgs = prepare(imgs, dark, mask, total)
        out["total"][idx] = total
        out["peak"][idx] = imgs.max(axis=(1, 2))
        out["roi"][idx] = roi_sums(imgs, rois)
        out["profile"][idx] = radial.profiles(imgs)
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
