"""Each data-quality check fails on data made to violate it and passes on good data; in Dagster, in the asset's step."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr
import yaml

import dagster as dg
from conftest import dark_run, make_beamtime, small_run
from xfel_core import quality
from xfel_core.euxfel import pipeline
from xfel_core.config import load_beamtime
from xfel_core.exceptions import RunDataError


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    root = tmp_path_factory.mktemp("checks")
    path = make_beamtime(root, [small_run(2)], dark=dark_run())
    cfg = load_beamtime(path)
    for m in cfg.detector.modules:
        pipeline.make_dark(cfg, m)
    pipeline.make_raw_run(cfg, "r0002")
    pipeline.make_scan_variable(cfg, "r0002")
    fm = pipeline.make_framemask(cfg, "r0002")
    pms = [pipeline.make_preprocessed_module(cfg, "r0002", m) for m in cfg.detector.modules]
    cube = pipeline.make_binned_cube(cfg, "r0002")
    return cfg, fm, pms, cube


def test_kept_fraction(made):
    cfg, fm, _, _ = made
    assert fm["checks"]["kept_fraction"].passed
    assert 0.5 < fm["kept_fraction"] < 1
    assert quality.kept_fraction(fm["kept_fraction"], cfg.checks.min_kept_fraction).passed
    bad = quality.kept_fraction(fm["kept_fraction"], 0.99)
    assert not bad.passed and "< minimum 0.99" in bad.description


def test_dark_noise(made):
    cfg, _, _, _ = made
    dark = pipeline.read_dark(pipeline.dark_path(cfg, 0))
    assert quality.dark_noise(dark.std, cfg.checks.dark_noise_adu).passed
    assert not quality.dark_noise(dark.std, (0.0, 0.01)).passed  # too noisy for these bounds
    assert not quality.dark_noise(dark.std * 0, (0.05, 200)).passed  # a dead (noiseless) module
    nan = dark.std.copy()
    nan[0, 0, 0] = np.nan
    out = quality.dark_noise(nan, cfg.checks.dark_noise_adu)
    assert not out.passed and "1 pixels have NaN noise" in out.description


def test_counts_add_up(made):
    _, _, pms, _ = made
    info = pms[0]
    assert quality.counts_add_up(info["counts"], info["frames_kept"], info["frames_total"], info["rejected"]).passed
    counts = info["counts"].copy()
    counts[0, 0] += 1
    assert not quality.counts_add_up(counts, info["frames_kept"], info["frames_total"], info["rejected"]).passed
    assert not quality.counts_add_up(info["counts"], info["frames_kept"], info["frames_total"] + 1,
                                     info["rejected"]).passed


def test_means_finite_and_modules_present(made):
    cfg, _, _, cube = made
    assert {n: c.passed for n, c in cube["checks"].items()} == {"means_finite": True, "all_modules_present": True}
    ds = xr.open_dataset(cube["path"], engine="h5netcdf").load()
    assert quality.means_finite(ds).passed
    assert quality.all_modules_present(ds, cfg.detector.modules).passed
    bad = ds.copy(deep=True)
    sel = np.argwhere(bad["count"].values > 0)[0]
    bad["mean"].values[tuple(sel)][0, 0] = np.nan
    assert quality.means_finite(bad).description == "1 NaN or infinite means in bins with frames"
    empty = ds.copy(deep=True)
    empty["mean"].values[empty["count"].values == 0] = np.inf
    if (ds["count"].values == 0).any():
        assert not quality.means_finite(empty).passed
    # Corrected data: a pixel masked in every frame of a bin has no mean there (pixel_count 0): not a failure.
    masked = ds.copy(deep=True)
    masked["pixel_count"] = xr.full_like(masked["mean"], 1, dtype=np.int32).where(masked["count"] > 0, 0)
    sel = tuple(np.argwhere(masked["count"].values > 0)[0])
    masked["mean"].values[sel][0, 0] = np.nan
    masked["pixel_count"].values[sel][0, 0] = 0
    assert quality.means_finite(masked).passed
    masked["mean"].values[sel][0, 1] = np.nan  # averaged over frames, yet NaN
    assert quality.means_finite(masked).description == "1 NaN or infinite means in bins with frames"
    no_frames = ds.copy(deep=True)
    no_frames["count"].loc[dict(module=1)] = 0
    out = quality.all_modules_present(no_frames, cfg.detector.modules)
    assert not out.passed and "[1]" in out.description
    assert not quality.all_modules_present(ds.sel(module=[0]), cfg.detector.modules).passed


def test_failing_blocking_check_fails_the_step_and_stops_downstream(tmp_path, session_beamtime):
    """framemask's kept-fraction check is blocking: its step fails, and the run's module steps refuse it."""
    path = make_beamtime(tmp_path, [small_run(2)], dark=None)
    data = yaml.safe_load(path.read_text())
    data["checks"] = {"min_kept_fraction": 0.99}
    path.write_text(yaml.safe_dump(data))
    from xfel_assets.defs.assets import ALL_ASSETS
    from xfel_assets.defs.resources import resources_for

    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("runs", ["r0002"])
        res = resources_for(path)
        ok = dg.materialize([a for a in ALL_ASSETS], selection=["raw_run"], partition_key="r0002",
                            instance=instance, resources=res)
        assert ok.success
        result = dg.materialize(ALL_ASSETS, selection=["framemask", "scan_variable"], partition_key="r0002",
                                instance=instance, resources=res, raise_on_error=False)
        assert not result.success
        evals = result.get_asset_check_evaluations()
        assert [(e.check_name, e.passed) for e in evals] == [("kept_fraction", False)]
        assert "< minimum 0.99" in evals[0].description
        failed = [e.step_key for e in result.all_events if e.is_step_failure]
        assert failed == ["framemask"]
        # A backfill's next run (a different partitioning) does not go on with it either.
        cfg = load_beamtime(path)
        with pytest.raises(RunDataError, match=r"framemask.h5: blocking check of framemask kept_fraction failed"):
            pipeline.make_preprocessed_module(cfg, "r0002", 0)
        assert not cfg.output_path("r0002", "preprocessed_module", 0).exists()
        # Good data, default bounds: the check passes in the same step.
        data["checks"] = {"min_kept_fraction": 0.1}
        path.write_text(yaml.safe_dump(data))
        again = dg.materialize(ALL_ASSETS, selection=["framemask"], partition_key="r0002", instance=instance,
                               resources=res)
        assert [(e.check_name, e.passed) for e in again.get_asset_check_evaluations()] == [("kept_fraction", True)]
