"""The binned cube against an independent straightforward computation (a loop over trains and frames)."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

from conftest import dark_run, make_beamtime, small_run
from xfel_core import binning_kernel
from xfel_core.euxfel import pipeline
from xfel_core.config import load_beamtime, run_key
from xfel_core.demo.beamtime import write_run


def run_all(cfg, runs):
    if cfg.dark_run is not None:
        for m in cfg.detector.modules:
            pipeline.make_dark(cfg, m)
    for r in runs:
        pipeline.make_raw_run(cfg, r)
        pipeline.make_scan_variable(cfg, r)
        pipeline.make_framemask(cfg, r)
        for m in cfg.detector.modules:
            pipeline.make_preprocessed_module(cfg, r, m)
        pipeline.make_binned_cube(cfg, r)
        yield xr.open_dataset(cfg.output_path(r, "binned_cube"), engine="h5netcdf")


def reference_cube(gen, dark_gen, cfg):
    """Per (scan point, frame type, module): mean, sem and count, by plain loops (float64)."""
    spec = gen.spec
    pattern = cfg.frame_pattern
    rules = cfg.framemask
    width = cfg.scan_variable.binning.bin_width
    nf = spec.frames_per_train if cfg.maxframes is None else min(cfg.maxframes, spec.frames_per_train)
    xray_slot = {}
    k = 0
    for p in range(spec.frames_per_train):
        if "dark" not in pattern[p % len(pattern)]:
            xray_slot[p] = k
            k += 1
    acc = {}
    for m in spec.modules:
        dark = None
        if dark_gen is not None:
            dark = dark_gen.frames[m].astype(np.float64).mean(axis=0)  # (cells, y, x); cell == position
        for t, tid in enumerate(gen.train_ids):
            if t in spec.suspect_trains or t in spec.missing_trains.get(m, []) or t in spec.zero_frame_trains:
                continue
            if t in spec.control_missing_trains:
                continue  # no scan value
            if int(tid) in rules.exclude_trains:
                continue
            point = round(float(np.rint(gen.delays[t] / width) * width), 9)
            for p in range(nf):
                if p in rules.exclude_frames:
                    continue
                if p in xray_slot and rules.min_pulse_energy_uj is not None:
                    if gen.pulse_energy[t, xray_slot[p]] < rules.min_pulse_energy_uj:
                        continue
                x = gen.frames[m][t, p].astype(np.float64)
                if dark is not None:
                    x = x - dark[p]
                acc.setdefault((point, pattern[p % len(pattern)], m), []).append(x)
    return {key: (np.mean(v, axis=0), np.std(v, axis=0, ddof=1) / np.sqrt(len(v)) if len(v) > 1 else None, len(v))
            for key, v in acc.items()}


def assert_cube_matches(ds, ref):
    total = 0
    for (point, ftype, m), (mean, sem, n) in ref.items():
        sel = dict(scan_variable=point, frame_type=ftype, module=m)
        assert int(ds["count"].sel(sel)) == n, sel
        np.testing.assert_allclose(ds["mean"].sel(sel).values, mean, rtol=2e-6, atol=2e-4, err_msg=str(sel))
        if sem is not None:
            np.testing.assert_allclose(ds["sem"].sel(sel).values, sem, rtol=1e-4, atol=1e-4, err_msg=str(sel))
        total += n
    assert int(ds["count"].sum()) == total
    assert ds.attrs["frames_kept"] == total


@pytest.mark.parametrize("case", ["quirks", "darks_in_pattern", "maxframes_and_exclusions", "odd_chunks"])
def test_binned_cube_equals_straightforward_computation(tmp_path, case):
    pattern = ["pumped", "unpumped"]
    spec_kw = dict(trains_per_sequence=5, missing_trains={0: [2], 1: [9]}, zero_frame_trains=[4],
                   control_missing_trains=[11], suspect_trains=[6], low_pulse_fraction=0.2)
    config = {}
    if case == "darks_in_pattern":
        pattern = ["pumped", "pumped_dark", "unpumped", "unpumped_dark"]
        spec_kw.update(frames_per_train=8)
    elif case == "maxframes_and_exclusions":
        config = {"maxframes": 4}
    elif case == "odd_chunks":
        spec_kw.update(chunk_frames=5, frames_per_train=7)
        config = {"chunk_frames": 3}
    spec = small_run(2, frame_pattern=pattern, **spec_kw)
    dark = dark_run(frames=spec.frames_per_train)
    path = make_beamtime(tmp_path, [], **config)
    gen = write_run(tmp_path / "raw", spec)
    dark_gen = write_run(tmp_path / "raw", dark)
    cfg_data = path.read_text().replace("dark_run: null", "dark_run: 1")
    cfg_data = cfg_data.replace("- pumped\n- unpumped\n", "".join(f"- {n}\n" for n in pattern))
    path.write_text(cfg_data)
    cfg = load_beamtime(path)
    if case == "maxframes_and_exclusions":
        rules = cfg.framemask.model_copy(update={"exclude_trains": [int(gen.train_ids[8])], "exclude_frames": [1]})
        cfg = cfg.model_copy(update={"framemask": rules})
    (ds,) = run_all(cfg, [run_key(2)])
    assert_cube_matches(ds, reference_cube(gen, dark_gen, cfg))
    if "pumped" in pattern and "unpumped" in pattern:
        diff = ds["mean"].sel(frame_type="pumped") - ds["mean"].sel(frame_type="unpumped")
        np.testing.assert_allclose(ds["difference"].values, diff.values, equal_nan=True)
    assert ds["mean"].attrs["units"] == "ADU" and ds["scan_variable"].attrs["units"] == "ps"


def test_pump_probe_signal_recovers_with_delay(tmp_path):
    """The demo's physics comes through: the pumped peak drops after time zero and recovers."""
    spec = small_run(2, ntrains=30, frames_per_train=4, scan_points=6, low_pulse_fraction=0.0)
    path = make_beamtime(tmp_path, [spec], dark=dark_run(frames=4))
    (ds,) = run_all(load_beamtime(path), ["r0002"])
    drop = -ds["difference"].sel(module=0).min(["y", "x"]).values  # largest loss of intensity per delay
    assert drop[0] < 5  # -1 ps: before time zero, no change
    assert drop[2] > 100  # 1 ps: strongly bleached
    assert drop[2] > drop[3] > drop[4] > drop[5]  # exponential recovery


@pytest.mark.parametrize("threads", [1, 2])
def test_kernel_matches_numpy_reference(threads):
    rng = np.random.default_rng(3)
    n, npix, ngroups = 700, 5000, 7  # several kernel batches
    for dtype in (np.uint16, np.float32, np.int32):
        frames = (rng.random((n, npix)) * 1000).astype(dtype)
        # frames scattered in a flat array, as in a file with gaps between chunks
        offsets = np.arange(n, dtype=np.int64)[::-1] * (npix + 3)
        data = np.zeros(n * (npix + 3), dtype)
        data[offsets[:, None] + np.arange(npix)] = frames
        group = rng.integers(-1, ngroups, n)
        group[100:400] = -1  # a whole masked batch
        dark_row = rng.integers(0, 4, n)
        dark = rng.random((4, npix)).astype(np.float32) * 50
        for d in (dark, None):
            acc = binning_kernel.Accumulators(ngroups, npix, threads)
            acc.add(data, offsets, group, dark_row, d)
            got = acc.result()
            ref = (np.zeros((ngroups, npix)), np.zeros((ngroups, npix)), np.zeros(ngroups, np.int64))
            binning_kernel.accumulate_numpy(data, offsets, npix, group, dark_row, d, *ref)
            for a, b in zip(got, ref):
                np.testing.assert_allclose(a, b, rtol=1e-12)
            # and a direct float64 computation of one group
            sel = group == 2
            x = frames[sel].astype(np.float64) - (d[dark_row[sel]] if d is not None else 0)
            np.testing.assert_allclose(got[0][2], x.sum(0), rtol=1e-12)
            np.testing.assert_allclose(got[1][2], (x * x).sum(0), rtol=1e-12)
            assert got[2][2] == sel.sum()


def test_all_frames_masked_gives_nan_means_and_zero_counts(tmp_path):
    spec = small_run(2)
    path = make_beamtime(tmp_path, [spec], dark=dark_run())
    cfg = load_beamtime(path)
    cfg = cfg.model_copy(update={"framemask": cfg.framemask.model_copy(update={"exclude_frames": list(range(6))}),
                                 "checks": cfg.checks.model_copy(update={"min_kept_fraction": 0.0})})
    (ds,) = run_all(cfg, ["r0002"])
    assert int(ds["count"].sum()) == 0
    assert np.isnan(ds["mean"].values).all()
    assert ds.attrs["check_means_finite"] == "passed"  # empty bins are NaN by design
    assert ds.attrs["check_all_modules_present"].startswith("failed: modules without frames: [0, 1]")


@pytest.mark.parametrize("threads", [1, 2])
def test_masked_kernel_equals_numpy_reference_and_a_direct_sum(threads):
    """Per-pixel masks (corrected data): a pixel with a masked bit set adds nothing and is not counted."""
    rng = np.random.default_rng(3)
    n, npix, ngroups = 2100, 300, 3  # more than one batch of frames
    frames = rng.normal(100, 10, (n, npix)).astype(np.float32)
    masks = np.where(rng.random((n, npix)) < 0.1, rng.choice(np.array([1, 4], np.uint32), (n, npix)), 0)
    masks = masks.astype(np.uint32)
    group = rng.integers(-1, ngroups, n)
    offsets = np.arange(n, dtype=np.int64) * npix
    dark_row = rng.integers(0, 2, n)
    dark = rng.random((2, npix)).astype(np.float32)
    for bits in (0xFFFFFFFF, 4):
        acc = binning_kernel.Accumulators(ngroups, npix, threads, per_pixel=True)
        acc.add(frames.ravel(), offsets, group, dark_row, dark, mask=(masks.ravel(), offsets, bits))
        got = (*acc.result(), acc.pixel_counts)
        ref = (np.zeros((ngroups, npix)), np.zeros((ngroups, npix)), np.zeros(ngroups, np.int64),
               np.zeros((ngroups, npix), np.int64))
        binning_kernel.accumulate_numpy(frames.ravel(), offsets, npix, group, dark_row, dark, *ref[:3],
                                        mask=(masks.ravel(), offsets, bits, ref[3]))
        for a, b in zip(got, ref):
            np.testing.assert_allclose(a, b, rtol=1e-12)
        sel = group == 1
        good = (masks[sel] & bits) == 0
        x = np.where(good, frames[sel].astype(np.float64) - dark[dark_row[sel]], 0)
        np.testing.assert_allclose(got[0][1], x.sum(0), rtol=1e-12)
        assert (got[3][1] == good.sum(0)).all() and got[2][1] == sel.sum()


def test_finalize_equals_its_numpy_reference():
    """Means and standard errors, compiled, against the numpy reference: counts per group and per pixel, with
    groups and pixels of 0 and 1 frames (NaN mean, NaN error)."""
    rng = np.random.default_rng(4)
    sums = rng.normal(50, 20, (6, 2, 7, 9))
    sumsq = sums ** 2 / 3 + rng.random(sums.shape) * 100
    for counts in (np.array([[0, 1], [2, 3], [5, 1], [0, 0], [9, 4], [1, 2]]), rng.integers(0, 4, sums.shape)):
        got = binning_kernel.finalize(sums, sumsq, counts)
        ref = binning_kernel.finalize_numpy(sums, sumsq, counts)
        for a, b in zip(got, ref):
            np.testing.assert_allclose(a, b, rtol=1e-12, equal_nan=True)
        n = np.broadcast_to(counts.reshape(counts.shape + (1,) * (4 - counts.ndim)), sums.shape)
        assert np.isnan(got[0][n == 0]).all() and np.isnan(got[1][n < 2]).all() and np.isfinite(got[1][n > 1]).all()
