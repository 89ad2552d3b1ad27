"""Shot rejection rules (the PAL-XFEL toolkit's anomaly removal), each a boolean flag per event.

Every rule flags independently; a shot is kept when no rule flags it, and the metadata counts
the shots each rule flags. Spreads are robust: sigma = 1.4826 x the median absolute deviation,
so the outliers being looked for do not widen the band that should catch them.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .. import jit
from ..config import AnomalyConfig

numba: Any = None  # the module, set by kernels.ready()
kernels = jit.Kernels(globals())

RULES = ("i0_band", "i0_min", "ratio", "linear_model", "saturated", "empty")


def robust_sigma(x: np.ndarray) -> float:
    x = x[np.isfinite(x)]
    return float(1.4826 * np.median(np.abs(x - np.median(x)))) if x.size else float("nan")


def outside_band(x: np.ndarray, k: float) -> np.ndarray:
    """x further than k robust sigmas from its median (NaN counts as outside)."""
    med, sig = np.nanmedian(x), robust_sigma(x)
    return ~(np.abs(x - med) <= k * sig)


def robust_line_outliers(x: np.ndarray, y: np.ndarray, k: float) -> np.ndarray:
    """Points further than k robust sigmas from a straight line y(x).

    The line is Theil-Sen's (the median of the pairwise slopes, scipy.stats.theilslopes): a
    least-squares fit would be pulled towards the very outliers it is to find, and the few
    shots of a beam dropout sit far out in I0 with all the leverage.
    """
    ok = np.isfinite(x) & np.isfinite(y)
    if ok.sum() < 3:
        return ~ok
    from scipy import stats  # (scipy.stats takes a second to import: only where it is used)

    slope = stats.theilslopes(y[ok], x[ok]).slope
    resid = y - slope * x
    resid -= np.median(resid[ok])
    sig = robust_sigma(resid[ok])
    return ~(np.abs(resid) <= k * max(sig, 1e-12 * np.abs(y[ok]).max()))


def per_group(flag_fn, groups: np.ndarray, *arrays: np.ndarray) -> np.ndarray:
    """Apply a rule separately within each group (scan point x laser), where the expected ratio is one."""
    out = np.zeros(len(groups), dtype=bool)
    for g in np.unique(groups):
        sel = groups == g
        out[sel] = flag_fn(*(a[sel] for a in arrays))
    return out


def shot_flags(cfg: AnomalyConfig, i0: np.ndarray, roi: np.ndarray | None, total: np.ndarray,
               peak: np.ndarray, groups: np.ndarray) -> dict[str, np.ndarray]:
    """Per rule, (events,) True where the rule rejects the shot; rules switched off are all False."""
    n = len(i0)
    none = np.zeros(n, dtype=bool)
    flags = {r: none.copy() for r in RULES}
    if cfg.i0_sigma is not None:
        flags["i0_band"] = outside_band(i0, cfg.i0_sigma)
    if cfg.i0_min is not None:
        flags["i0_min"] = ~(i0 >= cfg.i0_min)
    with np.errstate(invalid="ignore", divide="ignore"):
        if cfg.ratio_sigma is not None and roi is not None:
            flags["ratio"] = per_group(lambda r: outside_band(r, cfg.ratio_sigma), groups, roi / i0)
        if cfg.linear_sigma is not None:
            flags["linear_model"] = per_group(lambda a, b: robust_line_outliers(a, b, cfg.linear_sigma),
                                              groups, i0, total)
    if cfg.saturation is not None:
        flags["saturated"] = peak >= cfg.saturation
    if cfg.empty_fraction is not None:
        flags["empty"] = total < cfg.empty_fraction * np.median(total)
    return flags


def hot_pixels(mean_image: np.ndarray, factor: float | None) -> np.ndarray:
    """(y, x) True where a pixel's mean exceeds factor x (the median of its 3 x 3 neighbourhood + 1)."""
    if factor is None:
        return np.zeros(mean_image.shape, dtype=bool)
    med = median3x3(np.asarray(mean_image, np.float64))
    return mean_image > factor * (np.clip(med, 0, None) + 1.0)


def median3x3_scipy(image: np.ndarray) -> np.ndarray:
    """Reference: scipy's 3 x 3 median filter, edges repeated (mode "nearest")."""
    from scipy import ndimage

    return ndimage.median_filter(image, size=3, mode="nearest")


if jit.AVAILABLE:

    @kernels.njit(cache=True, nogil=True, inline="always")
    def _med9(p0, p1, p2, p3, p4, p5, p6, p7, p8):
        """The 5th smallest of nine values: a sorting network of 19 compare-exchanges (Paeth's)."""
        p1, p2 = min(p1, p2), max(p1, p2)
        p4, p5 = min(p4, p5), max(p4, p5)
        p7, p8 = min(p7, p8), max(p7, p8)
        p0, p1 = min(p0, p1), max(p0, p1)
        p3, p4 = min(p3, p4), max(p3, p4)
        p6, p7 = min(p6, p7), max(p6, p7)
        p1, p2 = min(p1, p2), max(p1, p2)
        p4, p5 = min(p4, p5), max(p4, p5)
        p7, p8 = min(p7, p8), max(p7, p8)
        p3 = max(p0, p3)
        p5 = min(p5, p8)
        p4, p7 = min(p4, p7), max(p4, p7)
        p6 = max(p3, p6)
        p4 = max(p1, p4)
        p2 = min(p2, p5)
        p4 = min(p4, p7)
        p4, p2 = min(p4, p2), max(p4, p2)
        p4 = max(p6, p4)
        return min(p4, p2)

    @kernels.njit(cache=True, nogil=True)
    def _median3x3(img, out):
        ny, nx = img.shape
        for y in range(ny):
            a = img[max(y - 1, 0)]
            b = img[y]
            c = img[min(y + 1, ny - 1)]
            for x in range(nx):
                x0, x2 = max(x - 1, 0), min(x + 1, nx - 1)
                out[y, x] = _med9(a[x0], a[x], a[x2], b[x0], b[x], b[x2], c[x0], c[x], c[x2])


def median3x3(image: np.ndarray) -> np.ndarray:
    """The 3 x 3 median of a float64 (y, x) image, edges repeated: :func:`median3x3_scipy`, compiled (10 x faster)."""
    if not jit.AVAILABLE or image.ndim != 2 or not np.isfinite(image).all():
        return median3x3_scipy(image)
    kernels.ready()
    out = np.empty_like(image)
    _median3x3(np.ascontiguousarray(image), out)
    return out
