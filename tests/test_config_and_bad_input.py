"""Configuration validation and bad input: clear errors naming the key or file, and no output left behind."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
import yaml

from conftest import dark_run, make_beamtime, small_run
from xfel_core.euxfel import pipeline
from xfel_core.config import Binning, load_beamtime, parse_run_key
from xfel_core.exceptions import ConfigError, MissingInputError, RunDataError
from xfel_core.outputs import atomic_h5
from xfel_core.scan import bin_scan_values


def edit_config(path, fn):
    data = yaml.safe_load(path.read_text())
    fn(data)
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.fixture
def beamtime(tmp_path):
    return make_beamtime(tmp_path, [small_run(2)], dark=dark_run())


def test_valid_config_resolves_paths(beamtime):
    cfg = load_beamtime(beamtime)
    assert cfg.raw_root == beamtime.parent / "raw"
    assert cfg.module_keys == ["00", "01"]
    assert cfg.output_path("r0042", "preprocessed_module", 7).name == "preprocessed_module_07.h5"
    assert cfg.output_path("r0042", "binned_cube") == beamtime.parent / "processed" / "r0042" / "binned_cube.h5"


@pytest.mark.parametrize("edit, message", [
    (lambda d: d["scan_variable"]["binning"].update(bin_widht=1.0), r"scan_variable\.binning\.bin_widht: unknown key"),
    (lambda d: d.pop("frame_pattern"), r"frame_pattern: required key is missing"),
    (lambda d: d["scan_variable"]["binning"].update(nbins=5), r"exactly one of bin_width, nbins, values, edges or auto"),
    (lambda d: d["detector"].update(modules=[0, 16]), r"detector\.modules\.1: .*less than or equal to 15"),
    (lambda d: d.update(chunk_frames=0), r"chunk_frames: .*greater than or equal to 1"),
    (lambda d: d.update(frame_pattern=["a", "a"]), r"frame names repeat"),
])
def test_wrong_config_names_the_key(beamtime, edit, message):
    edit_config(beamtime, edit)
    with pytest.raises(ConfigError, match=message) as err:
        load_beamtime(beamtime)
    assert str(beamtime) in str(err.value)


def test_missing_config_file_says_how_to_make_one(tmp_path):
    with pytest.raises(ConfigError, match="XFEL_BEAMTIME.*demo-beamtime"):
        load_beamtime(tmp_path / "nope.yaml")


def test_bad_run_key():
    with pytest.raises(ConfigError, match="r0042"):
        parse_run_key("run42")


def test_truncated_module_file_fails_raw_run_and_writes_nothing(beamtime):
    cfg = load_beamtime(beamtime)
    victim = sorted(cfg.run_dir("r0002").glob("*DSSC01*"))[0]
    victim.write_bytes(victim.read_bytes()[:3000])
    with pytest.raises(RunDataError, match=victim.name):
        pipeline.make_raw_run(cfg, "r0002")
    with pytest.raises(RunDataError, match=victim.name):
        pipeline.make_scan_variable(cfg, "r0002")
    assert not cfg.output_dir("r0002").exists() or not list(cfg.output_dir("r0002").iterdir())


def test_missing_module_is_named_and_nothing_is_written(beamtime):
    cfg = load_beamtime(beamtime)
    for p in cfg.run_dir("r0002").glob("*DSSC01*"):
        p.unlink()
    with pytest.raises(RunDataError, match=r"module 01 has no files"):
        pipeline.make_raw_run(cfg, "r0002")
    assert not cfg.output_path("r0002", "raw_run").exists()


def test_step_without_its_inputs_says_which_asset_to_materialize(beamtime):
    cfg = load_beamtime(beamtime)
    with pytest.raises(MissingInputError, match="materialize scan_variable"):
        pipeline.make_preprocessed_module(cfg, "r0002", 0)


def test_missing_dark_cells_are_named(beamtime):
    cfg = load_beamtime(beamtime)
    for m in cfg.detector.modules:
        pipeline.make_dark(cfg, m)
    path = pipeline.dark_path(cfg, 0)
    with h5py.File(path, "r+") as f:  # a dark taken with fewer memory cells than the run uses
        for name in ("cell_id", "mean", "std", "count"):
            data = f[name][:3]
            del f[name]
            f[name] = data
    for step in (pipeline.make_raw_run, pipeline.make_scan_variable, pipeline.make_framemask):
        step(cfg, "r0002")
    with pytest.raises(RunDataError, match=r"memory cells \[3, 4, 5\] have no dark"):
        pipeline.make_preprocessed_module(cfg, "r0002", 0)
    assert not cfg.output_path("r0002", "preprocessed_module", 0).exists()


def test_failed_write_keeps_the_previous_output(tmp_path):
    path = tmp_path / "out.h5"
    with atomic_h5(path) as f:
        f["x"] = np.arange(3)
    with pytest.raises(RuntimeError):
        with atomic_h5(path) as f:
            f["x"] = np.arange(5)
            raise RuntimeError("killed half-way")
    with h5py.File(path) as f:
        np.testing.assert_array_equal(f["x"][()], np.arange(3))
    assert [p.name for p in tmp_path.iterdir()] == ["out.h5"]


def test_nan_scan_values_are_dropped_and_binning_modes():
    tids = np.arange(6, dtype=np.uint64)
    v = np.array([0.0, 0.1, np.nan, 1.0, 1.04, 2.0])
    b = bin_scan_values(tids, v, Binning(bin_width=0.5))
    np.testing.assert_array_equal(b.bin_index, [0, 0, -1, 1, 1, 2])
    np.testing.assert_allclose(b.centres, [0.0, 1.0, 2.0])
    b = bin_scan_values(tids, v, Binning(nbins=4))
    np.testing.assert_array_equal(b.bin_index, [0, 0, -1, 2, 2, 3])  # bins are half-open: [1.0, 1.5)
    np.testing.assert_allclose(b.centres, [0.25, 0.75, 1.25, 1.75])
    b = bin_scan_values(tids, v, Binning(values=[0.0, 1.0], tolerance=0.05))
    np.testing.assert_array_equal(b.bin_index, [0, -1, -1, 1, 1, -1])


def test_dark_written_without_a_version_attribute_is_still_read(beamtime):
    """Darks made before the version was stored in the file get the same version, from its arrays."""
    from xfel_core.euxfel.preprocess import read_dark

    cfg = load_beamtime(beamtime)
    info = pipeline.make_dark(cfg, 0)
    path = pipeline.dark_path(cfg, 0)
    with h5py.File(path, "r+") as f:
        del f.attrs["dark_version"]
    assert read_dark(path).version == info["dark_version"]
