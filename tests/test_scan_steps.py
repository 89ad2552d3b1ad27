"""Scan steps found from the motor's own values (binning: auto), as EXtra's Scan component finds them."""

from __future__ import annotations

import numpy as np
import pytest
import yaml

from conftest import make_beamtime, small_run
from xfel_core.config import Binning, ConfigError, load_beamtime
from xfel_core.euxfel import pipeline
from xfel_core.scan import bin_scan_values, find_steps, read_scan_bins

STEP, TRAINS = 0.5, 30


def motor_scan(rng, steps: int = 10, jitter: float = 0.02, backlash: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """(values per train, true step of each train, -1 for the run-up): a run-up from the other side, then
    steps of STEP with TRAINS trains each, each train jittering about its step's position."""
    true = np.repeat(np.arange(steps), TRAINS)
    values = true * STEP + rng.normal(0, jitter, len(true))
    if backlash:
        run_up = np.linspace(0.6 * STEP, 0.0, 8)
        values, true = np.r_[run_up, values], np.r_[np.full(len(run_up), -1), true]
    return values, true


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_scan_with_backlash_and_jitter_is_found_step_by_step(seed):
    values, true = motor_scan(np.random.default_rng(seed))
    centres, idx = find_steps(values)
    np.testing.assert_allclose(centres, np.arange(10) * STEP, atol=0.02)
    assert (idx[true == -1] == -1).sum() >= 6  # the run-up belongs to no step (but its last trains may)
    for s in range(10):  # each step's trains are its own, most of them kept
        mine = idx == s
        assert set(true[mine]) <= {s, -1} and (true[mine] == s).sum() >= 0.8 * TRAINS


def test_a_run_that_does_not_step_is_one_scan_point_and_explicit_parameters_are_used():
    rng = np.random.default_rng(5)
    still = rng.normal(1.0, 0.01, 200)
    centres, idx = find_steps(still)
    assert len(centres) == 1 and centres[0] == pytest.approx(still.mean()) and (idx == 0).all()
    # A scan there and back: each position once, with the trains of both visits.
    there_back = np.r_[np.repeat([0.0, 1, 2, 3], 20), np.repeat([3.0, 2, 1, 0], 20)] + rng.normal(0, 0.01, 160)
    centres, idx = find_steps(there_back)
    np.testing.assert_allclose(centres, [0, 1, 2, 3], atol=0.01)
    assert np.bincount(idx[idx >= 0]).min() >= 30
    # A resolution above the step merges steps; min_trains above every step's length keeps none (one point).
    values, _ = motor_scan(rng, backlash=False)
    assert len(find_steps(values, resolution=3 * STEP)[0]) < 10
    assert len(find_steps(values, min_trains=TRAINS + 1)[0]) == 1


def test_binning_auto_in_the_config_and_its_errors():
    assert Binning.model_validate("auto").auto
    b = bin_scan_values(np.arange(308, dtype=np.uint64), motor_scan(np.random.default_rng(3))[0],
                        Binning.model_validate({"auto": True, "min_trains": 10}))
    assert b.nbins == 10
    with pytest.raises(ValueError, match="give exactly one of bin_width, nbins, values, edges or auto"):
        Binning.model_validate({"auto": True, "bin_width": 1.0})
    with pytest.raises(ValueError, match="resolution and min_trains are for binning auto"):
        Binning.model_validate({"bin_width": 1.0, "resolution": 0.1})


def test_the_scan_variable_of_a_run_found_automatically_equals_the_configured_binning(tmp_path):
    """The demo's delay steps (1 ps apart, jittering): binning auto finds the points that bin_width 1 gives."""
    path = make_beamtime(tmp_path / "bt", [small_run(2, ntrains=36)])
    data = yaml.safe_load(path.read_text())
    configured = data["scan_variable"]["binning"]
    cfg = load_beamtime(path)
    pipeline.make_scan_variable(cfg, "r0002")
    expected, _ = read_scan_bins(cfg.output_path("r0002", "scan_variable"))
    data["scan_variable"]["binning"] = "auto"
    path.write_text(yaml.safe_dump(data))
    cfg = load_beamtime(path)
    pipeline.make_scan_variable(cfg, "r0002")
    found, _ = read_scan_bins(cfg.output_path("r0002", "scan_variable"))
    np.testing.assert_allclose(found.centres, expected.centres, atol=1e-3)  # the mean measured delay of each step
    assert configured != "auto"
    # Each train in the scan point it is configured to, but the trains at a step's edges further than one
    # standard deviation from its mean (EXtra's filter against the motor's moves): at least 80 % kept.
    kept = found.bin_index >= 0
    np.testing.assert_array_equal(found.bin_index[kept], expected.bin_index[kept])
    assert kept.sum() >= 0.8 * (expected.bin_index >= 0).sum()
    data["scan_variable"]["binning"] = "automatic"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError, match="scan_variable.binning"):
        load_beamtime(path)
