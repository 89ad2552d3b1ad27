"""The workflow model: staleness and its redo for every workflow, one change at a time, and derived code versions.

One beamtime with all three workflows (DSSC runs with small data, two in-situ samples, event
files) is made once through the model's make functions; each test changes one thing in a copy,
checks that `xfel-assets stale` lists exactly the outputs that depend on it (none of another
workflow), redoes those, checks through the files' created_utc that exactly those were rewritten,
and that nothing is stale afterwards.
"""

from __future__ import annotations

import contextlib
import io
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

from conftest import dark_run, make_beamtime, small_run
from test_dssc_smalldata import GEOMETRY, ROIS
from xfel_core.config import load_beamtime
from xfel_core.demo.beamtime import write_run
from xfel_core.demo.events import events_config, write_event_run, write_event_runs
from xfel_core.demo.insitu import insitu_config, write_insitu_sample
from xfel_core.lineage import code, model, staleness, versions
from xfel_core.outputs import read_attrs

SAMPLES = ("GaN01", "GaN02")


def make_all(cfg) -> None:
    """Every partition of every asset, in dependency order, through the model."""
    for asset, keys in staleness.every_partition(cfg).items():
        spec = model.asset(asset)
        for key in keys:
            spec.make(cfg, *spec.partitioning.args(key))


def redo(cfg, stale) -> None:
    """Re-make the stale outputs in dependency order (what backfill --stale-only selects and asks to overwrite)."""
    for st in stale:
        spec = model.asset(st.asset)
        spec.make(cfg, *spec.partitioning.args(st.key), *((True,) if st.asset == "insitu_frames" else ()))


def created(cfg) -> dict[tuple[str, str], str]:
    """created_utc of every output, by (asset, key)."""
    return {(a, str(k)): str(read_attrs(model.asset(a).output(cfg, k)).get("created_utc"))
            for a, ks in staleness.every_partition(cfg).items() for k in ks}


@pytest.fixture(scope="module")
def made_once(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("all_workflows")
    raw = root / "raw"
    path = make_beamtime(root, [small_run(2)], dark=dark_run(1),
                         smalldata={"rois": ROIS, "geometry": GEOMETRY})
    for s in SAMPLES:
        write_insitu_sample(raw / "insitu", sample=s, measurements=("m01", "m02"), frames=6, seed=len(s))
    write_event_runs(raw / "events", "pal", runs=2, n_per_point=6)
    data = yaml.safe_load(path.read_text())
    data["insitu"] = insitu_config("raw/insitu")
    data["events"] = events_config("raw/events", "pal")
    path.write_text(yaml.safe_dump(data))
    make_all(load_beamtime(path))
    return root


@pytest.fixture
def beamtime(made_once, tmp_path) -> Path:
    """A copy of the made beamtime (file times kept: its outputs stay current)."""
    root = tmp_path / "bt"
    shutil.copytree(made_once, root)
    return root / "beamtime.yaml"


def edit(path: Path, change) -> object:
    data = yaml.safe_load(path.read_text())
    change(data)
    path.write_text(yaml.safe_dump(data))
    return load_beamtime(path)


def stale_command(path: Path, *args: str) -> str:
    from xfel_assets.cli.main import main

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["stale", "--beamtime", str(path), *args]) == 0
    return out.getvalue()


def stale_pairs(cfg) -> set[tuple[str, str]]:
    return {(st.asset, str(st.key)) for st in staleness.find_stale(cfg)}


def check_redo(cfg, expected: set[tuple[str, str]]) -> None:
    """The stale outputs are exactly ``expected``; redoing them rewrites exactly them; then none is stale."""
    stale = staleness.find_stale(cfg)
    assert {(st.asset, str(st.key)) for st in stale} == expected
    before = created(cfg)
    redo(cfg, stale)
    after = created(cfg)
    assert {k for k in after if after[k] != before[k]} == expected
    assert staleness.find_stale(cfg) == []


def keys_of(cfg, asset: str, **scope) -> set[tuple[str, str]]:
    return {(asset, str(k)) for k in staleness.partitions(cfg, model.asset(asset), model.Scope(**scope))}


def test_made_beamtime_is_current_and_the_command_says_so(beamtime):
    cfg = load_beamtime(beamtime)
    assert staleness.find_stale(cfg) == []
    parts = staleness.every_partition(cfg)
    assert set(parts) == {a.name for a in model.assets() if not a.overview}  # every asset of every workflow has partitions
    out = stale_command(beamtime)
    assert f"0 of {sum(map(len, parts.values()))} outputs stale or missing" in out


def test_new_dssc_dark_run(beamtime):
    write_run(beamtime.parent / "raw", dark_run(5))
    # The old dark run is no data run: the beamtime leaves it out (else it would be a new run to process).
    cfg = edit(beamtime, lambda d: d.update(dark_run=5, ignore_runs=[1]))
    expected = (keys_of(cfg, "dark") | keys_of(cfg, "preprocessed_module") | keys_of(cfg, "dssc_smalldata")
                | keys_of(cfg, "binned_cube"))
    listed = stale_command(beamtime).split("\n\n")[0]
    assert "input changed: dark" in listed and "event" not in listed and "insitu" not in listed and "roi" not in listed
    assert "dark                           01                           no output" in listed
    check_redo(cfg, expected)


def test_new_dark_run_of_the_event_files(beamtime):
    write_event_run(beamtime.parent / "raw" / "events", 9, "pal", n_per_point=3, dark=True)
    cfg = edit(beamtime, lambda d: d["events"].update(dark_run=9))
    reasons = {st.asset: st.reason for st in staleness.find_stale(cfg)}
    # events.dark_run is read by both (the dark image; the cube's provenance): configuration and input change.
    assert reasons["event_smalldata"].startswith("input changed: dark")
    check_redo(cfg, keys_of(cfg, "event_smalldata") | keys_of(cfg, "event_cube"))


@pytest.mark.parametrize("key, change", [
    ("events.anomalies", lambda ev: ev["anomalies"].update(saturation=ev["anomalies"]["saturation"] * 0.9)),
    ("events.geometry", lambda ev: ev["geometry"].update(distance_m=ev["geometry"]["distance_m"] * 1.01)),
])
def test_changed_event_configuration(beamtime, key, change):
    cfg = edit(beamtime, lambda d: change(d["events"]))
    out = stale_command(beamtime, "--workflow", "events")
    assert f"configuration changed: {key}" in out
    assert {st.reason for st in staleness.find_stale(cfg) if st.asset == "event_cube"} == {"input changed: event_smalldata"}
    check_redo(cfg, keys_of(cfg, "event_smalldata") | keys_of(cfg, "event_cube"))


def test_new_flat_field_of_one_sample(beamtime):
    cfg = load_beamtime(beamtime)
    flat = beamtime.parent / "raw" / "insitu" / "GaN02" / cfg.insitu.flatfield
    tiff = sorted(flat.iterdir())[0]
    tiff.write_bytes(tiff.read_bytes())  # the facility writes a new flat-field: same name, new file time
    expected = (keys_of(cfg, "insitu_frames", samples=["GaN02"]) | keys_of(cfg, "roi_series", samples=["GaN02"])
                | {("attenuation_corrected_series", "GaN02")})
    assert len(expected) == 5
    assert "input changed: files" in stale_command(beamtime, "--samples", "GaN02")
    check_redo(cfg, expected)


def test_changed_insitu_rois(beamtime):
    def move(d):
        d["insitu"]["rois"][0]["y"] = [d["insitu"]["rois"][0]["y"][0] + 1, d["insitu"]["rois"][0]["y"][1] + 1]
    cfg = edit(beamtime, move)
    reasons = {st.reason for st in staleness.find_stale(cfg) if st.asset == "roi_series"}
    assert reasons == {"input changed: rois"}
    check_redo(cfg, keys_of(cfg, "roi_series") | keys_of(cfg, "attenuation_corrected_series"))


def test_an_edited_source_file_of_one_workflow(beamtime, monkeypatch, tmp_path):
    """Editing a function of the event files' anomaly rules changes the code of exactly the assets that reach it."""
    import xfel_core.events.anomalies as anomalies

    cfg = load_beamtime(beamtime)
    source = Path(anomalies.__file__).read_text()
    fn = "hot_pixels"
    edited = tmp_path / "anomalies.py"
    edited.write_text(source.replace(f"def {fn}(", f"def {fn}(  # edited\n    ", 1))
    real = code.module_path
    monkeypatch.setattr(code, "module_path", lambda name: edited if name == "xfel_core.events.anomalies" else real(name))
    code.forget()
    versions.code_version.cache_clear()
    try:
        reasons = {(st.asset, st.reason) for st in staleness.find_stale(cfg)}
        assert reasons == {("event_smalldata", "code changed"), ("event_cube", "input changed: event_smalldata")}
        check_redo(cfg, keys_of(cfg, "event_smalldata") | keys_of(cfg, "event_cube"))
    finally:
        monkeypatch.undo()
        code.forget()
        versions.code_version.cache_clear()


def test_code_versions_follow_the_functions_each_asset_reaches():
    reached = {a.name: set(code.code_modules(a.make)) for a in model.assets()}
    assert "xfel_core.binning_kernel" in reached["event_cube"]  # the standard errors' finalize
    assert "xfel_core.previews" in reached["binned_cube"] and "xfel_core.previews" not in reached["raw_run"]
    by_workflow = {w.name: {m for a in w.assets for m in reached[a.name]} for w in model.workflows()}
    for wf, mods in by_workflow.items():
        for other in set(by_workflow) - {wf}:
            assert not {m for m in mods if m.startswith(f"xfel_core.{other}.")}, (wf, other)
    # Derived, not listed: a new helper module a make function calls joins that asset's code.
    assert reached["insitu_frames"] >= {"xfel_core.insitu.correct", "xfel_core.readers.tiff"}


def test_every_slurm_asset_has_a_job_size():
    from xfel_core.config import SLURM_ASSETS

    assert set(SLURM_ASSETS) == {a.name for a in model.assets() if a.slurm}


def test_config_versions_name_the_changed_key(beamtime):
    cfg = load_beamtime(beamtime)
    before = versions.config_versions(cfg, "event_smalldata")
    cfg2 = edit(beamtime, lambda d: d["events"].update(timing_tool_scale=2e-3))
    after = versions.config_versions(cfg2, "event_smalldata")
    assert [k for k in after if after[k] != before[k]] == ["events.timing_tool_scale"]
    assert np.all([len(v) == 8 for v in after.values()])


@pytest.fixture
def unload_workflow_files():
    """The beamtime's own workflows leave the model after the test: the next test's beamtime has none."""
    yield
    model.unload_files()
    assert "pulse_energy" not in {w.name for w in model.workflows()}


def test_an_extra_workflow_and_a_stale_only_backfill_across_every_workflow(tmp_path, unload_workflow_files):
    """A workflow declared in a test file gets its Dagster asset, staleness and backfill; one real backfill
    (daemon, asset backfill) redoes exactly the stale outputs of every workflow."""
    from test_backfill import backfill

    root = tmp_path / "bt"
    path = make_beamtime(root, [small_run(2)], smalldata={"rois": ROIS, "geometry": GEOMETRY})
    shutil.copy(Path(__file__).with_name("extra_workflow.py"), root / "extra_workflow.py")
    write_insitu_sample(root / "raw" / "insitu", sample="GaN01", measurements=("m01",), frames=4)
    write_event_runs(root / "raw" / "events", "pal", runs=1, n_per_point=4)
    cfg = edit(path, lambda d: d.update(workflows=["extra_workflow.py"], insitu=insitu_config("raw/insitu"),
                                        events=events_config("raw/events", "pal")))
    make_all(cfg)
    assert ("pulse_energy", "r0002") in created(cfg) and staleness.find_stale(cfg) == []
    assert "0 of 1 outputs stale" in stale_command(path, "--workflow", "pulse_energy")  # its own --workflow

    # One change per workflow: a raw file of r0002 rewritten, an anomaly rule, the sample's flat-field.
    raw_file = next(cfg.run_dir("r0002").glob("*DSSC01*.h5"))
    raw_file.write_bytes(raw_file.read_bytes())
    cfg = edit(path, lambda d: d["events"]["anomalies"].update(saturation=d["events"]["anomalies"]["saturation"] * 0.9))
    flat = sorted((root / "raw" / "insitu" / "GaN01" / cfg.insitu.flatfield).iterdir())[0]
    flat.write_bytes(flat.read_bytes())
    stale = {(st.asset, str(st.key)) for st in staleness.find_stale(cfg)}
    assert {a for a, _ in stale} == {"raw_run", "scan_variable", "framemask", "preprocessed_module", "binned_cube",
                                     "dssc_smalldata", "pulse_energy", "event_smalldata", "event_cube",
                                     "insitu_frames", "roi_series", "attenuation_corrected_series"}
    before = created(cfg)

    out = backfill(path, tmp_path / "home", "--stale-only")
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"backfill of {len(stale)} partitions" in out.stdout
    assert "run tables: run_table made, event_run_table made, insitu_run_table made" in out.stdout  # after it
    assert "over 1 runs (r0002), 1 event runs (r0002), 1 samples (GaN01)" in out.stdout
    assert "pulse_energy 1" in out.stdout
    after = created(cfg)
    assert {k for k in after if after[k] != before[k]} == stale
    assert staleness.find_stale(cfg) == []
    # The progress goes to stderr as bar lines only: no log line among them.
    assert all(line.startswith(("[", "starting a Dagster daemon", "using the running")) or not line.strip()
               for line in out.stderr.splitlines()), out.stderr


def test_every_built_in_asset_is_in_one_job_of_one_partitioning():
    """The asset jobs (the new-run chain's stages, the sensors' runs) cover the model's built-in assets once each."""
    from xfel_assets.defs.jobs import JOB_SELECTIONS

    built_in = [a.name for w in model.workflows() if w.name in ("euxfel", "insitu", "events") for a in w.assets]
    in_jobs = [a for job, sel in JOB_SELECTIONS.items() for a in sel if a in built_in]
    assert sorted(in_jobs) == sorted(built_in)
    for job, sel in JOB_SELECTIONS.items():
        assert len({model.node(a).partitioning.name for a in sel}) == 1, job


def test_the_definitions_take_the_jobs_and_sensors_with_the_assets_whatever_the_model_holds_later(tmp_path):
    """Seen in CI: a worker that imported the assets, then loaded a beamtime's variables into the model (another
    test's), then imported the definitions got jobs selecting variables with no asset, and Dagster refused the
    code location (KeyError: AssetKey roi_series at a backfill)."""
    import os
    import subprocess
    import sys

    from conftest import dark_run, make_beamtime, small_run

    from xfel_core.demo import variables as demo_variables

    bt = make_beamtime(tmp_path / "bt", [small_run(2)], dark=dark_run(), variables=str(demo_variables.__file__))
    script = (
        "import os\n"
        "from xfel_core.config import load_beamtime\n"
        "from xfel_core.lineage import model\n"
        "import xfel_assets.defs.assets\n"  # the assets of $XFEL_BEAMTIME: none there, so no variables
        f"model.load_files(load_beamtime({str(bt)!r}))\n"
        "from xfel_assets.definitions import defs\n"
        "repo = defs.get_repository_def()\n"
        "repo.load_all_definitions()\n"
        "print(sorted(j.name for j in repo.get_all_jobs()))\n")
    env = dict(os.environ, XFEL_BEAMTIME=str(tmp_path / "not-yet.yaml"))
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "variables_run_job" not in out.stdout and "run_inputs_job" in out.stdout


def test_the_jobs_and_the_stages_of_a_run_come_from_the_model():
    """The asset jobs, their selections and the stages (in dependency order) are read off the declarations."""
    from xfel_assets.defs.jobs import ALL_JOBS, JOB_SELECTIONS, RUN_STAGES, run_stage_work
    from xfel_core.lineage.model import AssetSpec, Input, Job, Workflow
    from xfel_core.workflows.euxfel import MODULE, RUN

    assert RUN_STAGES == ("inputs", "modules", "cube") and model.stages("insitu") == ["measurements", "samples"]
    assert {j.name for j in ALL_JOBS} == set(JOB_SELECTIONS) == {j.name for j, _ in model.jobs()}
    assert JOB_SELECTIONS["run_inputs_job"] == ["raw_run", "scan_variable", "framemask"]
    assert JOB_SELECTIONS["observe_calibration_job"] == ["dark_run_files", "gain_map"]
    assert run_stage_work("inputs", ["r0002"], ["00", "01"], ["01"]) == [("run_inputs_job", "r0002"), ("dark_job", "01")]
    assert run_stage_work("modules", ["r0002"], ["00"]) == [("module_job", "00|r0002"), ("dssc_smalldata_job", "00|r0002")]

    def make(cfg, key):
        return {}

    def out(cfg, key):
        return Path("/nonexistent")

    names = {w.name for w in model.workflows()}
    with pytest.raises(ValueError, match="one job, one partitioning"):
        model.register(Workflow("mixed", "", assets=[AssetSpec("per_run", RUN, make, out, job="j"),
                                                     AssetSpec("per_module", MODULE, make, out, job="j")],
                                jobs=[Job("j", "", stage="s")]))
    with pytest.raises(ValueError, match="cycle"):
        model.register(Workflow("cycle", "", assets=[
            AssetSpec("first", RUN, make, out, inputs=(Input("second"),), job="a"),
            AssetSpec("second", RUN, make, out, inputs=(Input("first"),), job="b")],
            jobs=[Job("a", "", stage="one"), Job("b", "", stage="two")]))
    with pytest.raises(ValueError, match="names job 'nowhere'"):
        model.register(Workflow("undeclared", "", assets=[AssetSpec("lost", RUN, make, out, job="nowhere")]))
    assert {w.name for w in model.workflows()} == names


def test_a_broken_workflow_file_is_named_and_leaves_the_model_as_it_was(tmp_path, unload_workflow_files):
    from xfel_core.exceptions import ConfigError

    (tmp_path / "broken.py").write_text("from xfel_core.workflows.euxfel import RUN\nraise ValueError('half-written')\n")
    path = make_beamtime(tmp_path, [], workflows=["broken.py"])
    names = {w.name for w in model.workflows()}
    with pytest.raises(ConfigError, match=r"broken\.py does not load: ValueError: half-written"):
        model.load_files(load_beamtime(path))
    assert {w.name for w in model.workflows()} == names


def test_code_versions_are_kept_on_disk_under_everything_they_depend_on(beamtime, monkeypatch, tmp_path):
    """Found once (parsing the code each asset reaches), then read from the user's cache by every process; a
    cache entry is named by the package's sources, the asset and its functions' own files, so an edit misses it."""
    monkeypatch.setattr(versions, "CODE_VERSIONS_DIR", tmp_path / "code-versions")
    names = [a.name for a in model.assets()]

    def fresh() -> dict[str, str]:
        code.forget()
        versions.code_version.cache_clear()
        return {n: versions.code_version(n) for n in names}

    try:
        found = fresh()
        entries = sorted((tmp_path / "code-versions").iterdir())
        assert len(entries) == len(names) and {p.read_text() for p in entries} == set(found.values())
        assert fresh() == found  # read back
        entries[0].write_text("from-cache")
        assert "from-cache" in fresh().values()  # the entries are what a process reads, not recomputed
        # An edited source file of the package: every entry is missed, found again, the same where unaffected.
        import xfel_core.events.anomalies as anomalies

        edited = tmp_path / "anomalies.py"
        edited.write_text(Path(anomalies.__file__).read_text().replace("def hot_pixels(", "def hot_pixels(  # x\n", 1))
        real = code.module_path
        monkeypatch.setattr(code, "module_path", lambda n: edited if n == "xfel_core.events.anomalies" else real(n))
        after = fresh()
        assert {n for n in names if after[n] != found[n]} == {"event_smalldata"}
        assert len(list((tmp_path / "code-versions").iterdir())) == 2 * len(names)
    finally:
        monkeypatch.undo()
        code.forget()
        versions.code_version.cache_clear()
