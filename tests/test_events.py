"""Event files (PAL-XFEL and generic layouts): small data and the cube against straightforward computations."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest
import xarray as xr

from xfel_core.config import load_beamtime
from xfel_core.demo import events as demo
from xfel_core.demo.beamtime import write_config
from xfel_core.events import pipeline as ep
from xfel_core.azimuthal import pyfai_profile
from xfel_core.readers.events import read_run
from xfel_core.exceptions import RunDataError

RUN = "r0002"


def beamtime(root, layout: str, runs=(2,), **events):
    demo.write_event_run(root / "raw" / "events", 1, layout, n_per_point=5, dark=True)
    truth = {r: demo.write_event_run(root / "raw" / "events", r, layout) for r in runs}
    section = demo.events_config("raw/events", layout)
    section.update(events)
    path = write_config(root, {"name": root.name, "raw_root": "raw", "processed_root": "processed", "events": section})
    return load_beamtime(path), truth


@pytest.fixture(scope="module", params=["pal", "generic"])
def processed(request, tmp_path_factory):
    cfg, truth = beamtime(tmp_path_factory.mktemp(request.param), request.param)
    info = ep.make_event_smalldata(cfg, RUN)
    cube = ep.make_event_cube(cfg, RUN)
    sd = xr.open_dataset(info["path"], engine="h5netcdf").load()
    return request.param, cfg, truth[2], sd, cube


def straightforward_images(cfg, run):
    """Every event's image (in the reader's event order), minus the dark (plain mean of the dark run), clipped at 0."""
    ev = cfg.events
    dark_run = read_run(ev, "r0001")
    dark = np.mean([img for blk in dark_run.blocks for img in _rows(blk)], axis=0)
    raw = read_run(ev, run)
    images = np.empty((raw.nevents,) + raw.shape)
    for blk in raw.blocks:
        images[blk.events] = _rows(blk)
    return raw, np.clip(images - dark, 0, None)


def _rows(block):
    with h5py.File(block.path, "r") as f:
        return f[block.dataset][()][block.rows].astype(np.float64)


def test_events_joined_on_timestamps(processed):
    layout, cfg, truth, sd, _ = processed
    lost = np.concatenate(list(truth.dropped.values()))
    expected = np.setdiff1d(truth.timestamp, lost)
    assert sorted(sd["timestamp"].values) == sorted(expected)
    if layout == "pal":  # 3 shots missing from the QBPM's list, 1 from the metadata's
        assert json.loads(sd.attrs["shots_missing_from"]) == {"images": 0, "QBPM": 3, "metadata": 1}
        assert sd.attrs["timestamp_join"] == "shots missing from the QBPM list: 3; from the metadata list: 1"
        assert sd.attrs["scan_source"] == "delay_value"
    order = np.searchsorted(truth.timestamp, sd["timestamp"].values)
    np.testing.assert_allclose(sd["i0"].values, truth.i0[order], rtol=1e-9)
    np.testing.assert_array_equal(sd["laser"].values == 1, truth.laser[order])


def test_roi_sums_and_profiles_equal_straightforward_and_pyfai(processed):
    _, cfg, truth, sd, _ = processed
    raw, images = straightforward_images(cfg, RUN)
    mask = sd["mask"].values.astype(bool)
    assert mask[truth.hot_pixel]  # the hot pixel is found and masked
    assert mask.sum() == 1
    images[:, mask] = 0
    for j, roi in enumerate(cfg.events.rois):
        np.testing.assert_allclose(sd["roi_sum"].values[:, j],
                                   images[:, roi.slices[0], roi.slices[1]].sum(axis=(1, 2)), rtol=1e-5)
    edges = sd["radial_edges"].values
    for i in (0, 17, 101):
        radial, intensity = pyfai_profile(cfg.events.geometry, images[i].astype(np.float32), mask, (edges[0], edges[-1]))
        np.testing.assert_allclose(sd["radial"].values, radial, rtol=1e-6)
        # pyFAI's histogram engine also puts pixels up to one bin below the range into the first bin
        # (its bin index is truncated towards zero); ours leaves them out, so compare from bin 1.
        np.testing.assert_allclose(sd["radial_profile"].values[i, 1:], intensity[1:], rtol=1e-5)


def test_ring_radius_recovered_within_one_bin(processed):
    _, _, truth, sd, _ = processed
    q = sd["radial"].values
    width = q[1] - q[0]
    kept = sd["kept"].values == 1
    delay = sd["scan"].values
    for laser in (0, 1):
        for d in (-1.0, 4.0):
            sel = kept & (sd["laser"].values == laser) & (delay == d)
            mean = sd["radial_profile_norm"].values[sel].mean(axis=0)
            found = q[np.argmax(mean)]
            assert abs(found - truth.ring_q(np.array([d]), np.array([bool(laser)]))[0]) <= width


def test_anomaly_removal_removes_exactly_the_planted_shots(processed):
    _, _, truth, sd, _ = processed
    planted = np.concatenate(list(truth.outliers.values()))
    rejected = sd["timestamp"].values[sd["kept"].values == 0]
    assert sorted(rejected) == sorted(planted)
    ts = sd["timestamp"].values
    assert set(ts[sd["anomaly_i0_band"].values == 1]) == set(truth.outliers["i0"])
    assert set(ts[sd["anomaly_saturated"].values == 1]) == set(truth.outliers["saturated"])
    assert set(ts[sd["anomaly_empty"].values == 1]) == set(truth.outliers["empty"])
    assert set(truth.outliers["intensity"]) <= set(ts[sd["anomaly_linear_model"].values == 1])


def test_timing_tool_corrected_binning(processed):
    _, cfg, truth, sd, _ = processed
    order = np.searchsorted(truth.timestamp, sd["timestamp"].values)
    corrected = truth.delay[order] + truth.timing_tool_fs[order] * 1e-3
    edges = np.asarray(cfg.events.binning.edges)
    expected = np.digitize(corrected, edges) - 1
    expected[(corrected < edges[0]) | (corrected > edges[-1])] = -1
    np.testing.assert_array_equal(sd["scan_point"].values, expected)
    np.testing.assert_allclose(sd["scan_corrected"].values, corrected)
    moved = (np.digitize(truth.delay[order], edges) - 1) != expected
    assert moved.any()  # the correction really moves shots between bins


def test_event_cube_equals_straightforward_means(processed):
    _, cfg, _, sd, cube = processed
    raw, images = straightforward_images(cfg, RUN)
    images[:, sd["mask"].values.astype(bool)] = 0
    ds = xr.open_dataset(cube["path"], engine="h5netcdf")
    assert ds["mean"].dims == ("scan_variable", "frame_type", "module", "y", "x")
    assert list(ds["frame_type"].values) == ["pumped", "unpumped"] and "difference" in ds
    kept = sd["kept"].values == 1
    i0 = sd["i0"].values
    factor = i0[kept].mean() / i0
    for b in (0, 3):
        for t, laser in ((0, 1), (1, 0)):
            sel = kept & (sd["scan_point"].values == b) & (sd["laser"].values == laser)
            expected = (images[sel] * factor[sel, None, None]).mean(axis=0)
            assert int(ds["count"].values[b, t, 0]) == sel.sum()
            np.testing.assert_allclose(ds["mean"].values[b, t, 0], expected, rtol=2e-4, atol=1e-3)


@pytest.mark.parametrize("layout, edit, message", [
    ("generic", lambda f: f.__delitem__("entry/monitor/i0"), "no dataset 'entry/monitor/i0'"),
    ("generic", lambda f: (f.__delitem__("entry/scan/delay"), f.__setitem__("entry/scan/delay", np.zeros(7))),
     "entry/scan/delay has shape (7,) but entry/data/images has 240 events"),
    ("pal", lambda f: f.__delitem__("qbpm/eh1/qbpm1/waveforms.ch3/block0_values"),
     "no dataset 'qbpm/eh1/qbpm1/waveforms.ch3/block0_values'"),
    ("pal", lambda f: (f.__delitem__("detector/eh1/jungfrau2/image/block0_items"),
                       f.__setitem__("detector/eh1/jungfrau2/image/block0_items", np.arange(3))),
     "but detector/eh1/jungfrau2/image/block0_items has 3 timestamps"),
])
def test_bad_files_name_the_dataset_and_write_nothing(tmp_path, layout, edit, message):
    cfg, _ = beamtime(tmp_path, layout)
    victim = read_run(cfg.events, RUN).files[0]
    with h5py.File(victim, "a") as f:
        edit(f)
    with pytest.raises(RunDataError, match=str(victim)) as err:
        ep.make_event_smalldata(cfg, RUN)
    assert message in str(err.value)
    assert not ep.output_path(cfg, RUN, ep.SMALLDATA_FILE).exists()


def test_truncated_file_and_config_errors(tmp_path):
    cfg, _ = beamtime(tmp_path, "generic")
    f = read_run(cfg.events, RUN).files[0]
    f.write_bytes(f.read_bytes()[:4096])
    with pytest.raises(RunDataError, match=f"{f}: not a readable HDF5 file"):
        ep.make_event_smalldata(cfg, RUN)
    from xfel_core.exceptions import ConfigError

    path = tmp_path / "beamtime.yaml"
    path.write_text(path.read_text().replace("layout: generic", "layout: pal").replace("energy_kev: 9.7", "energy_kev: 9.7\n    wavelength_m: 1.0e-10"))
    with pytest.raises(ConfigError, match="give exactly one of wavelength_m or energy_kev"):
        load_beamtime(path)


def test_a_run_whose_shots_are_all_rejected_gives_an_empty_cube(tmp_path):
    """Every shot below the I0 threshold: the small data says why for each, the cube has zero counts and NaN
    means (not an error: the run is recorded as it is), and the profiles are still each shot's."""
    cfg, _ = beamtime(tmp_path, "generic", anomalies={"saturation": demo.SATURATION, "i0_min": 1e9})
    sd = xr.open_dataset(ep.make_event_smalldata(cfg, RUN)["path"], engine="h5netcdf").load()
    assert int(sd["kept"].sum()) == 0 and bool((sd["anomaly_i0_min"] == 1).all())
    assert np.isfinite(sd["radial_profile"].values).any()
    ep.make_event_cube(cfg, RUN)
    cube = xr.open_dataset(ep.output_path(cfg, RUN, ep.CUBE_FILE), engine="h5netcdf").load()
    assert int(cube["count"].sum()) == 0 and bool(np.isnan(cube["mean"]).all())
