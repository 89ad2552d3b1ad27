"""scan_variable.delay: the pump-probe delay as EXtra's OpticalLaserDelay builds it (stage, trigger, BAM), per
X-ray pulse with a BAM, and the cube binned by it."""

from __future__ import annotations

import numpy as np
import pytest
from euxfel_bunch_pattern import indices_at_sase

from test_detectors import beamtime, cube_of
from xfel_core.config import load_beamtime
from xfel_core.demo.beamtime import write_config
from xfel_core.demo.detectors import BAM, DELAY_STAGE, TIMESERVER, TRIGGER, pump_probe_table, write_mock_run
from xfel_core.euxfel import bunch_pattern
from xfel_core.exceptions import ConfigError

C = 299_792_458.0
NTRAINS, FRAMES = 8, 4


def laser_sources(seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    return {"stage": np.repeat([10.0, 10.03, 10.06, 10.09], NTRAINS // 4),  # mm: 0, 0.2, 0.4, 0.6 ps
            "trigger": np.full(NTRAINS, 0.5),  # ps
            "bam": rng.normal(0.0, 60.0, (NTRAINS, 5400)).astype(np.float32)}  # fs, per bunch position x 2


def delay_beamtime(tmp_path, table, laser, **delay):
    cfg = beamtime(tmp_path, "DSSC1M", [0], False).model_dump(mode="json", exclude={"source_file"})
    cfg.update(frame_pattern="auto", bunch_pattern={"source": TIMESERVER, "sase": 3, "laser": "LP_SCS"})
    cfg["scan_variable"] = {"units": "ps", "binning": {"bin_width": 0.1},
                            "delay": {"stage_source": DELAY_STAGE, "ref_stage": 10.0, "bam_source": BAM,
                                      "trigger_source": TRIGGER, "ref_trigger": 0.5, **delay}}
    return load_beamtime(write_config(tmp_path, cfg))


def delays_by_hand(table, laser, ref_stage=10.0, ref_trigger=0.5, ref_bam=0.0, ref_delay=0.0):
    """(trains, frames) EXtra's total delay (ps) of each frame's X-ray pulse; NaN for a frame without one."""
    out = np.full((NTRAINS, FRAMES), np.nan)
    for t in range(NTRAINS):
        train = (laser["stage"][t] - ref_stage) * 2e-3 / C * 1e12 - (laser["trigger"][t] - ref_trigger) - ref_delay
        for k, pid in enumerate(indices_at_sase(table[t], 3)[:FRAMES]):
            out[t, k] = train + (float(laser["bam"][t, 2 * pid]) - ref_bam) * 1e-15 * 1e12
    return out


def test_the_cube_is_binned_by_each_pulses_delay(tmp_path):
    import extra_data
    import xarray as xr  # noqa: F401  (the cube helper returns one)

    table = pump_probe_table(NTRAINS, FRAMES - 1)  # three X-ray pulses, the fourth frame dark
    laser = laser_sources()
    write_mock_run(tmp_path / "raw", tmp_path / "proc", "DSSC1M", 2, [0], ntrains=NTRAINS, frames_per_train=FRAMES,
                   bunch_pattern=table, laser=laser)
    cfg = delay_beamtime(tmp_path, table, laser)
    ds = cube_of(cfg)
    delay = delays_by_hand(table, laser)
    types = bunch_pattern.frame_types(table, FRAMES, 3, int(bunch_pattern.laser_bit("LP_SCS", TIMESERVER)))
    # A dark frame has no pulse: its train's delay (stage and trigger) places it.
    train_delay = (laser["stage"] - 10.0) * 2e-3 / C * 1e12 - (laser["trigger"] - 0.5)
    delay = np.where(np.isnan(delay), train_delay[:, None], delay)
    point = np.rint(delay / 0.1)
    frames = extra_data.RunDirectory(str(tmp_path / "raw" / "r0002"))["SCS_DET_DSSC1M-1/DET/0CH0:xtdf",
                                                                      "image.data"].ndarray()
    frames = frames[:, 0].astype(np.float64).reshape(NTRAINS, FRAMES, 128, 512)
    assert np.allclose(ds["scan_variable"].values, np.unique(point) * 0.1)
    assert len(np.unique(point)) > 4  # the BAM's jitter spreads the pulses over more points than the stage's 4
    for i, c in enumerate(ds["scan_variable"].values):
        for k, name in enumerate(ds["frame_type"].values):
            sel = (point == np.rint(c / 0.1)) & (types == k)
            assert int(ds["count"].values[i, k, 0]) == int(sel.sum()), (c, name)
            if sel.any():
                np.testing.assert_allclose(ds["mean"].values[i, k, 0], frames[sel].mean(axis=0), rtol=1e-6)


def test_delays_follow_extras_formula(tmp_path):
    from xfel_core.euxfel import laser_delay
    from xfel_core.readers import euxfel

    table = pump_probe_table(NTRAINS, 3, spacing=8)
    laser = laser_sources(1)
    write_mock_run(tmp_path / "raw", tmp_path / "proc", "DSSC1M", 2, [0], ntrains=NTRAINS, frames_per_train=FRAMES,
                   bunch_pattern=table, laser=laser)
    cfg = delay_beamtime(tmp_path, table, laser, ref_bam=20.0, ref_delay=0.3)
    tids, train, pulses = laser_delay.delays(cfg, euxfel.open_run(cfg.run_dir("r0002")), "r0002")
    by_hand = delays_by_hand(table, laser, ref_bam=20.0, ref_delay=0.3)
    np.testing.assert_allclose(pulses, by_hand[:, :3], rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(train, (laser["stage"] - 10.0) * 2e-3 / C * 1e12 - (laser["trigger"] - 0.5) - 0.3)
    assert laser_delay.PS_PER_MM == pytest.approx(6.671281903963041)


def test_delay_settings_are_checked(tmp_path):
    cfg = beamtime(tmp_path, "DSSC1M", [0], False).model_dump(mode="json", exclude={"source_file"})
    cfg["scan_variable"] = {"units": "ps", "binning": {"auto": True}, "delay": {"bam_source": BAM}}
    with pytest.raises(ConfigError, match="per-pulse delays"):
        load_beamtime(write_config(tmp_path, cfg))
    cfg["scan_variable"] = {"units": "ps", "binning": {"bin_width": 0.1}, "delay": {}}
    with pytest.raises(ConfigError, match="at least one of stage_source"):
        load_beamtime(write_config(tmp_path, cfg))
    cfg["scan_variable"] = {"units": "ps", "binning": {"bin_width": 0.1}, "source": "X", "key": "y",
                            "delay": {"stage_source": DELAY_STAGE}}
    with pytest.raises(ConfigError, match="either source and key, or delay"):
        load_beamtime(write_config(tmp_path, cfg))
