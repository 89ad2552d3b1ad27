"""PNG previews of the DSSC assets for the web UI: the assembled detector image, scan points, kept frames.

matplotlib Figures rendered by its Agg canvas (no pyplot); figures are small (well under 1 MB). The DSSC image is
assembled with extra-geom's DSSC 1M geometry from approximate quadrant positions (the
instrument's own geometry file is not part of a raw run); modules of another shape than
128 x 512 are tiled in the DSSC's 4 x 4 module order instead.
"""

from __future__ import annotations

import numpy as np
import xarray as xr

from .insitu.plots import _png, subplots

#: Approximate DSSC 1M quadrant positions (mm), as in extra-geom's examples.
DSSC_QUAD_POSITIONS = [(-130, 5), (-130, -125), (5, -125), (5, 5)]
DSSC_MODULE_SHAPE = (128, 512)


def assemble(modules: dict[int, np.ndarray]) -> np.ndarray:
    """One 2-D image of the modules {number: (y, x)} in their approximate places; NaN where no module."""
    shape = next(iter(modules.values())).shape
    if shape == DSSC_MODULE_SHAPE:
        from extra_geom import DSSC_1MGeometry

        stack = np.full((16,) + shape, np.nan, dtype=np.float32)
        for m, img in modules.items():
            stack[m] = img
        image, _ = DSSC_1MGeometry.from_quad_positions(DSSC_QUAD_POSITIONS).position_modules(stack)
        return image
    ny, nx = shape
    out = np.full((4 * ny, 4 * nx), np.nan, dtype=np.float32)
    for m, img in modules.items():
        r, c = divmod(m, 4)
        out[r * ny:(r + 1) * ny, c * nx:(c + 1) * nx] = img
    return out


def cube_png(ds: xr.Dataset, title: str) -> bytes:
    """Mean image of the scan point with most frames (first frame type) and, if there, the pump-probe difference."""
    counts = ds["count"].sum(["frame_type", "module"]).values
    point = int(np.argmax(counts))
    ftype = str(ds["frame_type"].values[0])
    mean = ds["mean"].isel(scan_variable=point).sel(frame_type=ftype)
    panels = [(assemble({int(m): mean.sel(module=m).values for m in ds["module"].values}),
               f"mean, {ftype}", "viridis")]
    if "difference" in ds:
        diff = ds["difference"].isel(scan_variable=point)
        panels.append((assemble({int(m): diff.sel(module=m).values for m in ds["module"].values}),
                       "pumped - unpumped", "RdBu_r"))
    fig, axes = subplots(1, len(panels), figsize=(4.2 * len(panels), 4.2), squeeze=False)
    units = ds["scan_variable"].attrs.get("units", "")
    value = float(ds["scan_variable"].values[point])
    for ax, (img, label, cmap) in zip(axes[0], panels):
        finite = img[np.isfinite(img)]
        if cmap == "RdBu_r":
            lim = float(np.percentile(np.abs(finite), 99.5)) if finite.size else 1.0
            vmin, vmax = -lim or -1, lim or 1
        else:
            vmin, vmax = (np.percentile(finite, [1, 99.5]) if finite.size else (0, 1))
        im = ax.imshow(img, cmap=cmap, vmin=vmin, vmax=vmax, origin="upper", interpolation="nearest")
        ax.set_title(f"{label} at {value:g} {units}", fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
        fig.colorbar(im, ax=ax, shrink=0.8, label=ds["mean"].attrs.get("units", "ADU"))
    fig.suptitle(title, fontsize=9)
    return _png(fig)


def scan_points_png(centres: np.ndarray, trains: np.ndarray, units: str, title: str) -> bytes:
    """Trains per scan point, as bars."""
    fig, ax = subplots(figsize=(6, 2.8))
    width = np.min(np.diff(centres)) * 0.8 if len(centres) > 1 else 1.0
    ax.bar(centres, trains, width=width, color="C0")
    ax.set_xlabel(f"scan value ({units})" if units else "scan value")
    ax.set_ylabel("trains")
    ax.set_title(title, fontsize=9)
    return _png(fig)


def kept_fraction_png(train_ids: np.ndarray, fraction: np.ndarray, title: str) -> bytes:
    """Fraction of each train's frames the framemask keeps."""
    fig, ax = subplots(figsize=(6, 2.8))
    ax.plot(np.arange(len(fraction)), fraction, ".-", ms=3, lw=0.8)
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel(f"train (first {int(train_ids[0]) if len(train_ids) else '-'})")
    ax.set_ylabel("kept fraction")
    ax.set_title(title, fontsize=9)
    return _png(fig)
