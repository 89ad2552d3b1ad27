"""Every European XFEL imaging detector, raw and corrected, written by EXtra-data's mock writer: the binned
cube against a plain loop over EXtra-data's own arrays (its masked_data for corrected data), and bad input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from test_science import run_all
from xfel_core.config import load_beamtime
from xfel_core.demo.beamtime import write_config
from xfel_core.demo.detectors import MOTOR_KEY, MOTOR_SOURCE, write_mock_run
from xfel_core.euxfel import pipeline
from xfel_core.exceptions import RunDataError

PATTERN = ["pumped", "unpumped"]
CASES = [("AGIPD1M", [0, 1], 4), ("AGIPD500K", [2], 4), ("LPD1M", [3], 4), ("DSSC1M", [0], 4), ("JUNGFRAU", [1], 4)]


def beamtime(tmp_path, kind: str, modules: list[int], corrected: bool, **detector):
    cfg = {"name": "det", "raw_root": "raw", "processed_root": "processed", "proc_root": "proc",
           "detector": {"type": kind, "data": "corrected" if corrected else "raw", "modules": modules, **detector},
           "scan_variable": {"source": MOTOR_SOURCE, "key": MOTOR_KEY, "units": "mm", "binning": {"bin_width": 1.0}},
           "frame_pattern": PATTERN, "framemask": {"xgm_source": None}, "dark_run": None, "chunk_frames": 3}
    return load_beamtime(write_config(tmp_path, cfg))


def cube_of(cfg, run: str = "r0002") -> xr.Dataset:
    """The run's cube, every asset made in turn (test_science's run_all)."""
    with next(run_all(cfg, [run])) as ds:
        return ds.load()


def reference(cfg, kind: str, corrected: bool, motor: np.ndarray):
    """(mean, count per pixel) (points, frame types, modules, y, x) by a loop over EXtra-data's arrays."""
    import extra_data
    from extra_data import components

    folder = cfg.detector_dir("r0002")
    det = getattr(components, kind)(extra_data.RunDirectory(str(folder)), raw=not corrected)
    key = "data.adc" if kind == "JUNGFRAU" else "image.data"
    arr = det.masked_data().ndarray() if corrected else det[key].ndarray().astype(np.float64)
    if kind == "JUNGFRAU":  # (modules, trains, cells, y, x) -> (modules, frames, y, x)
        arr = arr.reshape((arr.shape[0], -1) + arr.shape[-2:])
    elif not corrected and arr.ndim == 5:  # AGIPD raw: (modules, frames, data / gain, y, x)
        arr = arr[:, :, 0]
    per_train = arr.shape[1] // len(motor)
    points = np.round(motor)  # bin_width 1: centres 0, 1, 2
    centres = np.unique(points)
    nmod = arr.shape[0]
    total = np.zeros((len(centres), 2, nmod) + arr.shape[-2:])
    count = np.zeros_like(total)
    for f in range(arr.shape[1]):
        t, pos = divmod(f, per_train)
        i = int(np.searchsorted(centres, points[t]))
        for m in range(nmod):
            frame = arr[m, f].astype(np.float64)
            good = np.isfinite(frame)
            total[i, pos % 2, m] += np.where(good, frame, 0)
            count[i, pos % 2, m] += good
    with np.errstate(invalid="ignore"):
        return total / count, count


@pytest.mark.parametrize("corrected", [False, True], ids=["raw", "corrected"])
@pytest.mark.parametrize("kind,modules,fpt", CASES, ids=[c[0] for c in CASES])
def test_cube_equals_a_loop_over_extra_data_arrays(tmp_path, kind, modules, fpt, corrected):
    run = write_mock_run(tmp_path / "raw", tmp_path / "proc", kind, 2, modules, ntrains=6, frames_per_train=fpt,
                         corrected=corrected)
    cfg = beamtime(tmp_path, kind, modules, corrected)
    ds = cube_of(cfg)
    mean, count = reference(cfg, kind, corrected, run.motor)
    assert ds["mean"].shape == mean.shape
    np.testing.assert_allclose(ds["mean"].values, mean, rtol=1e-5, equal_nan=True)
    assert ds["count"].values.tolist() == count.max(axis=(-2, -1)).astype(int).tolist()
    if corrected:  # masked pixels are left out of each pixel's count, and the counts differ from pixel to pixel
        assert (ds["pixel_count"].values == count).all()
        assert ds["pixel_count"].values.min() < ds["count"].values.max()
    else:
        assert "pixel_count" not in ds
    # The science: pumped minus unpumped is the 5 ADU written, at every scan point.
    diff = ds["difference"].values
    assert abs(float(np.nanmean(diff)) - 5.0) < 0.2


def test_mask_bits_choose_the_bad_pixel_reasons(tmp_path):
    run = write_mock_run(tmp_path / "raw", tmp_path / "proc", "AGIPD1M", 2, [0], corrected=True)
    every = cube_of(beamtime(tmp_path, "AGIPD1M", [0], True))
    (tmp_path / "processed").rename(tmp_path / "processed_all")
    bit3 = cube_of(beamtime(tmp_path, "AGIPD1M", [0], True, mask_bits=8))
    assert run.corrected
    # Only the pixels with bit 3 are left out: more frames per pixel than with every bit.
    assert bit3["pixel_count"].sum() > every["pixel_count"].sum()
    assert (bit3["pixel_count"] >= every["pixel_count"]).all()


def test_corrected_file_without_a_mask_is_named(tmp_path):
    write_mock_run(tmp_path / "raw", tmp_path / "proc", "LPD1M", 2, [0], corrected=True, with_mask=False)
    cfg = beamtime(tmp_path, "LPD1M", [0], True)
    with pytest.raises(RunDataError, match=r"CORR-R0002-LPD00-S00000.h5: corrected data of .* without a mask"):
        cube_of(cfg)


def test_a_later_sequence_file_without_the_mask_is_named(tmp_path):
    """Seen: corrected data whose mask is missing only in a later sequence file gave a bare KeyError naming neither
    the file nor the source (the first file was checked)."""
    import shutil

    import h5py
    from extra_data import RunDirectory

    from xfel_core.euxfel.detectors import KINDS
    from xfel_core.readers.euxfel import module_frames

    run = write_mock_run(tmp_path / "raw", tmp_path / "proc", "LPD1M", 2, [0], corrected=True, ntrains=4)
    first = run.files[0]
    later = first.with_name(first.name.replace("-S00000", "-S00001"))
    shutil.copy2(first, later)
    with h5py.File(later, "r+") as f:  # the next four trains, without the mask
        inst = next(f"{a}/{b}/{c}" for a in f["INSTRUMENT"] for b in f[f"INSTRUMENT/{a}"] for c in f[f"INSTRUMENT/{a}/{b}"])
        for ids in ("INDEX/trainId", f"INSTRUMENT/{inst}/image/trainId"):
            f[ids][:] = np.where(f[ids][()] > 0, f[ids][()] + 4, 0)  # (0: the writer's padding)
        del f[f"INSTRUMENT/{inst}/image/mask"]
    with pytest.raises(RunDataError, match=rf"{later.name}: corrected data of {inst} without a mask"):
        module_frames(RunDirectory(str(first.parent)), inst, 0, (256, 256), KINDS["LPD1M"], corrected=True)


def test_wrong_detector_name_is_named(tmp_path):
    write_mock_run(tmp_path / "raw", tmp_path / "proc", "AGIPD1M", 2, [0])
    cfg = beamtime(tmp_path, "AGIPD1M", [0], False, name="MID_DET_AGIPD1M-1")
    with pytest.raises(RunDataError, match=r"no source 'MID_DET_AGIPD1M-1/DET/0CH0:xtdf' for module 00"):
        pipeline.make_raw_run(cfg, "r0002")


def test_modules_of_two_detectors_mixed_are_named(tmp_path):
    # An LPD module's file where the AGIPD module 1's should be: the same aggregator, another detector.
    write_mock_run(tmp_path / "raw", tmp_path / "proc", "AGIPD1M", 2, [0])
    write_mock_run(tmp_path / "other", tmp_path / "proc", "LPD1M", 2, [1], detector_name="SPB_DET_AGIPD1M-1")
    lpd = tmp_path / "other" / "r0002" / "RAW-R0002-LPD01-S00000.h5"
    lpd.rename(tmp_path / "raw" / "r0002" / "RAW-R0002-AGIPD01-S00000.h5")
    cfg = beamtime(tmp_path, "AGIPD1M", [0, 1], False)
    with pytest.raises(RunDataError, match=r"frames are \(1, 256, 256\) .* AGIPD1M raw module's entries would be "
                                           r"\(2, 512, 128\)"):
        pipeline.make_raw_run(cfg, "r0002")


def test_the_type_gives_the_defaults():
    from xfel_core.config import DetectorConfig

    jf = DetectorConfig(type="JUNGFRAU", data="corrected")
    assert (jf.source_for(1), jf.aggregator_for(1), jf.modules, jf.module_shape) == \
        ("SPB_IRDA_JF4M/CORR/JNGFR01:output", "JNGFR01", list(range(1, 9)), (512, 1024))
    # The DSSC default is unchanged: nothing of an existing config's versions moves.
    assert DetectorConfig().model_dump(exclude_defaults=True) == {}


def test_a_new_correction_of_a_run_is_a_new_version(tmp_path):
    """Corrected data: the run's version follows its CORR files too, so a recalibrated run's outputs are stale."""
    import os

    from xfel_core.workflows.euxfel import raw_run_version

    run = write_mock_run(tmp_path / "raw", tmp_path / "proc", "AGIPD1M", 2, [0], corrected=True)
    cfg = beamtime(tmp_path, "AGIPD1M", [0], True)
    before = raw_run_version(cfg, "r0002")
    os.utime(run.files[0], (1, 1))  # the correction pipeline wrote the file again
    assert raw_run_version(cfg, "r0002") != before


def test_demo_detector_through_dagster(tmp_path):
    """`xfel-assets demo-detector` then `materialize` on a fresh Dagster home: JUNGFRAU corrected data (memory cells,
    the proc folder, masks), frame types from the bunch pattern and scan steps from the motor, in Dagster runs."""
    import os
    import subprocess
    import sys

    exe = str(Path(sys.executable).parent / "xfel-assets")
    made = subprocess.run([exe, "demo-detector", str(tmp_path / "bt"), "--type", "JUNGFRAU", "--runs", "1",
                           "--trains", "6", "--frames", "3"], capture_output=True, text=True, timeout=300)
    assert made.returncode == 0, made.stdout + made.stderr
    env = dict(os.environ, XFEL_BEAMTIME=str(tmp_path / "bt" / "beamtime.yaml"), DAGSTER_HOME=str(tmp_path / "home"))
    out = subprocess.run([exe, "materialize"], env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "5 of 5 Dagster runs succeeded" in out.stdout  # inputs, 2 modules, the cube, the run table
    with xr.open_dataset(tmp_path / "bt" / "processed" / "r0002" / "binned_cube.h5", engine="h5netcdf") as ds:
        assert ds["frame_type"].values.tolist() == ["pumped", "unpumped", "dark"]
        assert ds["module"].values.tolist() == [1, 2] and "pixel_count" in ds
        counts = ds["count"].values.sum(axis=(0, 2))  # 2 X-ray pulses for 3 cells: pumped, unpumped, dark
        assert counts[0] == counts[1] == counts[2] > 0
        assert abs(float(ds["difference"].mean()) - 5.0) < 0.5


def test_masks_inflated_in_threads_give_the_same_cube(tmp_path):
    """Two kernel threads: the masks are inflated by a pool of threads, a block ahead; the cube is the same."""
    write_mock_run(tmp_path / "raw", tmp_path / "proc", "AGIPD1M", 2, [0], ntrains=9, corrected=True)
    one = cube_of(beamtime(tmp_path, "AGIPD1M", [0], True))
    (tmp_path / "processed").rename(tmp_path / "processed_one")
    cfg = beamtime(tmp_path, "AGIPD1M", [0], True)
    two = cube_of(cfg.model_copy(update={"execution": cfg.execution.model_copy(update={"kernel_threads": 2})}))
    np.testing.assert_array_equal(one["pixel_count"].values, two["pixel_count"].values)
    np.testing.assert_allclose(one["mean"].values, two["mean"].values, rtol=1e-12, equal_nan=True)


def test_a_corrected_run_is_complete_once_its_corr_files_are_there_and_settled(tmp_path):
    """Corrected data: the sensor's rule waits for the correction's files in the proc folder, and for them to
    settle (a file the correction is still writing changes the proc folder, not the raw one)."""
    import os
    import shutil
    import time

    from xfel_core.completeness import run_completeness

    run = write_mock_run(tmp_path / "raw", tmp_path / "proc", "AGIPD1M", 2, [0, 1], corrected=True)
    cfg = beamtime(tmp_path, "AGIPD1M", [0, 1], True)
    cfg = cfg.model_copy(update={"completeness": cfg.completeness.model_copy(
        update={"settle_seconds": 1.0, "content_wait_seconds": 0})})
    proc = tmp_path / "proc" / "r0002"
    later = max(os.stat(p).st_ctime for p in [*proc.iterdir(), proc, *(tmp_path / "raw" / "r0002").iterdir()])
    assert run_completeness(cfg, "r0002", now=later + 2) is None
    aside = tmp_path / "aside"
    shutil.move(str(run.files[1]), aside)  # the correction has not written module 1 yet
    why = run_completeness(cfg, "r0002", now=later + 2)
    assert why is not None and "module 01 has no files" in why and "CORR-R*-AGIPD01-S*.h5" in why
    time.sleep(1.1)  # the raw folder has settled ...
    shutil.move(str(aside), run.files[1])  # ... when the correction writes module 1: the proc folder has not
    why = run_completeness(cfg, "r0002", now=os.stat(proc).st_ctime + 0.5)
    assert why is not None and "settling" in why


def test_a_truncated_corr_file_is_named(tmp_path):
    from xfel_core.exceptions import XfelError

    run = write_mock_run(tmp_path / "raw", tmp_path / "proc", "DSSC1M", 2, [0], corrected=True)
    cfg = beamtime(tmp_path, "DSSC1M", [0], True)
    pipeline.make_raw_run(cfg, "r0002")
    pipeline.make_scan_variable(cfg, "r0002")
    pipeline.make_framemask(cfg, "r0002")
    path = run.files[0]
    with open(path, "r+b") as f:  # a copy cut short
        f.truncate(path.stat().st_size * 2 // 3)
    with pytest.raises(XfelError, match=path.name):
        pipeline.make_preprocessed_module(cfg, "r0002", 0)
