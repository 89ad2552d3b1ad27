"""The binned cubes' first picture: its ROI, its pump-probe curve and the scan point it shows, against plain loops."""

from __future__ import annotations

import numpy as np
import xarray as xr

from xfel_core import previews
from xfel_core.config import Roi

DIMS = ("scan_variable", "frame_type", "module", "y", "x")


def synthetic_cube(seed: int = 0) -> xr.Dataset:
    """3 modules x 20 x 30 px, 5 scan points; a peak on each module whose pumped intensity drops most at point 3."""
    rng = np.random.default_rng(seed)
    npoints, nmod, ny, nx = 5, 3, 20, 30
    y, x = np.mgrid[0:ny, 0:nx]
    peak = 400.0 * np.exp(-((y - 10) ** 2 + (x - 12) ** 2) / (2 * 1.5**2))
    drop = np.array([0.0, 0.05, 0.2, 0.35, 0.1])
    mean = np.empty((npoints, 2, nmod, ny, nx), np.float32)
    for s in range(npoints):
        mean[s, 0] = peak * (1 - drop[s]) + rng.normal(0, 1, (nmod, ny, nx))
        mean[s, 1] = peak + rng.normal(0, 1, (nmod, ny, nx))
    sem = np.abs(rng.normal(0.5, 0.1, mean.shape)).astype(np.float32)
    count = np.full((npoints, 2, nmod), 40, np.int64)
    count[0, :, 2] = 0  # a module without frames at the first point
    mean[0, :, 2] = np.nan
    ds = xr.Dataset({
        "mean": (DIMS, mean, {"units": "ADU"}), "sem": (DIMS, sem, {"units": "ADU"}),
        "count": (DIMS[:3], count),
        "difference": (("scan_variable", "module", "y", "x"), mean[:, 0] - mean[:, 1], {"units": "ADU"}),
        "difference_sem": (("scan_variable", "module", "y", "x"), np.hypot(sem[:, 0], sem[:, 1])),
    }, coords={"scan_variable": ("scan_variable", np.arange(npoints) - 1.0, {"units": "ps"}),
               "frame_type": ["pumped", "unpumped"], "module": [0, 1, 2]})
    return ds, peak


def test_the_automatic_roi_is_the_peak_above_half_its_height():
    ds, peak = synthetic_cube()
    mask, text = previews.roi_mask(ds)
    expected = np.broadcast_to(peak > 0.5 * 400 * (1 - 0.14), mask.shape)  # the peak's half height, roughly
    assert (mask == expected).mean() > 0.995 and mask.sum() > 0
    assert f"the {mask.sum()} pixels above half the peak" in text
    rect = Roi(name="box", role="intensity", y=(5, 8), x=(2, 6))
    mask, text = previews.roi_mask(ds, rect)
    assert mask.sum() == 3 * 3 * 4 and mask[:, 5:8, 2:6].all() and "ROI box (y 5:8, x 2:6" in text
    assert previews.first_intensity_roi([Roi(name="c", role="com", y=(0, 1), x=(0, 1)), rect]) is rect


def test_the_pump_probe_curve_equals_a_loop_over_pixels():
    ds, _ = synthetic_cube(1)
    mask = np.zeros(ds["mean"].shape[2:], bool)
    mask[0, 9:12, 11:14] = True
    mask[1, 10, 12] = True
    curves = previews.roi_curve(ds, mask)
    pix = np.argwhere(mask)
    for j, ftype in enumerate(("pumped", "unpumped")):
        values, errors = curves[ftype]
        for s in range(ds.sizes["scan_variable"]):
            picked = [float(ds["mean"].values[s, j, m, yy, xx]) for m, yy, xx in pix]
            errs = [float(ds["sem"].values[s, j, m, yy, xx]) for m, yy, xx in pix]
            assert np.isclose(values[s], sum(picked) / len(picked), rtol=1e-5)
            assert np.isclose(errors[s], np.sqrt(sum(e * e for e in errs)) / len(errs), rtol=1e-5)
    diff, diff_err = curves["difference"]
    np.testing.assert_allclose(diff, curves["pumped"][0] - curves["unpumped"][0], rtol=1e-4, atol=1e-3)
    assert np.all(diff_err > 0)


def test_the_picture_shows_the_point_of_largest_difference_zoomed_to_the_modules():
    ds, _ = synthetic_cube(2)
    mask, _ = previews.roi_mask(ds)
    curves = previews.roi_curve(ds, mask)
    point, why = previews.picture_point(curves, ds["count"].values.sum((1, 2)))
    assert point == 3 and "largest |difference|" in why
    no_diff = ds.drop_vars(["difference", "difference_sem"])
    point, why = previews.picture_point(previews.roi_curve(no_diff, mask), no_diff["count"].values.sum((1, 2)))
    assert point == 1 and why == "most frames"
    image = np.full((50, 60), np.nan)
    image[10:20, 30:45] = 1.0
    rows, cols = previews._crop(image, margin=2)
    assert (rows.start, rows.stop, cols.start, cols.stop) == (8, 22, 28, 47)
    png = previews.cube_png(ds, "test r0002")
    assert png.startswith(b"\x89PNG") and len(png) < 1_000_000
