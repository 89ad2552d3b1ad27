"""PNG previews of the in-situ series for the web UI: the mean image with the ROIs drawn, and the corrected series."""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..config import Rect, Roi
from ..plots import png as _png
from ..plots import subplots

ROLE_COLOURS = {"com": "gold", "fwhm": "orange", "intensity": "red", "background": "limegreen"}


def roi_image_png(mean_image: np.ndarray, rois: list[Roi], background: list[Rect], title: str) -> bytes:
    """The mean image (log colour scale) with each ROI in its role's colour and the background areas dashed."""
    from matplotlib.patches import Rectangle

    fig, ax = subplots(figsize=(7, 3.6))
    img = np.clip(mean_image, 0, None)
    vmax = float(np.percentile(img, 99.9)) or 1.0
    ax.imshow(np.log1p(img), origin="upper", cmap="viridis", vmin=0, vmax=np.log1p(vmax), interpolation="nearest")
    same_place: dict[tuple, list[Roi]] = {}
    for r in rois:
        same_place.setdefault((r.y, r.x), []).append(r)
    for (y, x), group in same_place.items():
        c = ROLE_COLOURS[group[0].role]
        ax.add_patch(Rectangle((x[0] - 0.5, y[0] - 0.5), x[1] - x[0], y[1] - y[0], fill=False, edgecolor=c,
                               linewidth=1.5))
        label = ", ".join(f"{r.name} ({r.role})" for r in group)
        ax.text(x[0], y[0] - 2, label, color=c, fontsize=7, va="bottom")
    for b in background:
        ax.add_patch(Rectangle((b.x[0] - 0.5, b.y[0] - 0.5), b.x[1] - b.x[0], b.y[1] - b.y[0],
                               fill=False, edgecolor="white", linestyle="--", linewidth=1))
    ax.set_title(title, fontsize=9)
    ax.set_xlabel("x (pixel)")
    ax.set_ylabel("y (pixel)")
    return _png(fig)


def series_png(df: pd.DataFrame, reference: str, change_times: list[float], title: str) -> bytes:
    """Corrected intensity, centre of mass and FWHM against time (minutes from the first frame), changes marked."""
    t0 = float(df["time"].iloc[0])
    minutes = (df["time"] - t0) / 60.0
    com = [c for c in df.columns if c.endswith("_com_y") or c.endswith("_com_x")]
    width = [c for c in df.columns if c.endswith("_fwhm_y") or c.endswith("_fwhm_x")]
    panels = 1 + bool(com) + bool(width)
    fig, axes = subplots(panels, 1, figsize=(7, 2.0 * panels + 0.6), sharex=True, squeeze=False)
    axes = axes[:, 0]
    ax = axes[0]
    ax.plot(minutes, df[f"{reference}_rate"], ".", color="0.6", ms=3, label="as measured")
    ax.plot(minutes, df[f"{reference}_corrected"], ".-", color="C3", ms=3, lw=0.8, label="corrected")
    ax.set_yscale("log")
    ax.set_ylabel(f"{reference} (counts/s)")
    ax.legend(fontsize=7, loc="best")
    k = 1
    for cols, label, relative in ((com, "centre of mass\nshift (px)", True), (width, "FWHM (px)", False)):
        if not cols:
            continue
        for c in cols:
            values = df[c] - df[c].iloc[0] if relative else df[c]
            axes[k].plot(minutes, values, ".-", ms=2, lw=0.7,
                         label=f"{c} - {df[c].iloc[0]:.1f}" if relative else c)
        axes[k].set_ylabel(label)
        axes[k].legend(fontsize=7, loc="best")
        k += 1
    for a in axes:
        for tc in change_times:
            a.axvline((tc - t0) / 60.0, color="k", ls=":", lw=0.8)
    axes[-1].set_xlabel("time (min from the first frame); dotted: attenuator changes")
    axes[0].set_title(title, fontsize=9)
    return _png(fig)
