"""Versions and staleness without Dagster: which outputs a change of calibration, raw data or code makes stale."""

from __future__ import annotations

import os

import h5py
import numpy as np
import pytest
import xarray as xr
import yaml

from conftest import MODULES, SHAPE, dark_run, make_beamtime, small_run
from test_science import assert_cube_matches, reference_cube, run_all
from xfel_core.euxfel import pipeline
from xfel_core.config import load_beamtime
from xfel_core.demo.beamtime import write_run
from xfel_core.lineage import model, staleness, versions

RUNS = ["r0002", "r0003"]


def find_stale(cfg, runs=RUNS):
    return staleness.find_stale(cfg, model.Scope(runs=runs))


def triple(s):
    """(asset, run, module) of a stale output."""
    if s.asset == "dark":
        return s.asset, None, int(s.key)
    module, _, run = s.key.rpartition("|")
    return s.asset, run, int(module) if module else None


def stale_set(cfg, runs=RUNS):
    return {triple(s) for s in find_stale(cfg, runs)}


def run_partitions(assets, runs=RUNS):
    return {(a, r, None) for a in assets for r in runs}


def module_partitions(runs=RUNS, modules=MODULES):
    return {("preprocessed_module", r, m) for r in runs for m in modules}


def redo(cfg, stale):
    """Re-make the stale outputs in dependency order, as a backfill does."""
    order = [a.name for a in model.assets()]
    for asset, run, module in sorted(stale, key=lambda s: order.index(s[0])):
        args = [a for a in (run, module) if a is not None]
        model.asset(asset).make(cfg, *args)


def set_config(path, **changes):
    data = yaml.safe_load(path.read_text())
    data.update(changes)
    path.write_text(yaml.safe_dump(data))
    return load_beamtime(path)


@pytest.fixture
def beamtime(tmp_path):
    gens = {}
    path = make_beamtime(tmp_path, [], dark=None)
    for n in (2, 3):
        gens[n] = write_run(tmp_path / "raw", small_run(n))
    gens["dark1"] = write_run(tmp_path / "raw", dark_run(1))
    gens["dark5"] = write_run(tmp_path / "raw", dark_run(5))
    cfg = set_config(path, dark_run=1)
    list(run_all(cfg, RUNS))
    return path, gens


def test_fresh_outputs_are_current_and_record_their_versions(beamtime):
    path, _ = beamtime
    cfg = load_beamtime(path)
    assert find_stale(cfg, RUNS) == []
    with h5py.File(cfg.output_path("r0002", "preprocessed_module", 1)) as f:
        assert f.attrs["code_version"] == versions.code_version("preprocessed_module")
        assert f.attrs["dark_run"] == "r0001" and f.attrs["gain_version"] == versions.NO_GAIN
        assert len(f.attrs["dark_version"]) == 16 and len(f.attrs["lineage_version"]) == 16
    ds = xr.open_dataset(cfg.output_path("r0002", "binned_cube"), engine="h5netcdf")
    assert set(yaml.safe_load(ds.attrs["dark_versions"])) == {"00", "01"}


def test_new_dark_run_makes_exactly_the_dark_and_its_dependents_stale(beamtime):
    path, gens = beamtime
    cfg = set_config(path, dark_run=5)
    stale = find_stale(cfg, RUNS)
    assert {triple(s) for s in stale} == (
        {("dark", None, m) for m in MODULES} | module_partitions() | run_partitions(["binned_cube"]))
    assert {s.reason for s in stale if s.asset == "dark"} == {"no output"}
    assert {s.reason for s in stale if s.asset == "preprocessed_module"} == {"input changed: dark"}

    redo(cfg, stale_set(cfg))
    assert find_stale(cfg, RUNS) == []
    ds = xr.open_dataset(cfg.output_path("r0002", "binned_cube"), engine="h5netcdf")
    assert_cube_matches(ds, reference_cube(gens[2], gens["dark5"], cfg))
    old = reference_cube(gens[2], gens["dark1"], cfg)
    key = next(iter(old))
    assert not np.allclose(old[key][0], ds["mean"].sel(scan_variable=key[0], frame_type=key[1], module=key[2]))


def test_gain_map_of_one_module_stales_only_that_module(beamtime, tmp_path):
    path, gens = beamtime
    gain_file = tmp_path / "calib" / "gain.h5"
    gain_file.parent.mkdir()
    g = {m: np.ones(SHAPE) for m in MODULES}
    with h5py.File(gain_file, "w") as f:
        for m in MODULES:
            f[f"module_{m:02d}/gain"] = g[m]
    cfg = set_config(path, gain_map={"file": "calib/gain.h5"})
    # Unit gain still changes every module's inputs (gain map versus none).
    assert stale_set(cfg) == module_partitions() | run_partitions(["binned_cube"])
    redo(cfg, stale_set(cfg))
    assert find_stale(cfg, RUNS) == []

    g[1] = np.linspace(0.5, 1.5, SHAPE[0] * SHAPE[1]).reshape(SHAPE)
    with h5py.File(gain_file, "a") as f:
        f["module_01/gain"][...] = g[1]
    assert stale_set(cfg) == module_partitions(modules=[1]) | run_partitions(["binned_cube"])
    redo(cfg, stale_set(cfg))
    ds = xr.open_dataset(cfg.output_path("r0002", "binned_cube"), engine="h5netcdf")
    ref = reference_cube(gens[2], gens["dark1"], cfg)
    ref = {k: (mean * g[k[2]], None if sem is None else sem * g[k[2]], n) for k, (mean, sem, n) in ref.items()}
    assert_cube_matches(ds, ref)


def test_flat_field_is_divided_and_bad_maps_are_named(beamtime, tmp_path):
    path, _ = beamtime
    gain_file = tmp_path / "ff.h5"
    with h5py.File(gain_file, "w") as f:
        f["ff/00"] = np.full(SHAPE, 2.0)
        f["ff/01"] = np.zeros(SHAPE)
    cfg = set_config(path, gain_map={"file": "ff.h5", "dataset": "ff/{module:02d}", "operation": "divide"})
    before = xr.open_dataset(cfg.output_path("r0002", "binned_cube"), engine="h5netcdf")["mean"].sel(module=0).values
    pipeline.make_preprocessed_module(cfg, "r0002", 0)
    with pytest.raises(Exception, match=r"ff.h5 \[ff/01\].*> 0"):
        pipeline.make_preprocessed_module(cfg, "r0002", 1)
    with h5py.File(cfg.output_path("r0002", "preprocessed_module", 0)) as f:
        s, c = f["sum"][()], f["count"][()]
    with np.errstate(invalid="ignore"):
        np.testing.assert_allclose(s / c[..., None, None], before / 2, rtol=1e-5, atol=1e-4)


def test_rewritten_raw_run_and_changed_code_are_found(beamtime, monkeypatch):
    path, _ = beamtime
    cfg = load_beamtime(path)
    f = next(cfg.run_dir("r0003").glob("*DSSC01*.h5"))
    st = f.stat()
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    assert stale_set(cfg) == ({(a, "r0003", None) for a in ("raw_run", "scan_variable", "framemask", "binned_cube")}
                              | module_partitions(runs=["r0003"]))
    redo(cfg, stale_set(cfg))
    assert find_stale(cfg, RUNS) == []

    real = versions.code_version
    monkeypatch.setattr(versions, "code_version",
                        lambda asset: "edited" if asset == "framemask" else real(asset))
    stale = find_stale(cfg, RUNS)
    assert {triple(s) for s in stale} == (
        run_partitions(["framemask", "binned_cube"]) | module_partitions())
    assert {s.reason for s in stale if s.asset == "framemask"} == {"code changed"}


def test_scan_binning_change_stales_the_scan_and_what_uses_it(beamtime):
    path, _ = beamtime
    data = yaml.safe_load(path.read_text())
    data["scan_variable"]["binning"] = {"bin_width": 0.25}
    path.write_text(yaml.safe_dump(data))
    cfg = load_beamtime(path)
    assert stale_set(cfg) == run_partitions(["scan_variable", "binned_cube"]) | module_partitions()


def test_dagster_shows_exactly_the_partitions_a_new_dark_makes_stale(tmp_path):
    """What the web UI shows: the observed dark run files change, the darks turn stale, then their dependents."""
    import dagster as dg
    from dagster._core.definitions.data_version import StaleStatus
    from dagster._utils.test.data_versions import get_stale_status_resolver

    from xfel_assets.defs.assets import ALL_ASSETS
    from xfel_assets.cli.backfill import record_source_versions
    from xfel_assets.defs.partitions import run_module_key
    from xfel_assets.defs.resources import resources_for

    path = make_beamtime(tmp_path, [small_run(2)], dark=dark_run(1))
    write_run(tmp_path / "raw", dark_run(5))
    res = resources_for(path)
    pm = dg.AssetKey("preprocessed_module")

    def make(selection, key):
        assert dg.materialize(ALL_ASSETS, selection=selection, partition_key=key, instance=instance,
                              resources=res).success

    def status(asset, key):
        return get_stale_status_resolver(instance, ALL_ASSETS).get_status(dg.AssetKey(asset), key)

    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("runs", ["r0002"])
        record_source_versions(instance, load_beamtime(path))
        make(["raw_run", "scan_variable", "framemask"], "r0002")
        for m in ("00", "01"):
            make(["dark"], m)
            make(["preprocessed_module"], run_module_key("r0002", m))
        make(["binned_cube"], "r0002")
        keys = [("raw_run", "r0002"), ("dark", "00"), ("dark", "01"), ("preprocessed_module", run_module_key("r0002", "00")),
                ("preprocessed_module", run_module_key("r0002", "01")), ("binned_cube", "r0002")]
        assert {status(a, k) for a, k in keys} == {StaleStatus.FRESH}

        cfg = set_config(path, dark_run=5)
        record_source_versions(instance, cfg)  # what source_change_sensor does on its next tick
        assert status("dark", "00") == status("dark", "01") == StaleStatus.STALE
        assert status("raw_run", "r0002") == StaleStatus.FRESH
        # Where Dagster shows staleness it agrees with `xfel-assets stale`: the new dark run is new
        # provenance, so both show the darks stale (the README says where Dagster shows less).
        dagster_stale = {(a, str(k)) for a, k in keys if status(a, k) == StaleStatus.STALE}
        ours = {(st.asset, str(st.key)) for st in staleness.find_stale(cfg, model.Scope(runs=["r0002"]))}
        assert dagster_stale == {("dark", "00"), ("dark", "01")} and dagster_stale <= ours
        # Dagster's staleness is not transitive: the modules show it once their dark is remade ...
        assert status("preprocessed_module", run_module_key("r0002", "00")) == StaleStatus.FRESH
        make(["dark"], "00")
        assert status("dark", "00") == StaleStatus.FRESH
        assert status("preprocessed_module", run_module_key("r0002", "00")) == StaleStatus.STALE
        assert status("preprocessed_module", run_module_key("r0002", "01")) == StaleStatus.FRESH
        causes = get_stale_status_resolver(instance, ALL_ASSETS).get_stale_causes(pm, run_module_key("r0002", "00"))
        assert any(c.dependency and c.dependency.asset_key == dg.AssetKey("dark") for c in causes)
        # ... which is why --stale-only walks the lineage itself: every module and the cube, now.
        assert stale_set(cfg, ["r0002"]) == ({("dark", None, 1)} | module_partitions(["r0002"])
                                             | run_partitions(["binned_cube"], ["r0002"]))
