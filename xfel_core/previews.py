"""PNG previews for the web UI: the binned cubes' pump-probe picture (DSSC and event files), scan points, kept frames.

matplotlib Figures rendered by its Agg canvas (no pyplot); figures are small (well under 1 MB). A European XFEL
detector's image is assembled with extra-geom: the DSSC 1M from approximate quadrant positions, the AGIPD,
LPD and JUNGFRAU from extra-geom's example geometries (the instrument's own geometry file is not part of
a run; the picture shows where the signal is, not calibrated positions); modules of another shape than
the detector's are tiled in a 4-column grid instead.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import xarray as xr

from .config import Rect, Roi
from .plots import png as _png
from .plots import subplots

#: Approximate DSSC 1M quadrant positions (mm), as in extra-geom's examples.
DSSC_QUAD_POSITIONS = [(-130, 5), (-130, -125), (5, -125), (5, 5)]


@lru_cache(maxsize=4)
def _geometry(detector: str):
    """extra-geom's geometry of the detector type (made once per process)."""
    import extra_geom

    from .euxfel.detectors import KINDS

    cls = getattr(extra_geom, KINDS[detector].geometry)
    if detector == "DSSC1M":
        return cls.from_quad_positions(DSSC_QUAD_POSITIONS)
    return cls.example(KINDS[detector].modules) if detector == "JUNGFRAU" else cls.example()


def assemble(modules: dict[int, np.ndarray], detector: str = "DSSC1M") -> np.ndarray:
    """One 2-D image of the modules {number: (y, x)} of a detector type in their approximate places; NaN where
    no module."""
    from .euxfel.detectors import KINDS

    kind = KINDS.get(detector)
    shape = next(iter(modules.values())).shape
    if kind is not None and shape == kind.module_shape:
        stack = np.full((kind.modules,) + shape, np.nan, dtype=np.float32)
        for m, img in modules.items():
            stack[m - kind.first_module] = img
        image, _ = _geometry(detector).position_modules(stack)
        return image
    ny, nx = shape
    rows = max(modules) // 4 + 1
    out = np.full((rows * ny, 4 * nx), np.nan, dtype=np.float32)
    for m, img in modules.items():
        r, c = divmod(m, 4)
        out[r * ny:(r + 1) * ny, c * nx:(c + 1) * nx] = img
    return out


def first_intensity_roi(rois: list[Roi]) -> Roi | None:
    """The configured ROI the cube's pump-probe curve is drawn over: the first intensity ROI (None: automatic)."""
    return next((r for r in rois if r.role == "intensity"), None)


def roi_mask(ds: xr.Dataset, roi: Rect | None = None) -> tuple[np.ndarray, str]:
    """The pixels of the pump-probe curve, (module, y, x) booleans, and what they are in words.

    ``roi`` (module pixels, the same on every module) if given; else automatic: the pixels of the
    count-weighted mean image (all scan points and frame types) above half its peak over the
    median (the Bragg peaks; the 99.99th percentile stands for the peak, so a hot pixel does not).
    """
    shape = ds["mean"].shape[2:]
    if roi is not None:
        mask = np.zeros(shape, bool)
        mask[:, roi.slices[0], roi.slices[1]] = True
        where = " of every module" if shape[0] > 1 else ""
        return mask, f"ROI {roi.name} (y {roi.y[0]}:{roi.y[1]}, x {roi.x[0]}:{roi.x[1]}{where})"
    counts = ds["count"].values.astype(np.float64)  # (scan point, frame type, module)
    mean = ds["mean"].values
    summed = np.zeros(shape, np.float64)  # (module, y, x); one bin at a time: no copy of the whole cube
    for s, t in np.ndindex(counts.shape[:2]):
        summed += np.nan_to_num(mean[s, t], nan=0.0) * counts[s, t][:, None, None]
    total = counts.sum((0, 1))[:, None, None]
    with np.errstate(invalid="ignore", divide="ignore"):
        image = np.where(total > 0, summed / total, np.nan)
    finite = image[np.isfinite(image)]
    if finite.size == 0:
        return np.zeros(shape, bool), "no pixel with frames"
    median, peak = np.median(finite), np.percentile(finite, 99.99)
    threshold = median + 0.5 * (peak - median)
    mask = np.isfinite(image) & (image >= threshold)
    units = ds["mean"].attrs.get("units", "ADU")
    return mask, f"automatic ROI: the {int(mask.sum())} pixels above half the peak ({threshold:.3g} {units})"


def roi_curve(ds: xr.Dataset, mask: np.ndarray) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per frame type (and "difference"): the mean over the ROI pixels per scan point and its standard error.

    The error combines the pixels' standard errors as if independent; a bin without frames (or an
    empty ROI) is NaN.
    """
    counts = ds["count"].values.sum(2)  # (scan point, frame type)
    if not mask.any():
        counts = np.zeros_like(counts)
    n = max(int(mask.sum()), 1)

    def mean_and_error(values: np.ndarray, errors: np.ndarray, empty: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(scan point, pixel) values and errors -> their ROI means and combined errors, NaN where empty."""
        if empty.all():
            return np.full(len(empty), np.nan), np.full(len(empty), np.nan)
        return (np.where(empty, np.nan, values.mean(1)),
                np.where(empty, np.nan, np.sqrt((errors.astype(np.float64) ** 2).sum(1)) / n))

    out = {str(ftype): mean_and_error(ds["mean"].values[:, j][:, mask], ds["sem"].values[:, j][:, mask],
                                      counts[:, j] == 0)
           for j, ftype in enumerate(ds["frame_type"].values)}
    if "difference" in ds:
        out["difference"] = mean_and_error(ds["difference"].values[:, mask], ds["difference_sem"].values[:, mask],
                                           (counts == 0).any(1))
    return out


def picture_point(curves: dict[str, tuple[np.ndarray, np.ndarray]], counts: np.ndarray) -> tuple[int, str]:
    """The scan point the images show and why: the largest |pumped - unpumped| over the ROI, else the most frames."""
    diff = curves.get("difference")
    if diff is not None and np.isfinite(diff[0]).any():
        return int(np.nanargmax(np.abs(diff[0]))), "largest |difference| in the ROI"
    return int(np.argmax(counts)), "most frames"


def _crop(image: np.ndarray, margin: int = 4) -> tuple[slice, slice]:
    """Rows and columns of ``image`` holding finite pixels (the modules present), with a margin."""
    rows = np.flatnonzero(np.isfinite(image).any(1))
    cols = np.flatnonzero(np.isfinite(image).any(0))
    if rows.size == 0:
        return slice(None), slice(None)
    return (slice(max(rows[0] - margin, 0), rows[-1] + 1 + margin),
            slice(max(cols[0] - margin, 0), cols[-1] + 1 + margin))


def _show(fig, ax, image: np.ndarray, window: tuple[slice, slice], outline: np.ndarray, signed: bool,
          units: str, title: str) -> None:
    """One assembled image, zoomed to ``window``, with pixel axes (of the assembled image), a percentile colour scale and the ROI outline."""
    from matplotlib.colors import AsinhNorm

    part = image[window]
    y0, x0 = window[0].start or 0, window[1].start or 0
    extent = (x0 - 0.5, x0 + part.shape[1] - 0.5, y0 + part.shape[0] - 0.5, y0 - 0.5)
    finite = part[np.isfinite(part)]
    shown, step = _binned(part, DISPLAY_PIXELS)
    ticks = None
    if signed:
        lim = float(np.percentile(np.abs(finite), 99.9)) if finite.size else 1.0
        im = ax.imshow(shown, cmap="RdBu_r", vmin=-(lim or 1), vmax=lim or 1, extent=extent, interpolation="nearest")
        scale = "colour: +-99.9th percentile"
    else:
        p1, p16, p84, p9999 = np.percentile(finite, [1, 16, 84, 99.99]) if finite.size else (0.0, 0.0, 1.0, 1.0)
        low, high, spread = p1, p9999, p84 - p16
        # Linear within the noise, logarithmic above it: the background and a peak 100x above it both show.
        width, low, high = max(float(spread), 1e-6), float(low), float(max(high, low + 1e-6))
        im = ax.imshow(shown, cmap="viridis", norm=AsinhNorm(linear_width=width, vmin=low, vmax=high),
                       extent=extent, interpolation="nearest")
        scale = "colour: 1st-99.99th percentile, asinh"
        # Ticks at the ends, 0 and the decades well above the noise (matplotlib's asinh ticks crowd the linear
        # part), none closer than a tenth of the bar to the one below it (labels would overlap).
        decades = [10.0**k for k in range(int(np.ceil(np.log10(10 * width))), int(np.floor(np.log10(high))) + 1)]
        ticks, norm = [], im.norm
        for t in sorted({low, high, 0.0, *decades}, reverse=True):  # from the top: the largest value keeps its label
            if low <= t <= high and all(abs(float(norm(t)) - float(norm(u))) >= 0.1 for u in ticks):
                ticks.append(t)
    if outline.any():
        edge, _ = _binned(np.nan_to_num(outline[window]), DISPLAY_PIXELS)
        ax.contour(x0 + (np.arange(edge.shape[1]) + 0.5) * step - 0.5, y0 + (np.arange(edge.shape[0]) + 0.5) * step - 0.5,
                   edge, levels=[0.5], colors="k" if signed else "w", linewidths=0.7)
    fig.colorbar(im, ax=ax, shrink=0.85, label=units, ticks=ticks, format="%.3g" if ticks else None)
    ax.set_xlabel("x (pixel)")
    ax.set_ylabel("y (pixel)")
    shown_as = f"\nshown as means of {step} x {step} pixels" if step > 1 else ""
    ax.set_title(f"{title}\n{scale}{shown_as}", fontsize=8)


#: An image is shown at most this many points across (the figure's panels are ~400 points wide): larger ones
#: as means of square blocks of pixels, which is what the eye gets from them, at a fraction of the drawing time.
DISPLAY_PIXELS = 600


def _binned(image: np.ndarray, most: int) -> tuple[np.ndarray, int]:
    """(the image as means of ``step`` x ``step`` blocks of pixels, NaN ignored, step) with at most ``most``
    blocks along each side; step 1: the image itself."""
    step = -(-max(image.shape) // most)
    if step <= 1:
        return image, 1
    ny, nx = -(-image.shape[0] // step), -(-image.shape[1] // step)
    padded = np.full((ny * step, nx * step), np.nan)
    padded[: image.shape[0], : image.shape[1]] = image
    blocks = padded.reshape(ny, step, nx, step)
    counts = np.isfinite(blocks).sum(axis=(1, 3))
    with np.errstate(invalid="ignore"):
        return np.where(counts > 0, np.nansum(blocks, axis=(1, 3)) / counts, np.nan), step


def cube_png(ds: xr.Dataset, title: str, roi: Rect | None = None, detector: str = "DSSC1M") -> bytes:
    """The pump-probe picture of a binned cube: the ROI's mean per scan value (each frame type, with standard
    errors) and the pumped - unpumped difference; beside it the assembled mean image and the difference image,
    zoomed to the modules present, at the scan point where the ROI's difference is largest."""
    mask, roi_text = roi_mask(ds, roi)
    curves = roi_curve(ds, mask)
    x = ds["scan_variable"].values.astype(np.float64)
    units = ds["scan_variable"].attrs.get("units", "")
    value_units = ds["mean"].attrs.get("units", "ADU")
    diff = curves.get("difference")
    counts = ds["count"].values.sum((1, 2))
    point, why = picture_point(curves, counts)
    modules = [int(m) for m in ds["module"].values]
    ftype = str(ds["frame_type"].values[0])

    def assembled(values: np.ndarray) -> np.ndarray:
        return assemble({m: values[i] for i, m in enumerate(modules)}, detector)

    mean_img = assembled(ds["mean"].values[point, 0])
    outline = assembled(mask.astype(np.float32))
    window = _crop(mean_img)
    images = [(mean_img, False, f"mean, {ftype}")]
    if "difference" in ds:
        images.append((assembled(ds["difference"].values[point]), True, "pumped - unpumped"))

    from matplotlib.figure import Figure

    fig = Figure(figsize=(4.4 + 4.8 * len(images), 5.0))
    grid = fig.add_gridspec(2, 1 + len(images), width_ratios=[1.0] + [1.1] * len(images), hspace=0.08, wspace=0.5)
    top = fig.add_subplot(grid[0, 0])
    for name, (values, errors) in curves.items():
        if name != "difference":
            top.errorbar(x, values, yerr=errors, fmt="o-", ms=3, lw=1, capsize=2, label=name)
    top.set_ylabel(f"ROI mean\n({value_units})")
    top.legend(fontsize=7)
    top.set_title(roi_text, fontsize=8)
    bottom = fig.add_subplot(grid[1, 0], sharex=top)
    if diff is not None:
        bottom.errorbar(x, diff[0], yerr=diff[1], fmt="o-", ms=3, lw=1, capsize=2, color="C3")
        bottom.axhline(0.0, color="0.5", lw=0.6)
        bottom.set_ylabel(f"pumped - unpumped\n({value_units})")
    else:
        bottom.bar(x, counts, width=np.min(np.diff(x)) * 0.8 if len(x) > 1 else 1.0)
        bottom.set_ylabel("frames")
    bottom.axvline(x[point], color="0.3", ls=":", lw=0.8)
    top.axvline(x[point], color="0.3", ls=":", lw=0.8)
    bottom.set_xlabel(f"scan value ({units})" if units else "scan value")
    for top_label in top.get_xticklabels():
        top_label.set_visible(False)
    for i, (img, signed, label) in enumerate(images):
        _show(fig, fig.add_subplot(grid[:, 1 + i]), img, window, outline, signed, value_units,
              f"{label} at {x[point]:g} {units}")
    fig.suptitle(f"{title}; images at {x[point]:g} {units}: {why}", fontsize=9)
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
