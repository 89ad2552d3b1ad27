"""The ROI window (`xfel-assets roi-gui`) under Qt's offscreen platform, with pytest-qt.

Screenshots go to $XFEL_GUI_SCREENSHOTS if set, else to the test's tmp folder.
"""

from __future__ import annotations

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")  # before pytest-qt makes the QApplication

import json
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import yaml

from xfel_core.config import Roi, load_beamtime
from xfel_core.demo.insitu import write_demo_insitu
from xfel_core.insitu import layout, pipeline
from xfel_core.roi_targets import load_target
from xfel_core.rois import dump_rois, load_rois

pytest.importorskip("pytestqt")


@pytest.fixture
def insitu_beamtime(tmp_path):
    """Two measurements of the demo sample, reduced up to roi_series with the ROIs of a ROI file."""
    path = write_demo_insitu(tmp_path / "bt", measurements=2, frames=12)
    data = yaml.safe_load(path.read_text())
    roi_file = tmp_path / "bt" / "rois.yaml"
    dump_rois(roi_file, [Roi.model_validate(r) for r in data["insitu"].pop("rois")])
    data["insitu"]["roi_file"] = str(roi_file)
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    cfg = load_beamtime(path)
    for key in layout.all_measurement_keys(cfg.insitu):
        pipeline.make_insitu_frames(cfg, key)
        pipeline.make_roi_series(cfg, key)
    return cfg


def direct_images(cfg) -> tuple[np.ndarray, np.ndarray]:
    """The sample's corrected frames in time order, read straight from the insitu_frames files."""
    images, times = [], []
    for key in layout.all_measurement_keys(cfg.insitu):
        with h5py.File(layout.measurement_output(cfg, key, "insitu_frames.h5")) as f:
            images.append(f["images"][()].astype(np.float64))
            times.append(f["time"][()])
    t = np.concatenate(times)
    order = np.argsort(t)
    return np.concatenate(images)[order], t[order] - t.min()


def screenshot(window, tmp_path: Path, name: str) -> Path:
    folder = Path(os.environ.get("XFEL_GUI_SCREENSHOTS") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    assert window.grab().save(str(path))
    return path


def test_adding_and_moving_a_roi_plots_the_values_computed_from_the_images(qtbot, insitu_beamtime, tmp_path):
    from xfel_assets.gui.roi_window import RoiWindow

    cfg = insitu_beamtime
    window = RoiWindow(cfg, load_target(cfg, "GaN01"), cfg.insitu.roi_file)
    qtbot.addWidget(window)
    window.show()
    images, t = direct_images(cfg)

    item = window.add_roi("tail", "intensity", (100, 120), (240, 270))
    xs, ys = window.curves["tail_sum"].getData()
    assert np.array_equal(xs, t)
    assert np.allclose(ys, images[:, 100:120, 240:270].sum(axis=(1, 2)), rtol=1e-12)

    item.translate((-12, 5))  # what a drag does: 12 pixels left, 5 down
    qtbot.waitUntil(lambda: window.rois[-1].x == (228, 258))
    assert window.rois[-1].y == (105, 125)
    xs, ys = window.curves["tail_sum"].getData()
    assert np.allclose(ys, images[:, 105:125, 228:258].sum(axis=(1, 2)), rtol=1e-12)

    com = window.add_roi("spot", "com", (90, 140), (190, 270))
    com.translate((3, -2))
    block = images[:, 88:138, 193:273]
    yy, xx = np.mgrid[88:138, 193:273]
    total = block.sum(axis=(1, 2))
    assert np.allclose(window.curves["spot_com_y"].getData()[1], (block * yy).sum(axis=(1, 2)) / total)
    assert np.allclose(window.curves["spot_com_x"].getData()[1], (block * xx).sum(axis=(1, 2)) / total)
    window.slider.setValue(len(t) // 2)
    screenshot(window, tmp_path, "roi-window.png")


def test_save_then_load_gives_the_same_rois(qtbot, insitu_beamtime, tmp_path):
    from xfel_assets.gui.roi_window import RoiWindow

    cfg = insitu_beamtime
    window = RoiWindow(cfg, load_target(cfg, "GaN01/GaN01_m01"), tmp_path / "picked.yaml")
    qtbot.addWidget(window)
    assert window.rois == load_rois(cfg.insitu.roi_file)  # starts from the configured file's ROIs
    window.add_roi("ring", "background", (10, 30), (20, 60)).translate((4, 4))
    window.table.item(0, 0).setText("centre")  # renamed in the table
    saved = window.rois
    assert saved[0].name == "centre" and saved[-1].y == (14, 34)
    window.save()
    assert load_rois(tmp_path / "picked.yaml") == saved

    other = RoiWindow(cfg, load_target(cfg, "GaN01/GaN01_m01"), tmp_path / "elsewhere.yaml")
    qtbot.addWidget(other)
    other.load(tmp_path / "picked.yaml")
    assert other.rois == saved


def test_new_rois_name_the_stale_partitions_and_request_their_backfill(qtbot, insitu_beamtime, monkeypatch, tmp_path):
    import dagster as dg

    from xfel_assets.cli.home import ensure_dagster_home
    from xfel_assets.defs.partitions import MEASUREMENTS_PARTITION_SET, SAMPLES_PARTITION_SET
    from xfel_assets.gui.roi_window import RoiWindow

    cfg = insitu_beamtime
    home = ensure_dagster_home(tmp_path / "home", max_runs=2)
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    monkeypatch.setenv("XFEL_BEAMTIME", str(cfg.source_file))
    window = RoiWindow(cfg, load_target(cfg, "GaN01"), cfg.insitu.roi_file)
    qtbot.addWidget(window)
    assert window.stale() == {}  # the outputs were made with exactly these ROIs
    assert not window.request_button.isEnabled()

    window.roi_item("bragg").translate((2, 0))
    keys = layout.all_measurement_keys(cfg.insitu)
    assert window.stale() == {"roi_series": keys, "attenuation_corrected_series": ["GaN01"]}
    assert "roi_series: " + ", ".join(keys) in window.status.text()
    assert window.request_button.isEnabled()

    with dg.DagsterInstance.get() as instance:
        instance.add_dynamic_partitions(MEASUREMENTS_PARTITION_SET, keys)
        instance.add_dynamic_partitions(SAMPLES_PARTITION_SET, ["GaN01"])
    backfill_id = window.request_materialization()
    assert load_rois(cfg.insitu.roi_file) == window.rois  # saved first: the backfill computes these ROIs
    with dg.DagsterInstance.get() as instance:
        backfill = instance.get_backfill(backfill_id)
        targets = {k.to_user_string(): sorted(s.get_partition_keys())
                   for k, s in backfill.asset_backfill_data.target_subset.partitions_subsets_by_asset_key.items()}
    assert targets == {"roi_series": sorted(keys), "attenuation_corrected_series": ["GaN01"]}
    assert json.loads(json.dumps(targets))  # plain data, as the UI lists it
    screenshot(window, tmp_path, "roi-window-stale.png")


def test_a_run_target_shows_its_binned_cube(qtbot, tmp_path):
    from conftest import dark_run, make_beamtime, reduce_dssc_run, small_run
    from xfel_assets.gui.roi_window import RoiWindow

    cfg = load_beamtime(make_beamtime(tmp_path / "bt", [small_run(3)], dark=dark_run()))
    run = "r0003"
    reduce_dssc_run(cfg, run)
    stack = load_target(cfg, run, module=1, frame_type="unpumped")
    with h5py.File(cfg.output_path(run, "binned_cube")) as f:
        expected = f["mean"][:, 1, 1]  # (scan, frame type, module, y, x): unpumped, module 1
        assert np.array_equal(stack.axis, f["scan_variable"][()])
    assert np.array_equal(stack.images, expected.astype(np.float64))
    window = RoiWindow(cfg, stack, tmp_path / "module_rois.yaml")
    qtbot.addWidget(window)
    window.add_roi("all", "intensity", (0, 16), (0, 32))
    assert np.allclose(window.curves["all_sum"].getData()[1], expected.sum(axis=(1, 2), dtype=np.float64))


def test_roi_gui_command_names_an_unknown_target(insitu_beamtime, capsys, monkeypatch, tmp_path):
    from xfel_assets.cli.main import main

    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "home"))  # both restored after the test:
    monkeypatch.setenv("XFEL_BEAMTIME", str(insitu_beamtime.source_file))  # the command sets them
    assert main(["roi-gui", "X9", "--beamtime", str(insitu_beamtime.source_file)]) == 2
    err = capsys.readouterr().err
    assert "'X9' is neither a run (r0002), an in-situ sample (['GaN01'])" in err
    assert (tmp_path / "home" / "workspace.yaml").exists()  # set up as for the other commands


def test_roi_gui_without_a_display_says_what_is_missing(insitu_beamtime, tmp_path):
    """Without a display Qt aborts (status 134, a plugin message); the command says what to do instead."""
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY", "QT_QPA_PLATFORM")}
    env.update(DAGSTER_HOME=str(tmp_path / "home"), XFEL_BEAMTIME=str(insitu_beamtime.source_file))
    out = subprocess.run([str(Path(sys.executable).parent / "xfel-assets"), "roi-gui", "GaN01"], env=env,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 2, out.stderr
    assert "roi-gui opens a window and there is no display: $DISPLAY and $WAYLAND_DISPLAY are unset" in out.stderr
