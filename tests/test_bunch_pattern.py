"""frame_pattern: auto: each frame pumped, unpumped or dark from the timeserver's bunch pattern."""

from __future__ import annotations

import numpy as np
import pytest
from euxfel_bunch_pattern import PPL_BITS, indices_at_laser, indices_at_sase

from test_detectors import beamtime, cube_of
from xfel_core.config import load_beamtime
from xfel_core.demo.beamtime import write_config
from xfel_core.demo.detectors import TIMESERVER, pump_probe_table, write_mock_run
from xfel_core.euxfel import bunch_pattern, pipeline
from xfel_core.exceptions import ConfigError, RunDataError

SCS = int(PPL_BITS.LP_SCS)


def types_by_loop(table, nframes, sase, laser, laser_offset=0.0, first_frame=None, frame_stride=None):
    """The frame types train by train, pulse by pulse, as EXtra's PumpProbePulses reads the pattern."""
    out = np.zeros((len(table), nframes), np.int8)
    anchor = None
    for t, row in enumerate(table):
        fel = list(indices_at_sase(row, sase))
        if len(fel) >= 2:
            anchor = (fel[0], fel[1] - fel[0])  # else: the train before's (EXtra's extrapolate)
        first, spacing = anchor
        ppl = [p + first + int(np.floor(spacing * laser_offset)) for p in indices_at_laser(row, laser)]
        for i in range(nframes):
            stride = spacing if frame_stride is None else frame_stride
            pos = (first if first_frame is None else first_frame) + i * stride
            out[t, i] = 2 if pos not in fel else 0 if pos in ppl else 1
    return out


def varied_table(ntrains: int) -> np.ndarray:
    """Trains that differ: the laser off in train 1, two X-ray pulses in train 2, none in train 3, another
    spacing in train 4."""
    table = pump_probe_table(ntrains, 3)
    table[1] = pump_probe_table(1, 3, laser_every=10 ** 6)[0] & ~np.uint32(SCS)
    table[2] = pump_probe_table(1, 2)[0]
    table[3] = 0
    table[4] = pump_probe_table(1, 4, spacing=8, laser_every=1)[0]
    return table


@pytest.mark.parametrize("options", [{}, {"laser_offset": 1.0}, {"frame_stride": 2}, {"first_frame": 196}])
def test_frame_types_equal_a_pulse_by_pulse_loop(options):
    table = varied_table(6)
    got = bunch_pattern.frame_types(table, 5, 3, SCS, **options)
    np.testing.assert_array_equal(got, types_by_loop(table, 5, 3, SCS, **options))


def test_the_pattern_as_written():
    types = bunch_pattern.frame_types(varied_table(6), 5, 3, SCS)
    names = np.array(bunch_pattern.AUTO_TYPES)[types]
    assert names[0].tolist() == ["pumped", "unpumped", "pumped", "dark", "dark"]  # 3 pulses, laser on every 2nd
    assert names[1].tolist() == ["unpumped"] * 3 + ["dark"] * 2  # the laser off
    assert names[2].tolist() == ["pumped", "unpumped"] + ["dark"] * 3
    assert names[3].tolist() == ["dark"] * 5  # no X-rays: every frame dark
    assert names[4].tolist() == ["pumped"] * 4 + ["dark"]  # 4 pulses 8 apart, the laser on each: frames follow
    strided = np.array(bunch_pattern.AUTO_TYPES)[bunch_pattern.frame_types(varied_table(6), 5, 3, SCS, frame_stride=4)]
    assert strided[4].tolist() == ["pumped", "dark", "pumped", "dark", "pumped"]  # a frame every 4 positions


def test_no_xray_pulse_of_the_sase_is_named():
    with pytest.raises(RunDataError, match="no X-ray pulse of SASE 1"):
        bunch_pattern.frame_types(pump_probe_table(4, 3, sase=3), 4, 1, SCS, what="run r0002")


def auto_beamtime(tmp_path, **bp):
    cfg = beamtime(tmp_path, "DSSC1M", [0], False).model_dump(mode="json", exclude={"source_file"})
    cfg.update(frame_pattern="auto", bunch_pattern={"source": TIMESERVER, "sase": 3, **bp})
    return load_beamtime(write_config(tmp_path, cfg))


def test_cube_of_frames_typed_by_the_bunch_pattern(tmp_path):
    """The cube's pumped, unpumped and dark frames are those the bunch pattern says, train by train."""
    import extra_data

    table = varied_table(6)
    run = write_mock_run(tmp_path / "raw", tmp_path / "proc", "DSSC1M", 2, [0], ntrains=6, frames_per_train=5,
                         bunch_pattern=table)
    cfg = auto_beamtime(tmp_path)
    ds = cube_of(cfg)
    assert ds["frame_type"].values.tolist() == ["pumped", "unpumped", "dark"]
    types = types_by_loop(table, 5, 3, SCS)
    arr = extra_data.RunDirectory(str(tmp_path / "raw" / "r0002"))["SCS_DET_DSSC1M-1/DET/0CH0:xtdf", "image.data"]
    frames = arr.ndarray()[:, 0].astype(np.float64).reshape(6, 5, 128, 512)
    points = np.round(run.motor)
    for i, c in enumerate(ds["scan_variable"].values):
        for k, name in enumerate(bunch_pattern.AUTO_TYPES):
            sel = (points[:, None] == np.round(c)) & (types == k)
            assert int(ds["count"].values[i, k, 0]) == int(sel.sum())
            if sel.any():
                np.testing.assert_allclose(ds["mean"].values[i, k, 0], frames[sel].mean(axis=0), rtol=1e-6)
    info = pipeline.make_framemask(cfg, "r0002")
    assert info["frames_by_type"] == {n: int((types == k).sum()) for k, n in enumerate(bunch_pattern.AUTO_TYPES)}


def test_trains_without_a_bunch_pattern_are_rejected_and_the_source_named(tmp_path):
    write_mock_run(tmp_path / "raw", tmp_path / "proc", "DSSC1M", 2, [0], frames_per_train=4)  # no timeserver
    cfg = auto_beamtime(tmp_path)
    pipeline.make_raw_run(cfg, "r0002")
    with pytest.raises(RunDataError, match=f"{TIMESERVER}"):
        pipeline.make_framemask(cfg, "r0002")


def test_auto_needs_the_bunch_pattern_section(tmp_path):
    cfg = beamtime(tmp_path, "DSSC1M", [0], False).model_dump(mode="json", exclude={"source_file"})
    cfg.update(frame_pattern="auto")
    with pytest.raises(ConfigError, match="bunch_pattern: required key is missing"):
        load_beamtime(write_config(tmp_path, cfg))


def test_old_framemask_files_read_as_the_pattern(tmp_path):
    """A framemask written before frame types were stored types its frames by the pattern, as before."""
    write_mock_run(tmp_path / "raw", tmp_path / "proc", "DSSC1M", 2, [0])
    cfg = beamtime(tmp_path, "DSSC1M", [0], False)
    pipeline.make_raw_run(cfg, "r0002")
    pipeline.make_framemask(cfg, "r0002")
    from xfel_core.euxfel import framemask

    fm = framemask.read_framemask(cfg.output_path("r0002", "framemask"))
    assert fm.frame_type is None
    assert fm.types_of(np.array([0, 1]), np.array([2, 3]), 2).tolist() == [0, 1]
