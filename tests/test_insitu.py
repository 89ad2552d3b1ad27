"""In-situ TIFF series against the simulated truth: corrections, ROI quantities, attenuation correction, bad input."""

from __future__ import annotations

import datetime as dt
import shutil
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
import tifffile
import yaml

from xfel_core.config import AttenuationOverride, Roi, load_beamtime
from xfel_core.demo.beamtime import write_config
from xfel_core.demo.insitu import BACKGROUND_RATE, demo_rois, insitu_config, write_insitu_sample
from xfel_core.exceptions import ConfigError, RunDataError
from xfel_core.insitu import layout
from xfel_core.insitu import pipeline as ip
from xfel_core.rois import dump_rois, fwhm, load_rois
from xfel_core.readers.tiff import TiffDataError, format_pilatus_header

SHAPE = (96, 160)
FRAMES = 30
MEASUREMENTS = ("growth01", "growth02", "anneal03")
GAUSS_FWHM = 2.0 * np.sqrt(2.0 * np.log(2.0))


def insitu_beamtime(root: Path, **insitu) -> Path:
    """A beamtime.yaml with only an insitu section, for the samples under root/raw/insitu."""
    section = insitu_config("raw/insitu", SHAPE)
    section.update(insitu)
    return write_config(root, {"name": root.name, "raw_root": "raw", "processed_root": "processed",
                               "insitu": section})


def keys_of(sample: str) -> list[str]:
    return [f"{sample}/{sample}_{m}" for m in MEASUREMENTS]


def process(cfg, sample: str) -> dict:
    for key in keys_of(sample):
        ip.make_insitu_frames(cfg, key)
        ip.make_roi_series(cfg, key)
    return ip.make_attenuation_corrected_series(cfg, sample)


@pytest.fixture(scope="module")
def samples(tmp_path_factory):
    """Two samples: GaN01 with the filter transmission in its headers, GaN02 without; both processed."""
    root = tmp_path_factory.mktemp("insitu")
    truth = {"GaN01": write_insitu_sample(root / "raw" / "insitu", "GaN01", MEASUREMENTS, FRAMES, SHAPE, seed=1),
             "GaN02": write_insitu_sample(root / "raw" / "insitu", "GaN02", MEASUREMENTS, FRAMES, SHAPE, seed=2,
                                          header_transmission=False)}
    cfg = load_beamtime(insitu_beamtime(root))
    results = {s: process(cfg, s) for s in truth}
    return cfg, truth, results


def true_changes(truth) -> list[int]:
    return [int(i) + 1 for i in np.flatnonzero(np.diff(truth.transmission))]


def test_demo_has_attenuator_changes_mid_measurement_and_across_a_pause(samples):
    _, truth, _ = samples
    changes = true_changes(truth["GaN01"])
    assert len(changes) >= 3
    assert any(i % FRAMES != 0 for i in changes) and any(i % FRAMES == 0 for i in changes)


def test_frames_corrected_against_truth(samples):
    """Dead and hot pixels gone, flat-field and background removed, times equal the headers'."""
    cfg, truth, _ = samples
    tr = truth["GaN01"]
    key = keys_of("GaN01")[0]
    with h5py.File(layout.measurement_output(cfg, key, ip.FRAMES_FILE), "r") as f:
        images = f["images"][()]
        times = f["time"][()]
        background = f["background"][()]
        files = f["files"].asstr()[()]
    n = len(images)
    expected = np.stack([tr.expected_counts(i) for i in range(n)])
    # Times: the header's local date-time in Asia/Tokyo, as UNIX seconds.
    np.testing.assert_allclose(times, tr.time[:n], rtol=0, atol=1e-3)
    header = tifffile.TiffFile(layout.measurement_dir(cfg.insitu, key) / files[0]).pages.first.description
    stamp = dt.datetime.fromisoformat(header.split("\n")[1].strip("# \r")).replace(tzinfo=dt.timezone(dt.timedelta(hours=9)))
    assert stamp.timestamp() == pytest.approx(times[0], abs=1e-3)
    # Dead pixels (0 counts) and hot pixels (+2e4 counts) replaced by their neighbourhood.
    assert np.abs(images[:, tr.hot]).max() < 50
    on_peak = tr.dead & (expected.min(axis=0) > 100)
    assert on_peak.any()
    np.testing.assert_allclose(images[:, on_peak], expected[:, on_peak], rtol=0.25)
    # Flat-field: on the peak the corrected counts follow the truth without the 8 % pixel sensitivity.
    bright = (expected > 400) & ~(tr.dead | tr.hot)[None]
    ratio = images[bright] / expected[bright]
    assert abs(np.median(ratio) - 1) < 0.02
    assert ratio.std() < 0.06
    raw_ratio = (expected * tr.sensitivity)[bright] / expected[bright]
    assert raw_ratio.std() > 0.07  # what the flat-field removed
    # Background: BACKGROUND_RATE x exposure x transmission per pixel, measured and subtracted.
    np.testing.assert_allclose(background, BACKGROUND_RATE * tr.exposure_s[:n] * tr.transmission[:n], rtol=0.03)
    assert abs(images[:, :24, :].mean()) < 0.05


def test_the_frames_file_opens_with_xarrays_defaults_its_times_decoded(samples):
    """Seen: insitu_frames.h5 did not open with xr.open_dataset's defaults (its time units could not be decoded)."""
    import xarray as xr

    cfg, truth, _ = samples
    path = layout.measurement_output(cfg, keys_of("GaN01")[0], ip.FRAMES_FILE)
    with h5py.File(path, "r") as f:
        seconds = f["time"][()]
    with xr.open_dataset(path, engine="h5netcdf") as ds:
        decoded = ds["time"].values
    assert decoded.dtype.kind == "M"
    np.testing.assert_allclose((decoded - np.datetime64(0, "s")) / np.timedelta64(1, "ms") / 1e3, seconds, atol=1e-3)


def test_roi_series_follows_the_peak(samples):
    cfg, truth, _ = samples
    tr = truth["GaN01"]
    df = pd.concat([pd.read_parquet(layout.measurement_output(cfg, k, ip.ROI_SERIES_FILE)) for k in keys_of("GaN01")])
    assert len(df) == 3 * FRAMES
    np.testing.assert_allclose(df["peak_com_y"], tr.centre_y, atol=0.3)
    np.testing.assert_allclose(df["peak_com_x"], tr.centre_x, atol=0.3)
    np.testing.assert_allclose(df["width_fwhm_y"], GAUSS_FWHM * tr.sigma_y, rtol=0.06)
    np.testing.assert_allclose(df["width_fwhm_x"], GAUSS_FWHM * tr.sigma_x, rtol=0.06)
    np.testing.assert_allclose(df["bragg_sum"], tr.rate * tr.exposure_s * tr.transmission, rtol=0.03)
    csv = pd.read_csv(layout.measurement_output(cfg, keys_of("GaN01")[0], "roi_series.csv"))
    assert list(csv.columns) == list(df.columns) and len(csv) == FRAMES


@pytest.mark.parametrize("sample", ["GaN01", "GaN02"])
def test_attenuation_corrected_series_is_the_unattenuated_intensity(samples, sample):
    """Every change found (header or step), corrected; continuous across each; equal to the truth."""
    cfg, truth, results = samples
    tr = truth[sample]
    info = results[sample]
    df = pd.read_parquet(info["path"])
    assert list(info["changes"]["index"]) == true_changes(tr)
    assert set(info["changes"]["found_by"]) == ({"header"} if sample == "GaN01" else {"step"})
    corrected = df["bragg_sum_corrected"].to_numpy()
    ratio = corrected / tr.rate
    if sample == "GaN02":
        ratio = ratio / ratio[0]  # without transmissions: relative to the first frame's attenuation
    np.testing.assert_allclose(ratio, 1.0, atol=0.05)
    for i in true_changes(tr):  # the jump is gone to within noise
        assert abs(ratio[i] / ratio[i - 1] - 1) < 0.03
    measured = df["bragg_sum_rate"].to_numpy() / tr.rate
    assert np.ptp(measured) > 0.8  # what was corrected
    assert info["checks"]["continuous_across_changes"].passed
    assert info["checks"]["all_measurements_included"].passed
    assert info["path"].with_suffix(".png").stat().st_size < 1_000_000


def test_header_method_and_overrides(samples, tmp_path):
    """method: header uses 1/T exactly; an override replaces a factor or removes a change."""
    cfg, truth, _ = samples
    tr = truth["GaN01"]
    changes = true_changes(tr)
    other = cfg.model_copy(update={"insitu": cfg.insitu.model_copy(update={
        "processed_root": tmp_path, "attenuation": cfg.insitu.attenuation.model_copy(update={"method": "header"})})})
    for key in keys_of("GaN01"):
        shutil.copytree(layout.measurement_output(cfg, key, "x").parent, tmp_path / key)
    info = ip.make_attenuation_corrected_series(other, "GaN01")
    assert set(info["changes"]["used"]) == {"nominal"}
    df = pd.read_parquet(info["path"])
    np.testing.assert_allclose(df["bragg_sum_corrected"] / tr.rate, 1.0, atol=0.03)

    t_change = float(tr.time[changes[1]])
    att = other.insitu.attenuation.model_copy(update={"overrides": [
        AttenuationOverride(sample="GaN01", time=t_change - 0.5, factor=None),  # UNIX seconds
        AttenuationOverride(sample="GaN01", factor=3.0,  # an ISO date-time with its offset
                            time=dt.datetime.fromtimestamp(tr.time[changes[2]], dt.timezone.utc).isoformat()),
    ]})
    other = other.model_copy(update={"insitu": other.insitu.model_copy(update={"attenuation": att})})
    info = ip.make_attenuation_corrected_series(other, "GaN01")
    table = info["changes"]
    assert changes[1] not in list(table["index"])
    row = table[table["index"] == changes[2]].iloc[0]
    assert row["used"] == "override" and row["factor"] == 3.0
    assert not info["checks"]["continuous_across_changes"].passed  # a removed change leaves its jump


def test_fwhm_of_sampled_gaussians():
    x = np.arange(41.0)
    sig = np.array([1.5, 2.0, 3.0, 5.0])
    prof = np.exp(-0.5 * ((x[None] - 20.3) / sig[:, None]) ** 2) * 100 + 3
    np.testing.assert_allclose(fwhm(prof), GAUSS_FWHM * sig, rtol=0.03)
    assert np.isnan(fwhm(np.linspace(0, 1, 41)[None]))[0]  # no peak: no width


# ---------------------------------------------------------------- bad input


@pytest.fixture
def one_sample(tmp_path):
    write_insitu_sample(tmp_path / "raw" / "insitu", "S1", ("m1",), 6, SHAPE, seed=3)
    return load_beamtime(insitu_beamtime(tmp_path))


def test_truncated_tiff_names_the_file_and_writes_nothing(one_sample):
    cfg = one_sample
    key = "S1/S1_m1"
    victim = layout.tiff_files(layout.measurement_dir(cfg.insitu, key))[3]
    victim.write_bytes(victim.read_bytes()[: victim.stat().st_size // 2])
    with pytest.raises(TiffDataError, match=f"{victim}.*truncated"):
        ip.make_insitu_frames(cfg, key)
    out = layout.measurement_output(cfg, key, ip.FRAMES_FILE)
    assert not out.parent.exists() or not list(out.parent.iterdir())


@pytest.mark.parametrize("description, message", [
    ("no header here", "no Pilatus header"),
    ("# Detector: PILATUS 100K\r\n# Exposure_time 1.0 s\r\n", "no acquisition date-time"),
    ("# Detector: PILATUS 100K\r\n# 2026-11-20T14:00:00.000\r\n", "no valid Exposure_time"),
    (format_pilatus_header(dt.datetime(2026, 11, 20), 1.0, None).replace("# Wavelength", "# Filter_transmission 7\r\n# W"),
     "Filter_transmission 7.0 is not in"),
])
def test_broken_header_names_the_file(one_sample, description, message):
    cfg = one_sample
    key = "S1/S1_m1"
    victim = layout.tiff_files(layout.measurement_dir(cfg.insitu, key))[2]
    tifffile.imwrite(victim, np.zeros(SHAPE, np.int32), description=description, software="TVX TIFF", metadata=None)
    with pytest.raises(TiffDataError, match=str(victim)) as err:
        ip.make_insitu_frames(cfg, key)
    assert message in str(err.value)
    assert not layout.measurement_output(cfg, key, ip.FRAMES_FILE).exists()


def test_refuses_to_overwrite_a_different_output_unless_asked(one_sample):
    cfg = one_sample
    key = "S1/S1_m1"
    first = ip.make_insitu_frames(cfg, key)
    again = ip.make_insitu_frames(cfg, key)  # same inputs and settings: the same output, rewritten
    assert again["lineage_version"] == first["lineage_version"]
    other = cfg.model_copy(update={"insitu": cfg.insitu.model_copy(update={"median_filter": "all"})})
    path = layout.measurement_output(cfg, key, ip.FRAMES_FILE)
    before = path.read_bytes()
    with pytest.raises(ip.OutputExistsError, match=f"{path} exists and was made from other"):
        ip.make_insitu_frames(other, key)
    assert path.read_bytes() == before
    assert ip.make_insitu_frames(other, key, overwrite=True)["lineage_version"] != first["lineage_version"]


def test_missing_flatfield_and_rois_outside_the_detector(one_sample):
    cfg = one_sample
    key = "S1/S1_m1"
    ip.make_insitu_frames(cfg, key)
    wide = [{"name": "big", "role": "intensity", "y": [0, 10], "x": [0, SHAPE[1] + 1]}]
    bad = cfg.model_copy(update={"insitu": cfg.insitu.model_copy(update={"rois": [
        Roi.model_validate(wide[0])]})})
    with pytest.raises(ConfigError, match="ROI 'big'.*outside the detector"):
        ip.make_roi_series(bad, key)
    shutil.rmtree(cfg.insitu.raw_root / "S1" / "flatfield")
    with pytest.raises(RunDataError, match="no flat-field TIFFs for sample S1"):
        ip.make_insitu_frames(cfg, key, overwrite=True)


def test_config_errors_name_the_key(tmp_path):
    path = insitu_beamtime(tmp_path, timezone="Mars/Olympus")
    with pytest.raises(ConfigError, match="insitu.timezone: .*unknown time zone 'Mars/Olympus'"):
        load_beamtime(path)
    path = insitu_beamtime(tmp_path, rois=[{"name": "a", "role": "peak", "y": [0, 5], "x": [0, 5]}])
    with pytest.raises(ConfigError, match=r"insitu.rois.0.role"):
        load_beamtime(path)
    path = insitu_beamtime(tmp_path, background_regions=[{"y": [5, 2], "x": [0, 5]}])
    with pytest.raises(ConfigError, match=r"insitu.background_regions.0.y"):
        load_beamtime(path)


# ---------------------------------------------------------------- ROI files


def test_roi_file_round_trip_and_used_by_roi_series(one_sample, tmp_path):
    cfg = one_sample
    rois = [Roi.model_validate(r) for r in demo_rois(SHAPE)]
    path = dump_rois(tmp_path / "rois.yaml", rois, SHAPE)
    assert load_rois(path) == rois
    # A ROI file with only one intensity ROI replaces the config's ROIs in roi_series.
    only = dump_rois(tmp_path / "only.yaml", [rois[2]])
    key = "S1/S1_m1"
    ip.make_insitu_frames(cfg, key)
    with_file = cfg.model_copy(update={"insitu": cfg.insitu.model_copy(update={"roi_file": only})})
    info = ip.make_roi_series(with_file, key)
    assert [c for c in info["columns"] if c.startswith(("peak", "width", "bragg", "side"))] == ["bragg_sum"]
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"rois": [{"name": "x", "role": "com", "y": [3, 1], "x": [0, 4]}]}))
    with pytest.raises(ConfigError, match=f"ROI file {bad}, ROI 0"):
        load_rois(bad)


def test_roi_commands(tmp_path, capsys):
    from xfel_assets.cli.main import main

    path = tmp_path / "rois.yaml"
    assert main(["roi", "save", str(path), "--roi", "peak:com:10:30:40:80", "--roi", "bragg:intensity:10:30:40:80"]) == 0
    assert "wrote 2 ROIs" in capsys.readouterr().out
    assert [(r.name, r.role, r.y, r.x) for r in load_rois(path)] == [
        ("peak", "com", (10, 30), (40, 80)), ("bragg", "intensity", (10, 30), (40, 80))]
    assert main(["roi", "load", str(path)]) == 0
    out = capsys.readouterr().out
    assert "peak" in out and "[10, 30)" in out
    assert main(["roi", "save", str(path), "--roi", "peak:nonsense:1:2:3:4"]) == 2
    assert "--roi 'peak:nonsense:1:2:3:4'" in capsys.readouterr().err
