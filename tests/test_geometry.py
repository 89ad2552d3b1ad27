"""The azimuthal geometry as users carry it: a PONI file as pyFAI writes it, or the config's keys."""

from __future__ import annotations

import numpy as np
import pytest
import yaml

from xfel_core.azimuthal import PYFAI_METHOD, radial_integrator
from xfel_core.config import GeometryConfig, load_beamtime
from xfel_core.demo import events as demo
from xfel_core.exceptions import ConfigError
from xfel_core.lineage import staleness

SHAPE = (96, 128)
KEYS = {"distance_m": 0.08, "pixel_size_m": [75e-6, 100e-6], "beam_centre_px": [40.0, 70.0], "energy_kev": 9.7,
        "npt": 60, "unit": "q_A^-1", "radial_range": [0.1, 0.9]}


def write_poni(path, shape=SHAPE, rot=(0.0, 0.0, 0.0), **keys) -> None:
    """The geometry of KEYS (+ tilts) saved by pyFAI itself, as pyFAI-calib2 saves a calibration."""
    from pyFAI.detectors import Detector
    from pyFAI.integrator.azimuthal import AzimuthalIntegrator

    g = GeometryConfig.model_validate({**KEYS, **keys})
    (py, px), (cy, cx) = g.pixel_size_m, g.beam_centre_px
    ai = AzimuthalIntegrator(dist=g.distance_m, poni1=(cy + 0.5) * py, poni2=(cx + 0.5) * px, rot1=rot[0], rot2=rot[1],
                             rot3=rot[2], detector=Detector(py, px, max_shape=shape), wavelength=g.wavelength)
    ai.save(str(path))


def poni_geometry(path, **keys) -> GeometryConfig:
    return GeometryConfig.model_validate({"poni_file": str(path), "npt": KEYS["npt"], "unit": KEYS["unit"],
                                          "radial_range": KEYS["radial_range"], **keys})


def images(n: int = 3) -> np.ndarray:
    rng = np.random.default_rng(5)
    return rng.poisson(50.0, (n,) + SHAPE).astype(np.float32)


def test_a_poni_file_gives_the_same_profiles_as_the_equivalent_keys(tmp_path):
    write_poni(tmp_path / "cal.poni")
    mask = np.zeros(SHAPE, bool)
    mask[10:14, 20:30] = True
    from_keys = radial_integrator(GeometryConfig.model_validate(KEYS), SHAPE, mask)
    from_poni = radial_integrator(poni_geometry(tmp_path / "cal.poni"), SHAPE, mask)
    np.testing.assert_allclose(from_poni.edges, from_keys.edges)
    assert (from_poni.matrix != from_keys.matrix).nnz == 0
    np.testing.assert_allclose(from_poni.profiles(images()), from_keys.profiles(images()), rtol=1e-12)


def test_a_tilted_detector_from_a_poni_file_equals_pyfai_on_that_file(tmp_path):
    import pyFAI

    write_poni(tmp_path / "tilted.poni", rot=(0.03, -0.02, 0.1))
    geom = poni_geometry(tmp_path / "tilted.poni")
    mask = np.zeros(SHAPE, bool)
    ours = radial_integrator(geom, SHAPE, mask).profiles(images(1))[0]
    ai = pyFAI.load(str(tmp_path / "tilted.poni"))  # pyFAI alone, on the file
    r = ai.integrate1d(images(1)[0], geom.npt, unit=geom.unit, method=PYFAI_METHOD, radial_range=geom.radial_range,
                       correctSolidAngle=True)
    # pyFAI's first bin also takes pixels up to one bin below the range (README, "Event files"): from bin 1.
    filled = np.isfinite(ours)
    assert filled[1:].sum() > 30 and (r.intensity[~filled] == 0).all()  # bins without pixels: NaN here, 0 there
    np.testing.assert_allclose(ours[1:][filled[1:]], r.intensity[1:][filled[1:]], rtol=1e-5)
    untilted = radial_integrator(GeometryConfig.model_validate(KEYS), SHAPE, mask).profiles(images(1))[0]
    assert np.nanmax(np.abs(ours - untilted) / untilted) > 1e-3  # the tilts matter


def test_a_poni_file_wavelength_and_the_errors(tmp_path):
    write_poni(tmp_path / "cal.poni")
    other = radial_integrator(poni_geometry(tmp_path / "cal.poni", energy_kev=12.0), SHAPE, np.zeros(SHAPE, bool))
    same = radial_integrator(GeometryConfig.model_validate({**KEYS, "energy_kev": 12.0}), SHAPE, np.zeros(SHAPE, bool))
    assert (other.matrix != same.matrix).nnz == 0  # energy_kev replaces the file's wavelength
    with pytest.raises(ValueError, match="give poni_file or distance_m, pixel_size_m, beam_centre_px, not both"):
        GeometryConfig.model_validate({**KEYS, "poni_file": str(tmp_path / "cal.poni")})
    with pytest.raises(ValueError, match="missing: beam_centre_px"):
        GeometryConfig.model_validate({k: v for k, v in KEYS.items() if k != "beam_centre_px"})
    with pytest.raises(ConfigError, match="its detector \\(Detector\\) has \\(96, 128\\) pixels, the images \\(96, 100\\)"):
        radial_integrator(poni_geometry(tmp_path / "cal.poni"), (96, 100), np.zeros((96, 100), bool))
    with pytest.raises(ConfigError, match="geometry.poni_file .*nowhere.poni does not exist"):
        radial_integrator(poni_geometry(tmp_path / "nowhere.poni"), SHAPE, np.zeros(SHAPE, bool))
    (tmp_path / "bad.poni").write_text("this is no calibration\n")
    with pytest.raises(ConfigError, match="bad.poni: not a PONI file pyFAI reads"):
        radial_integrator(poni_geometry(tmp_path / "bad.poni"), SHAPE, np.zeros(SHAPE, bool))


def test_a_new_calibration_in_the_same_poni_file_makes_the_event_outputs_stale(tmp_path):
    """The file is named relative to beamtime.yaml; its content, not its name, is part of the outputs' versions."""
    from xfel_core.events import pipeline as ep

    path = demo.write_demo_events(tmp_path, runs=1, n_per_point=3)
    data = yaml.safe_load(path.read_text())
    geom = data["events"]["geometry"]
    (tmp_path / "calib").mkdir()
    write_poni(tmp_path / "calib" / "det.poni", shape=demo.SHAPE, **{k: geom[k] for k in ("distance_m", "pixel_size_m", "beam_centre_px", "energy_kev")})
    data["events"]["geometry"] = {"poni_file": "calib/det.poni",
                                  **{k: geom[k] for k in ("npt", "unit", "radial_range")}}
    path.write_text(yaml.safe_dump(data))
    cfg = load_beamtime(path)
    assert cfg.events.geometry.poni_file == tmp_path / "calib" / "det.poni"
    ep.make_event_smalldata(cfg, "r0002")
    ep.make_event_cube(cfg, "r0002")
    assert staleness.find_stale(cfg) == []
    write_poni(tmp_path / "calib" / "det.poni", shape=demo.SHAPE, rot=(0.01, 0.0, 0.0),
               **{k: geom[k] for k in ("distance_m", "pixel_size_m", "beam_centre_px", "energy_kev")})
    stale = staleness.find_stale(load_beamtime(path))
    assert {(s.asset, s.key) for s in stale} == {("event_smalldata", "r0002"), ("event_cube", "r0002")}
    assert any("configuration changed: events.geometry" in s.reason for s in stale)
