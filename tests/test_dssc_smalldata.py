"""Per-frame small data of DSSC modules against a plain loop over the generated frames."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

from conftest import SHAPE, dark_run, make_beamtime, small_run
from xfel_core.euxfel import dssc_smalldata, pipeline
from xfel_core.config import load_beamtime
from xfel_core.azimuthal import pyfai_profile
from xfel_core.euxfel.preprocess import read_dark

GEOMETRY = {"distance_m": 0.2, "pixel_size_m": [236e-6, 204e-6], "beam_centre_px": [-20.0, 10.0],
            "energy_kev": 1.0, "npt": 12, "unit": "2th_deg"}
ROIS = [{"name": "peak", "role": "intensity", "y": [4, 12], "x": [8, 24]},
        {"name": "edge", "role": "intensity", "y": [0, 3], "x": [0, 32]}]


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    root = tmp_path_factory.mktemp("dssc_sd")
    spec = small_run(2, missing_trains={1: [3]}, low_pulse_fraction=0.2)
    path = make_beamtime(root, [spec], dark=dark_run(1), smalldata={"rois": ROIS, "geometry": GEOMETRY,
                                                                    "beam_centres": {"01": [-25.0, 12.0]}})
    cfg = load_beamtime(path)
    from xfel_core.demo.beamtime import write_run

    gen = write_run(root / "raw", spec)  # the same run again: the generator is deterministic
    for m in cfg.detector.modules:
        pipeline.make_dark(cfg, m)
    for step in (pipeline.make_raw_run, pipeline.make_scan_variable, pipeline.make_framemask):
        step(cfg, "r0002")
    infos = {m: dssc_smalldata.make_dssc_smalldata(cfg, "r0002", m) for m in cfg.detector.modules}
    pm = {m: pipeline.make_preprocessed_module(cfg, "r0002", m) for m in cfg.detector.modules}
    return cfg, gen, infos, pm


@pytest.mark.parametrize("module", [0, 1])
def test_roi_sums_and_profiles_against_a_plain_loop(made, module):
    cfg, gen, infos, pm = made
    sd = xr.open_dataset(infos[module]["path"], engine="h5netcdf").load()
    dark = read_dark(pipeline.dark_path(cfg, module))
    tids = list(gen.train_ids)
    geom = cfg.smalldata.geometry.model_copy(update={"beam_centre_px": (-25.0, 12.0)} if module == 1 else {})
    for e in range(0, sd.sizes["event"], 7):
        t, p = tids.index(int(sd["train_id"][e])), int(sd["pulse"][e])
        frame = gen.frames[module][t, p].astype(np.float64) - dark.mean[list(dark.cell_id).index(int(sd["cell_id"][e]))]
        for j, r in enumerate(cfg.smalldata.rois):
            assert sd["roi_sum"].values[e, j] == pytest.approx(frame[r.slices[0], r.slices[1]].sum(), rel=1e-5, abs=1e-3)
        assert sd["total"].values[e] == pytest.approx(frame.sum(), rel=1e-5, abs=1e-3)
        edges = sd["radial"].values
        width = edges[1] - edges[0]
        _, ref = pyfai_profile(geom, frame.astype(np.float32), np.zeros(SHAPE, bool),
                               (edges[0] - width / 2, edges[-1] + width / 2))
        np.testing.assert_allclose(sd["radial_profile"].values[e, 1:], ref[1:], rtol=1e-5)
    # The frames kept are the frames the binned cube sums.
    assert int(sd["kept"].sum()) == pm[module]["frames_kept"]
    assert set(sd["frame_type"].values) == {"pumped", "unpumped"}
    assert set(sd["laser"].values[sd["frame_type"].values == "pumped"]) == {1}
    # Pulse energies are the gas monitor's, and the low ones are the frames the framemask rejected.
    low = sd["pulse_energy"].values < cfg.framemask.min_pulse_energy_uj
    assert low.any() and not sd["kept"].values[low].any()


def test_dssc_smalldata_materializes_through_dagster(made):
    import dagster as dg

    from test_insitu_dagster import resources
    from xfel_assets.defs.assets import ALL_ASSETS
    from xfel_assets.defs.partitions import run_module_key

    cfg, _, infos, _ = made
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("runs", ["r0002"])
        result = dg.materialize(ALL_ASSETS, selection=["dssc_smalldata"], partition_key=run_module_key("r0002", "01"),
                                resources=resources(cfg.source_file), instance=instance)
        assert result.success
        md = instance.get_latest_materialization_event(dg.AssetKey("dssc_smalldata")).asset_materialization.metadata
        assert md["events"].value == infos[1]["events"] and md["kept"].value == infos[1]["kept"]


def test_new_runs_request_the_small_data_only_when_configured(made, session_beamtime):
    from xfel_assets.defs.sensors import run_asset_partitions

    def assets(cfg):
        return {a.to_user_string() for a, _ in run_asset_partitions("r0005", ["00", "01"], [], cfg)}

    assert "dssc_smalldata" in assets(made[0]) and "dssc_smalldata" not in assets(load_beamtime(session_beamtime))


QUADS = [(-130, 5), (-130, -125), (5, -125), (5, 5)]


def test_profiles_with_the_modules_where_extra_geom_places_them_equal_pyfai_on_the_whole_detector(tmp_path):
    """geometry.extra_geom: each module's hexagonal pixels where extra-geom puts them (its pyFAI detector), the beam
    at the origin; a module's profile equals pyFAI's integrate1d of the whole detector with only that module's
    pixels unmasked."""
    from extra_geom import DSSC_1MGeometry
    from pyFAI.integrator.azimuthal import AzimuthalIntegrator

    from xfel_core.azimuthal import PYFAI_METHOD, pixel_arrays
    from xfel_core.demo.beamtime import RunSpec, beamtime_config, write_config, write_run

    modules, shape = [0, 9], (128, 512)
    spec = RunSpec(run_number=2, ntrains=3, frames_per_train=4, modules=modules, module_shape=shape)
    gen = write_run(tmp_path / "raw", spec)
    geometry = {"extra_geom": {"quadrant_positions_mm": QUADS}, "distance_m": 0.4, "energy_kev": 1.0, "npt": 40,
                "unit": "2th_deg", "radial_range": [2.0, 30.0]}
    data = beamtime_config(tmp_path, modules, shape, dark_run=None, frame_pattern=spec.frame_pattern)
    cfg = load_beamtime(write_config(tmp_path, dict(data, smalldata={"geometry": geometry})))
    for step in (pipeline.make_raw_run, pipeline.make_scan_variable, pipeline.make_framemask):
        step(cfg, "r0002")
    det = DSSC_1MGeometry.from_quad_positions(QUADS)
    ai = AzimuthalIntegrator(dist=0.4, detector=det.to_pyfai_detector(), wavelength=12.398419843320026e-10)
    geom = cfg.smalldata.geometry
    for m in modules:
        sd = xr.open_dataset(dssc_smalldata.make_dssc_smalldata(cfg, "r0002", m)["path"], engine="h5netcdf").load()
        # Where extra-geom itself puts the module's pixel centres, within a quarter of a pixel (236 um) of the
        # beam distance (pyFAI's hexagon centre is the mean of its corners, extra-geom's the hexagon's centre).
        xyz = det.get_pixel_positions()[m]
        pos, _ = pixel_arrays(geom, shape, m)
        np.testing.assert_allclose(0.4 * np.tan(np.radians(pos)), np.hypot(xyz[..., 0], xyz[..., 1]), atol=60e-6)
        tids = list(gen.train_ids)
        for e in (0, sd.sizes["event"] - 1):
            t, p = tids.index(int(sd["train_id"][e])), int(sd["pulse"][e])
            whole = np.zeros((16 * 128, 512), np.float32)
            whole[m * 128:(m + 1) * 128] = gen.frames[m][t, p]
            mask = np.ones(whole.shape, bool)
            mask[m * 128:(m + 1) * 128] = False
            ref = ai.integrate1d(whole, geom.npt, unit=geom.unit, method=PYFAI_METHOD, mask=mask,
                                 radial_range=geom.radial_range, correctSolidAngle=True).intensity
            ours = sd["radial_profile"].values[e]
            filled = np.isfinite(ours)
            assert filled[1:].sum() >= 5 and (ref[~filled] == 0).all()
            np.testing.assert_allclose(ours[1:][filled[1:]], ref[1:][filled[1:]], rtol=1e-5)


def test_extra_geom_and_beam_centres_or_single_images_are_refused(tmp_path):
    from xfel_core.azimuthal import radial_integrator
    from xfel_core.config import DsscSmalldataConfig, GeometryConfig
    from xfel_core.exceptions import ConfigError

    geometry = {"extra_geom": {"quadrant_positions_mm": QUADS}, "distance_m": 0.4, "energy_kev": 1.0}
    with pytest.raises(ValueError, match="with geometry.poni_file or geometry.extra_geom give none"):
        DsscSmalldataConfig.model_validate({"geometry": geometry, "beam_centres": {"01": [1.0, 2.0]}})
    with pytest.raises(ValueError, match="extra_geom places the pixels and the beam: give no beam_centre_px"):
        GeometryConfig.model_validate(dict(geometry, beam_centre_px=[1.0, 2.0]))
    geom = GeometryConfig.model_validate(geometry)
    with pytest.raises(ConfigError, match="for the DSSC small data"):
        radial_integrator(geom, (128, 512), np.zeros((128, 512), bool))
    with pytest.raises(ConfigError, match=r"a DSSC_1M module has \(128, 512\) pixels, the images \(16, 32\)"):
        radial_integrator(geom, (16, 32), np.zeros((16, 32), bool), module=0)
