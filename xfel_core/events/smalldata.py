"""Per-event small data: dark-subtracted, masked images reduced to ROI sums, totals and radial profiles.

Each image is read once, in blocks of events into a reused buffer per worker thread, and reduced by
one pass of the frame kernel (:mod:`xfel_core.frame_kernel`): the dark subtracted, masked pixels
set to 0, the total taken, negative values clipped to 0 (as the PAL-XFEL toolkit does), then the
largest pixel, each ROI's sum and each radial bin's sum (a bin index per pixel from pyFAI's
geometry, divided by the bin's solid angle at the end).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np

from ..azimuthal import RadialIntegrator, radial_integrator
from ..config import GeometryConfig, Roi
from ..frame_kernel import group_sums, reduce_frames, sum_frames
from ..readers.event_run import close_files
from ..readers.events import EventRun
from . import anomalies


def mean_image(run: EventRun, chunk: int, dark: np.ndarray | None = None, threads: int = 1) -> np.ndarray:
    """(y, x) float64 mean image of a run's events (the dark of a dark run; hot pixels of a run)."""
    npix = int(np.prod(run.shape))
    acc = np.zeros((max(1, threads), npix), dtype=np.float64)  # one accumulator per worker
    run.for_each_block(chunk, threads, lambda w, idx, imgs: sum_frames(imgs, dark, acc[w]), mapped=True)
    return (acc.sum(axis=0) / max(run.nevents, 1)).reshape(run.shape)


def reduce_events(run: EventRun, dark: np.ndarray | None, mask: np.ndarray, rois: list[Roi],
                  radial: RadialIntegrator, chunk: int, threads: int = 1) -> dict[str, np.ndarray]:
    """Per event: ``total`` (before clipping), ``peak`` (largest pixel), ``roi`` (events, rois) and ``profile``
    (events, bins): one pass of the frame kernel over each image, blocks of ``chunk`` events in ``threads``."""
    out = _Reduction(run, dark, mask, rois, radial, threads)
    run.for_each_block(chunk, threads, out.reduce, mapped=True)
    return out.result(radial)


class _Reduction:
    """The per-event outputs of a run, filled block by block by the frame kernel (from any worker thread)."""

    def __init__(self, run: EventRun, dark, mask, rois, radial, threads: int, special=None, mean_image: bool = False):
        n, nbins = run.nevents, len(radial.radial)
        self.out = {"total": np.zeros(n), "peak": np.zeros(n), "roi": np.zeros((n, len(rois))),
                    "hist": np.zeros((n, nbins))}
        self.masked = np.ascontiguousarray(mask, bool).reshape(-1)
        self.rects = np.array([[r.y[0], r.y[1], r.x[0], r.x[1]] for r in rois], dtype=np.int64).reshape(-1, 4)
        self.dark = None if dark is None else np.ascontiguousarray(dark, np.float32).reshape(-1)
        self.bin_of, self.nbins = radial.bin_of, nbins
        self.special = special
        ncand = 0 if special is None else int(special.max()) + 1
        self.cand = np.zeros((n, ncand)) if special is not None else None  # (events, pixels set apart)
        npix = int(np.prod(run.shape))
        self.acc = np.zeros((max(1, threads), npix)) if mean_image else None  # one sum image per worker

    def reduce(self, worker: int, idx: np.ndarray, imgs: np.ndarray) -> None:
        keys = ("total", "peak", "roi", "hist")
        acc = None if self.acc is None else self.acc[worker]
        lo, hi = int(idx[0]), int(idx[-1]) + 1
        in_place = hi - lo == len(idx) and bool(np.all(np.diff(idx) == 1))
        if in_place:  # consecutive events: the kernel writes the outputs' rows
            parts = [self.out[k][lo:hi] for k in keys] + [None if self.cand is None else self.cand[lo:hi]]
        else:
            parts = [np.empty((len(idx),) + self.out[k].shape[1:]) for k in keys]
            parts.append(None if self.cand is None else np.empty((len(idx), self.cand.shape[1])))
        reduce_frames(imgs, self.dark, self.masked, self.bin_of, self.nbins, self.rects, *parts[:4],
                      self.special, parts[4], acc)
        if not in_place:
            for k, part in zip(keys, parts):
                self.out[k][idx] = part
            if self.cand is not None:
                self.cand[idx] = parts[4]

    def result(self, radial: RadialIntegrator) -> dict[str, np.ndarray]:
        out = dict(self.out)
        out["profile"] = radial.from_sums(out.pop("hist"))
        return out


#: The pixels at most set apart in a run's single pass as possibly hot (their values per event are kept:
#: 8 bytes each per event, beside the profile's 8 per radial bin).
MAX_CANDIDATES = 256
#: A pixel is set apart where the first block's mean image passes the hot-pixel rule at this fraction of its factor.
CANDIDATE_FRACTION = 0.5


def reduce_run(run: EventRun, dark: np.ndarray | None, mask: np.ndarray, rois: list[Roi], geometry: GeometryConfig,
               chunk: int, threads: int = 1, hot_factor: float | None = None) -> tuple[dict, np.ndarray, RadialIntegrator, int]:
    """The per-event reductions of a run, its hot pixels and the radial integrator of the final mask.

    Returns (:func:`reduce_events`' outputs, hot pixels (y, x), radial integrator, reads of each image).
    Hot pixels (mean above ``hot_factor`` x their neighbourhood's median + 1) come from the dark; without a
    dark run, from the run's own mean image, found in the same pass: the pixels the first block's mean
    marks as possibly hot are set apart (their values per event kept, their contributions left out) while
    the kernel sums the run's mean image; at the end the hot ones stay out and the others are added back,
    equal to masking the hot pixels from the start. Where a hot pixel was not set apart (it became hot
    after the first block) or too many would be, a second pass reads the run again with the final mask.
    """
    config_mask = np.asarray(mask, bool)
    if dark is not None or hot_factor is None or run.nevents == 0:
        hot = anomalies.hot_pixels(dark, hot_factor) if dark is not None else np.zeros(run.shape, bool)
        radial = radial_integrator(geometry, run.shape, config_mask | hot)
        return reduce_events(run, dark, config_mask | hot, rois, radial, chunk, threads), hot, radial, 1
    plan = run.read_plan(chunk)
    files: dict = {}
    with ThreadPoolExecutor(1) as pool:  # pyFAI's geometry beside the first block's read and sum
        radial_cfg = pool.submit(radial_integrator, geometry, run.shape, config_mask)
        try:  # (mapped, the first block is read again below at no cost; through h5py, once more)
            first = run.read(*plan[0], np.empty((chunk,) + run.shape, np.float32), files, mapped=True)[1]
            first_sum = np.zeros(int(np.prod(run.shape)))
            sum_frames(first, None, first_sum)
            first_mean = (first_sum / len(first)).reshape(run.shape)
        finally:
            close_files(files)
        radial_cfg = radial_cfg.result()
    factor = hot_factor if len(plan) == 1 else hot_factor * CANDIDATE_FRACTION
    apart = np.flatnonzero((anomalies.hot_pixels(first_mean, factor) & ~config_mask).ravel())
    if len(apart) <= MAX_CANDIDATES:
        special = np.full(config_mask.size, -1, np.int32)
        special[apart] = np.arange(len(apart))
        red = _Reduction(run, None, config_mask, rois, radial_cfg, threads, special, mean_image=True)
        run.for_each_block(chunk, threads, red.reduce, plan=plan, mapped=True)
        hot = anomalies.hot_pixels((red.acc.sum(axis=0) / run.nevents).reshape(run.shape), hot_factor)
        if not (hot.ravel() & ~config_mask.ravel() & (special < 0)).any():
            radial = radial_cfg.without(hot)
            _add_back(red, apart, ~hot.ravel()[apart], radial, run.shape)
            return red.result(radial), hot, radial, 1
    # A second pass with the mask known.
    hot = anomalies.hot_pixels(mean_image(run, chunk, threads=threads), hot_factor)
    radial = radial_cfg.without(hot)
    return reduce_events(run, None, config_mask | hot, rois, radial, chunk, threads), hot, radial, 2


def _add_back(red: _Reduction, pixels: np.ndarray, keep: np.ndarray, radial: RadialIntegrator,
              shape: tuple[int, int]) -> None:
    """Add the pixels set apart that are not hot (``keep``) into the outputs, as the kernel would have."""
    v = red.cand[:, keep]  # (events, pixels): image - dark
    px = pixels[keep]
    out = red.out
    out["total"] += v.sum(axis=1)
    c = np.clip(v, 0, None)
    if c.shape[1]:
        np.maximum(out["peak"], c.max(axis=1), out=out["peak"])
    ys, xs = np.divmod(px, shape[1])
    for j, (y0, y1, x0, x1) in enumerate(red.rects):
        out["roi"][:, j] += c[:, (ys >= y0) & (ys < y1) & (xs >= x0) & (xs < x1)].sum(axis=1)
    b = radial.bin_of[px]
    for col in np.flatnonzero(b >= 0):
        out["hist"][:, b[col]] += c[:, col]


#: The event cube's threads each add into a private copy of the sums: at most this many bytes of them in all.
PRIVATE_SUMS_BYTES = 1 << 30


def accumulate_groups(run: EventRun, events: np.ndarray, groups: np.ndarray, weights: np.ndarray, ngroups: int,
                      dark: np.ndarray | None, mask: np.ndarray, chunk: int,
                      threads: int = 1) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Float64 sum and sum of squares (groups, y, x) and counts (groups,) of weight x prepared image, over ``events``.

    ``groups`` and ``weights`` are per event of the run. Each image is read where it lies (memory-mapped
    where the layout allows) and added in one compiled pass (:func:`xfel_core.frame_kernel.group_sums`:
    the dark subtracted, clipped at 0, masked pixels 0, times the weight), in ``threads`` threads with
    sums of their own (as long as those stay within PRIVATE_SUMS_BYTES), added at the end.
    """
    npix = int(np.prod(run.shape))
    threads = max(1, min(threads, PRIVATE_SUMS_BYTES // max(1, 16 * ngroups * npix)))
    sums, sumsq = np.zeros((threads, ngroups, npix)), np.zeros((threads, ngroups, npix))
    counts = np.zeros((threads, ngroups), np.int64)
    flat_mask = np.ascontiguousarray(mask, bool).reshape(-1)
    groups, weights = np.asarray(groups, np.int64), np.asarray(weights, np.float64)

    def add(worker: int, idx: np.ndarray, imgs) -> None:
        group_sums(imgs, dark, flat_mask, weights[idx], groups[idx], sums[worker], sumsq[worker], counts[worker])

    run.for_each_block(chunk, threads, add, events=events, mapped=True)
    shape = (ngroups,) + run.shape
    return sums.sum(axis=0).reshape(shape), sumsq.sum(axis=0).reshape(shape), counts.sum(axis=0)
