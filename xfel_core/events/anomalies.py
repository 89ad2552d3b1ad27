"""Shot rejection rules (the PAL-XFEL toolkit's anomaly removal), each a boolean flag per event.

Every rule flags independently; a shot is kept when no rule flags it, and the metadata counts
the shots each rule flags. Spreads are robust: sigma = 1.4826 x the median absolute deviation,
so the outliers being looked for do not widen the band that should catch them.
"""

from __future__ import annotations

import numpy as np

from ..config import AnomalyConfig

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
    from scipy import ndimage

    med = ndimage.median_filter(mean_image, size=3, mode="nearest")
    return mean_image > factor * (np.clip(med, 0, None) + 1.0)
