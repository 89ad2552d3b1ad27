"""PAL-XFEL raw files as the facility writes them: the demo read the way the PAL-XFEL toolkit's loader reads
it, runs of many scan-point files in several scan folders, the pump-laser rule and the scan column's priority."""

from __future__ import annotations

import h5py
import numpy as np
import pandas as pd
import pytest

from xfel_core.config import load_beamtime
from xfel_core.demo import events as demo
from xfel_core.demo.beamtime import write_config
from xfel_core.exceptions import ConfigError, RunDataError
from xfel_core.readers.events import read_run, run_files

RUN = "r0002"
POINTS = len(demo.DELAYS_PS)


def beamtime(root, scans: int = 2, n_per_point: int = 6, **pal):
    truth = demo.write_event_run(root / "raw" / "events", 2, "pal", n_per_point=n_per_point,
                                 scans=scans)
    section = demo.events_config("raw/events", "pal")
    section["pal"].update(pal)
    path = write_config(root, {"name": "pal", "raw_root": "raw", "processed_root": "processed", "events": section})
    return load_beamtime(path), truth


def toolkit_read(path, xray: str = "HX", pump_setting: str = "15HZ") -> pd.DataFrame:
    """One scan-point file as the PAL-XFEL toolkit's HDF5FileLoader reads it (hutch eh1, detector jungfrau2):
    images, QBPM (4 channels summed over channels and samples) and metadata merged on the timestamp; the pump
    state from timestamp_info.RATE_<xray>_<pump_setting> (0HZ: none); the delay th_value, else delay_value,
    of the first shot."""
    metadata = pd.read_hdf(path, key="metadata")
    with h5py.File(path, "r") as hf:
        image_group = hf["detector/eh1/jungfrau2/image"]
        images_ts = np.asarray(image_group["block0_items"], dtype=np.int64)
        images = np.asarray(image_group["block0_values"], dtype=np.float32)
        qbpm_group = hf["qbpm/eh1/qbpm1"]
        qbpm_ts = np.asarray(qbpm_group["waveforms.ch1/axis1"], dtype=np.int64)
        qbpm = np.stack([qbpm_group[f"waveforms.ch{i + 1}/block0_values"] for i in range(4)], axis=0,
                        dtype=np.float32).sum(axis=(0, 2))
    image_df = pd.DataFrame({"timestamp": images_ts, "image": list(images)}).set_index("timestamp")
    qbpm_df = pd.DataFrame({"timestamp": qbpm_ts, "qbpm": list(qbpm)}).set_index("timestamp")
    merged = pd.merge(image_df, qbpm_df, left_index=True, right_index=True, how="inner")
    merged = pd.merge(metadata, merged, left_index=True, right_index=True, how="inner")
    merged["pump"] = (np.zeros(len(merged), bool) if pump_setting == "0HZ"
                      else np.asarray(merged[f"timestamp_info.RATE_{xray}_{pump_setting}"], dtype=bool))
    column = "th_value" if "th_value" in merged else "delay_value"
    merged["delay"] = np.asarray(merged[column], dtype=np.float64)[0]
    return merged


def test_the_demo_run_is_what_the_facility_writes_and_reads_as_its_toolkit_reads_it(tmp_path):
    cfg, truth = beamtime(tmp_path)
    files = run_files(cfg.events, RUN)
    # One file per scan point in each of two scan folders of the run's folder.
    assert [str(p.relative_to(cfg.events.raw_root)) for p in files] == [
        f"run=002/scan={s:03d}/p{p:04d}.h5" for s in (1, 2) for p in range(1, POINTS + 1)]
    ours = read_run(cfg.events, RUN)
    assert ours.files == files
    theirs = [toolkit_read(p) for p in files]
    assert ours.nevents == sum(len(t) for t in theirs) == len(truth.timestamp) - 4
    for block, t in zip(ours.blocks, theirs):
        ev = block.events[np.argsort(ours.timestamp[block.events])]
        t = t.sort_index()
        np.testing.assert_array_equal(ours.timestamp[ev], t.index.to_numpy(np.int64))
        np.testing.assert_allclose(ours.i0[ev], t["qbpm"].to_numpy(np.float64), rtol=1e-6)
        np.testing.assert_array_equal(ours.laser[ev], t["pump"].to_numpy())
        np.testing.assert_array_equal(ours.scan[ev], t["delay"].to_numpy())
        with h5py.File(block.path, "r") as f:
            images = f[block.dataset][()][block.rows]  # the images of block.events
        order = np.argsort(ours.timestamp[block.events])
        np.testing.assert_array_equal(images[order], np.stack(t["image"].to_numpy()))
    # The pump fired on every second shot of the 30 Hz line (15 Hz): half the shots, as generated.
    lost = np.concatenate(list(truth.dropped.values()))
    assert ours.laser.sum() == truth.laser[~np.isin(truth.timestamp, lost)].sum()
    assert ours.missing == {"images": 0, "QBPM": 3, "metadata": 1}


@pytest.mark.parametrize("pal, expected", [
    ({}, "15HZ"),  # the toolkit's default: the HX line, the pump at 15 Hz
    ({"pump_rate": "0HZ"}, "0HZ"),  # no pump: every shot laser off
    ({"pump_rate": 30}, "30HZ"),  # every shot of the 30 Hz line
    ({"laser_column": "timestamp_info.RATE_HX_10HZ"}, "10HZ"),  # the column named directly (the old key)
])
def test_the_pump_flag_follows_the_x_ray_line_and_the_pump_rate_as_the_toolkit_reads_it(tmp_path, pal, expected):
    cfg, _ = beamtime(tmp_path, scans=1, n_per_point=3, **pal)
    ours = read_run(cfg.events, RUN)
    theirs = pd.concat([toolkit_read(p, pump_setting=expected) for p in run_files(cfg.events, RUN)])
    assert ours.laser.sum() == theirs["pump"].sum()
    np.testing.assert_array_equal(ours.laser[np.argsort(ours.timestamp)], theirs.sort_index()["pump"].to_numpy())
    assert ours.laser.sum() == {"0HZ": 0, "30HZ": ours.nevents}.get(expected, ours.laser.sum())


def test_a_rate_column_the_files_lack_is_named_with_the_ones_they_have(tmp_path):
    cfg, _ = beamtime(tmp_path, scans=1, n_per_point=3, xray_line="SX")
    with pytest.raises(RunDataError, match=r"p0001\.h5: metadata has no column 'timestamp_info.RATE_SX_15HZ' "
                                           r"\(from events.pal.xray_line and .pump_rate\); its rate columns: "
                                           r"\['timestamp_info.RATE_HX_60HZ'"):
        read_run(cfg.events, RUN)
    for bad in ("fast", "15 kHz", True):
        with pytest.raises(ConfigError, match="pump_rate"):
            beamtime(tmp_path / str(bad), scans=1, n_per_point=3, pump_rate=bad)
    assert beamtime(tmp_path / "lower", scans=1, n_per_point=3, pump_rate="15hz")[0].events.pal.pump_rate == "15HZ"


def with_pal(cfg, **pal):
    """The events section of ``cfg`` with these keys of its pal section changed."""
    return cfg.events.model_copy(update={"pal": cfg.events.pal.model_validate({**cfg.events.pal.model_dump(), **pal})})


def add_th_value(cfg, values) -> None:
    """Give every file of the run a th_value column (values(point, n) per scan-point file)."""
    for i, path in enumerate(run_files(cfg.events, RUN)):
        meta = pd.read_hdf(path, key="metadata")
        meta["th_value"] = values(i, len(meta))
        meta.to_hdf(path, key="metadata", mode="a", format="fixed")


def test_the_scan_column_is_the_first_of_the_priority_list_that_varies(tmp_path):
    cfg, truth = beamtime(tmp_path, scans=1, n_per_point=3)
    # A delay scan whose files also record the (fixed) sample angle: the delay, which varies.
    add_th_value(cfg, lambda i, n: np.full(n, 12.5))
    run = read_run(cfg.events, RUN)
    assert run.scan_name == "delay_value" and sorted(set(run.scan)) == sorted(demo.DELAYS_PS)
    # A rocking scan (the angle varies): th_value first, as the toolkit takes it.
    add_th_value(cfg, lambda i, n: np.full(n, 10.0 + 0.1 * i))
    run = read_run(cfg.events, RUN)
    assert run.scan_name == "th_value" and len(set(run.scan)) == POINTS
    for i, p in enumerate(run_files(cfg.events, RUN)):
        np.testing.assert_allclose(toolkit_read(p)["delay"], 10.0 + 0.1 * i)
    # The column named: that one.
    assert read_run(with_pal(cfg, scan_column="delay_value"), RUN).scan_name == "delay_value"
    # A column no file has: the error names the files and their columns.
    with pytest.raises(RunDataError, match=r"no scan column of \['angle'\] \(events.pal.scan_column\) is in the "
                                           r"metadata of every file of the run: .*p0001\.h5 has none of them"):
        read_run(with_pal(cfg, scan_column="angle"), RUN)
