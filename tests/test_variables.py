"""User variables (a beamtime's variables.py of @variable functions), the run tables and the notes.

The values are checked against straightforward reads of the files (h5py on the raw files and the
outputs, tifffile on the TIFF headers), not through the code under test.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
import tifffile
import xarray as xr
import yaml

from conftest import make_beamtime, small_run
from xfel_core.config import load_beamtime
from xfel_core.demo.events import events_config, write_event_runs
from xfel_core.demo.insitu import insitu_config, write_insitu_sample
from xfel_core.lineage import model, staleness
from xfel_core.notes import add_note, read_notes
from xfel_core.outputs import read_attrs
from xfel_core.runtable import output_path as table_path
from xfel_core.variables import read_value
from xfel_core.workflows import variables as declared

CLI = str(Path(sys.executable).parent / "xfel-assets")
RUNS = ["r0002", "r0003"]

VARIABLES = '''
import numpy as np
import xarray as xr

from xfel_core.variables import Skip, variable

XGM = ("SCS_BLU_XGM/XGM/DOOCS:output", "data.intensitySa3TD")


def _pulses(energy):
    """The pulse slots with beam (the rest of the 1000 are 0)."""
    return energy[:, (energy > 0).any(axis=0)]


@variable(title="XGM", units="uJ")
def xgm(run):
    return float(np.nanmean(_pulses(run[XGM].ndarray())))


@variable(title="Pulses")
def pulses(run):
    return int(_pulses(run[XGM].ndarray()).shape[1])


@variable(title="Label")
def label(run_key):
    return f"run {run_key}"


@variable(title="Bright")
def bright(xgm):
    return xgm > 100


@variable(title="Per train", units="uJ")
def per_train(run):
    return _pulses(run[XGM].ndarray()).mean(axis=1)


@variable(title="Curve", units="ADU")
def curve(binned_cube):
    return binned_cube["difference"].mean(("module", "y", "x"))


@variable(title="Stats")
def stats(binned_cube):
    return xr.Dataset({"frames": binned_cube["count"].sum(), "points": len(binned_cube["scan_variable"])})


@variable(title="Figure")
def figure(curve, run_key):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(2, 2))
    fig.subplots().plot(curve, "o-")
    fig.suptitle(run_key)
    return fig


@variable(title="Reference")
def reference(run_key):
    if run_key != "r0003":
        raise Skip("not the reference run")
    return 1.5


@variable(title="Twice the reference")
def twice(reference):
    return 2 * reference


@variable(title="I0", workflow="events")
def i0(run):
    return float(np.mean(run.i0))


@variable(title="Kept shots", workflow="events")
def kept_shots(event_smalldata):
    return int(event_smalldata["kept"].sum())


@variable(title="Exposure", units="s", workflow="insitu")
def exposure(run):
    return float(sum(h.exposure_s for h in run.headers))


@variable(title="Mean COM x", units="px", workflow="insitu")
def com_x(roi_series):
    return float(roi_series["peak_com_x"].mean())
'''


def make_all(cfg) -> None:
    """Every partition of every asset (the run tables last), through the model's make functions."""
    for asset, keys in staleness.every_partition(cfg).items():
        spec = model.asset(asset)
        for key in keys:
            spec.make(cfg, *spec.partitioning.args(key))
    for spec in model.assets():
        if spec.overview and spec.enabled(cfg):
            spec.make(cfg)


def write_beamtime(root: Path, variables: str = VARIABLES) -> Path:
    path = make_beamtime(root, [small_run(2), small_run(3)])
    (root / "variables.py").write_text(variables)
    write_insitu_sample(root / "raw" / "insitu", sample="GaN01", measurements=("m01", "m02"), frames=4)
    write_event_runs(root / "raw" / "events", "pal", runs=1, n_per_point=4)
    data = yaml.safe_load(path.read_text())
    data.update(variables="variables.py", insitu=insitu_config("raw/insitu"), events=events_config("raw/events", "pal"))
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.fixture(autouse=True)
def unload_variables():
    yield
    model.unload_files()


@pytest.fixture(scope="module")
def made_once(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("variables") / "bt"
    path = write_beamtime(root)
    cfg = load_beamtime(path)
    model.load_files(cfg)
    make_all(cfg)
    model.unload_files()
    return root


@pytest.fixture
def beamtime(made_once, tmp_path) -> Path:
    """A copy of the made beamtime (file times kept: its outputs stay current)."""
    root = tmp_path / "bt"
    shutil.copytree(made_once, root)
    path = root / "beamtime.yaml"
    # The copy's absolute paths point into the copy.
    path.write_text(path.read_text().replace(str(made_once), str(root)))
    return path


def loaded(path: Path):
    cfg = load_beamtime(path)
    model.load_files(cfg)
    return cfg


def value(cfg, name: str, key: str):
    return read_value(declared.output_path(cfg, {v.name: v for v in declared.variables()}[name], key))


def raw_xgm(cfg, run: str) -> np.ndarray:
    """The gas monitor's (trains, pulse slots with beam) from the run's control files, read with h5py."""
    rows = []
    for p in sorted(cfg.run_dir(run).glob("*-DA01-S*.h5")):
        with h5py.File(p, "r") as f:
            rows.append(f["INSTRUMENT/SCS_BLU_XGM/XGM/DOOCS:output/data/intensitySa3TD"][()])
    energy = np.concatenate(rows)
    return energy[:, (energy > 0).any(axis=0)]


def test_variables_of_every_type_and_workflow_equal_straightforward_reads(beamtime):
    cfg = loaded(beamtime)
    assert declared.load_error() is None
    for run in RUNS:
        energy = raw_xgm(cfg, run)
        assert value(cfg, "xgm", run).kind == "number"
        assert value(cfg, "xgm", run).value == pytest.approx(float(energy.mean()), rel=1e-6)
        assert value(cfg, "pulses", run).value == 6 and isinstance(value(cfg, "pulses", run).value, int)
        assert value(cfg, "label", run).value == f"run {run}"
        assert value(cfg, "bright", run).kind == "bool" and value(cfg, "bright", run).value is bool(energy.mean() > 100)
        per_train = value(cfg, "per_train", run)
        assert per_train.kind == "array"
        np.testing.assert_allclose(per_train.value, energy.mean(axis=1), rtol=1e-6)
        with h5py.File(cfg.output_path(run, "binned_cube"), "r") as f:
            diff = f["difference"][()]  # (scan points, module, y, x)
            frames = f["count"][()].sum()
        curve = value(cfg, "curve", run)
        assert curve.kind == "xarray" and curve.value.dims == ("scan_variable",)
        np.testing.assert_allclose(curve.value.values, diff.mean(axis=(1, 2, 3)), rtol=1e-6)
        stats = value(cfg, "stats", run)
        assert stats.kind == "dataset" and int(stats.value["frames"]) == frames
        fig = value(cfg, "figure", run)
        assert fig.kind == "figure" and fig.value.ndim == 3 and fig.value.shape[2] == 4 and fig.value.dtype == np.uint8
        png = Path(fig.attrs["png"])
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert fig.value[..., :3].std() > 0  # something is drawn
    # Skip, and a variable reading a skipped one: an empty cell with the reason.
    assert value(cfg, "reference", "r0002").skipped == "not the reference run"
    assert value(cfg, "twice", "r0002").skipped == "reference skipped: not the reference run"
    assert value(cfg, "twice", "r0003").value == 3.0
    # The event files' and the in-situ measurements' variables.
    with h5py.File(cfg.processed_root / "events" / "r0002" / "event_smalldata.h5", "r") as f:
        assert value(cfg, "i0", "r0002").value == pytest.approx(float(f["i0"][()].mean()))
        assert value(cfg, "kept_shots", "r0002").value == int(f["kept"][()].sum())
    for key in ("GaN01/GaN01_m01", "GaN01/GaN01_m02"):
        tiffs = sorted((cfg.insitu.raw_root / key).glob("*.tif"))
        exposures = [float(re.search(r"Exposure_time\s+([0-9.]+)", tifffile.TiffFile(p).pages[0].description).group(1))
                     for p in tiffs]
        assert value(cfg, "exposure", key).value == pytest.approx(sum(exposures))
        series = pd.read_parquet(cfg.insitu_processed_root / key / "roi_series.parquet")
        assert value(cfg, "com_x", key).value == pytest.approx(float(series["peak_com_x"].mean()))
    # Each value file is readable by xarray alone, with its provenance.
    ds = xr.open_dataset(declared.output_path(cfg, declared.variables()[0], "r0002"), engine="h5netcdf")
    assert ds.attrs["title"] == "XGM" and ds.attrs["units"] == "uJ" and ds.attrs["lineage_version"]
    assert "created_utc" in ds.attrs and ds.attrs["run"] == "r0002"
    # ... naming the files it was computed from (the beamtime is a copy: compared below its root): the raw run's
    # files, an asset's output, another variable's file.
    def inputs(attrs) -> list[str]:
        return [p.split("/bt/", 1)[1] for p in json.loads(attrs["input_files"])]

    root = cfg.raw_root.parent
    assert inputs(ds.attrs) == sorted(str(p.relative_to(root)) for p in (cfg.raw_root / "r0002").glob("*.h5"))
    ds.close()
    assert inputs(value(cfg, "curve", "r0002").attrs) == [str(cfg.output_path("r0002", "binned_cube").relative_to(root))]
    reference = next(v for v in declared.variables() if v.name == "reference")
    assert inputs(value(cfg, "twice", "r0003").attrs) == [str(declared.output_path(cfg, reference, "r0003").relative_to(root))]


def test_each_variable_is_an_asset_with_lineage_to_what_it_reads(beamtime):
    loaded(beamtime)
    assert [i.name for i in model.asset("xgm").inputs] == ["raw_run_files"]
    assert [i.name for i in model.asset("twice").inputs] == ["reference"]
    assert [i.name for i in model.asset("figure").inputs] == ["curve"]
    assert [i.name for i in model.asset("kept_shots").inputs] == ["event_smalldata"]
    assert model.asset("com_x").partitioning is model.asset("roi_series").partitioning
    assert {model.asset(n).workflow for n in ("xgm", "i0", "exposure")} == {"variables"}


def stale_pairs(cfg) -> set[tuple[str, str]]:
    return {(st.asset, str(st.key)) for st in staleness.find_stale(cfg)}


def created(cfg, names) -> dict:
    return {(n, k): str(read_attrs(model.asset(n).output(cfg, k)).get("created_utc"))
            for n in names for k in model.asset(n).partitioning.keys(cfg, model.Scope())}


def edit_variables(path: Path, old: str, new: str) -> None:
    file = path.parent / "variables.py"
    text = file.read_text()
    assert old in text
    file.write_text(text.replace(old, new))
    st = file.stat()
    os.utime(file, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))  # a new mtime even within one clock tick


def test_editing_one_variable_makes_exactly_its_partitions_and_its_dependents_stale(beamtime):
    cfg = loaded(beamtime)
    assert stale_pairs(cfg) == set()
    names = [v.name for v in declared.variables()]
    before = created(cfg, names)

    edit_variables(beamtime, "return _pulses(run[XGM].ndarray()).mean(axis=1)",
                   "return _pulses(run[XGM].ndarray()).mean(axis=1)  # per train")
    cfg = loaded(beamtime)
    assert stale_pairs(cfg) == {("per_train", r) for r in RUNS}
    assert {st.reason for st in staleness.find_stale(cfg)} == {"code changed"}

    # A variable that another reads: both are stale (the walk is transitive), the rest not.
    edit_variables(beamtime, "return float(np.nanmean(_pulses(run[XGM].ndarray())))",
                   "return float(np.nanmean(_pulses(run[XGM].ndarray()), dtype=np.float64))")
    cfg = loaded(beamtime)
    stale = staleness.find_stale(cfg)
    assert {(st.asset, st.key) for st in stale} == {(n, r) for n in ("per_train", "xgm", "bright") for r in RUNS}
    assert {st.asset: st.reason for st in stale}["bright"] == "input changed: xgm"
    for st in stale:  # in dependency order, as a backfill makes them
        spec = model.asset(st.asset)
        spec.make(cfg, *spec.partitioning.args(st.key))
    assert stale_pairs(cfg) == set()
    after = created(cfg, names)
    assert {k for k in after if after[k] != before[k]} == {(n, r) for n in ("per_train", "xgm", "bright") for r in RUNS}

    # A helper of the file: every variable that calls it, and those reading them.
    edit_variables(beamtime, '"""The pulse slots with beam (the rest of the 1000 are 0)."""',
                   '"""The pulse slots with beam."""')
    cfg = loaded(beamtime)
    assert {a for a, _ in stale_pairs(cfg)} == {"xgm", "pulses", "per_train", "bright"}
    # The platform's own outputs never depend on the variables file.
    assert all(model.asset(a).workflow == "variables" for a, _ in stale_pairs(cfg))


@pytest.mark.parametrize("broken, message", [
    ("@variable(title='x')\ndef broken(run:\n    return 1\n", r"variables\.py:\d+: SyntaxError"),
    ("@variable(title='x')\ndef broken(no_such_asset):\n    return 1\n",
     r"variables\.py:\d+: variable broken: unknown input 'no_such_asset'"),
    ("@variable()\ndef ping(pong):\n    return 1\n\n\n@variable()\ndef pong(ping):\n    return 1\n",
     r"variables\.py:\d+: variables read each other in a cycle: (ping -> pong -> ping|pong -> ping -> pong)"),
    ("raise RuntimeError('half-edited')\n", r"variables\.py:\d+: the variables file does not load: RuntimeError"),
    ("@variable(workflow='lcls')\ndef w(run):\n    return 1\n", r"variables\.py:\d+: variable w: workflow 'lcls'"),
    ("@variable()\ndef binned_cube(run):\n    return 1\n", r"variables\.py:\d+: variable binned_cube has the name of"),
])
def test_a_broken_variables_file_names_file_and_line_and_the_platform_still_loads(beamtime, broken, message):
    (beamtime.parent / "variables.py").write_text(VARIABLES + "\n\n" + broken)
    cfg = loaded(beamtime)
    assert re.search(message, declared.load_error() or ""), declared.load_error()
    assert declared.load_error().startswith(str(beamtime.parent / "variables.py"))
    assert declared.variables() == [] and "variables" not in {w.name for w in model.workflows()}
    assert {"raw_run", "binned_cube", "event_cube", "roi_series", "run_table"} <= {a.name for a in model.assets()}
    assert stale_pairs(cfg) == set()  # the platform's outputs are still current
    info = model.asset("run_table").make(cfg)
    assert re.search(message, read_attrs(table_path(cfg, "run_table"))["variables_error"])
    # The values last computed stay in their columns while the file is mended (they were hidden: issue 33).
    assert "XGM (uJ)" in pd.read_parquet(table_path(cfg, "run_table")).columns and info["rows"] == 2


def test_a_variable_that_raises_fails_only_its_own_partition(beamtime):
    edit_variables(beamtime, 'def label(run_key):\n    return f"run {run_key}"',
                   'def label(run_key):\n    if run_key == "r0003":\n        raise ValueError("no label for r0003")\n'
                   '    return f"run {run_key}"')
    cfg = loaded(beamtime)
    with pytest.raises(ValueError, match="no label for r0003"):
        model.asset("label").make(cfg, "r0003")
    model.asset("label").make(cfg, "r0002")
    assert value(cfg, "label", "r0002").value == "run r0002"


def test_the_run_tables_hold_the_runs_own_numbers_every_variable_and_the_notes(beamtime):
    cfg = loaded(beamtime)
    add_note(cfg, "r0002", "sample B, 50 % transmission", ["alignment"])
    add_note(cfg, "r0002", "beam lost at the end")
    add_note(cfg, "GaN01/GaN01_m02", "cracked")
    for t in ("run_table", "event_run_table", "insitu_run_table"):
        model.asset(t).make(cfg)
    df = pd.read_parquet(table_path(cfg, "run_table"))
    assert list(df["run"]) == RUNS
    for row in df.itertuples(index=False):
        r = dict(zip(df.columns, row))
        with h5py.File(cfg.output_path(r["run"], "raw_run"), "r") as f:
            assert r["trains"] == len(f["train_id"]) and r["modules"] == len(f["module"])
        with h5py.File(cfg.output_path(r["run"], "framemask"), "r") as f:
            mask, reason = f["mask"][()], f["reason"][()]
        assert r["kept fraction"] == pytest.approx(mask.mean(), abs=1e-4)
        assert ("low pulse energy" in r["rejected"]) == bool((reason == 1).any())
        with h5py.File(cfg.output_path(r["run"], "scan_variable"), "r") as f:
            assert r["scan points"] == len(f["centres"])
        assert r["XGM (uJ)"] == pytest.approx(float(raw_xgm(cfg, r["run"]).mean()), rel=1e-6)
        assert r["mean pulse energy (uJ)"] == pytest.approx(r["XGM (uJ)"], rel=1e-3)  # the platform's own, from the framemask
        assert r["Label"] == f"run {r['run']}" and r["Pulses"] == 6
        assert r["Figure"] == "(figure)" and r["preview"].endswith("binned_cube.png")
        assert r["output"] == str(cfg.output_path(r["run"], "binned_cube"))
    assert df.loc[0, "Reference"] == "skipped: not the reference run" and df.loc[1, "Reference"] == "1.5"
    assert df.loc[0, "notes"] == "sample B, 50 % transmission [alignment] | beam lost at the end"
    assert df.loc[0, "tags"] == "alignment" and df.loc[1, "notes"] == ""
    # CSV and Excel hold the same table.
    csv = pd.read_csv(table_path(cfg, "run_table").with_suffix(".csv"))
    xlsx = pd.read_excel(table_path(cfg, "run_table").with_suffix(".xlsx"))
    for other in (csv, xlsx):
        assert list(other.columns) == list(df.columns)
        np.testing.assert_allclose(other["XGM (uJ)"], df["XGM (uJ)"])
        assert list(other["trains"]) == list(df["trains"])
    ins = pd.read_parquet(table_path(cfg, "insitu_run_table"))
    assert list(ins["measurement"]) == ["GaN01/GaN01_m01", "GaN01/GaN01_m02"] and list(ins["frames"]) == [4, 4]
    assert ins.loc[1, "notes"] == "cracked"
    ev = pd.read_parquet(table_path(cfg, "event_run_table"))
    with h5py.File(cfg.processed_root / "events" / "r0002" / "event_smalldata.h5", "r") as f:
        assert ev.loc[0, "events"] == len(f["kept"]) and ev.loc[0, "Kept shots"] == int(f["kept"][()].sum())
        assert ev.loc[0, "kept fraction"] == pytest.approx(f["kept"][()].mean(), abs=1e-4)
    page = table_path(cfg, "run_table").with_suffix(".html").read_text()
    assert page.count("data:image/png;base64,") == 4  # per run: the cube preview and the figure variable


def run_cli(*args: str, home: Path | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ, **({"DAGSTER_HOME": str(home)} if home else {}))
    return subprocess.run([CLI, *args], capture_output=True, text=True, env=env, timeout=900)


def test_the_runs_command_prints_the_tables_in_every_format(beamtime):
    cfg = loaded(beamtime)
    add_note(cfg, "r0003", "good run")
    out = run_cli("runs", "--beamtime", str(beamtime), "--workflow", "euxfel", "--columns", "trains,xgm,notes")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].split() == ["run", "trains", "XGM", "(uJ)", "notes"] and lines[3].split()[-2:] == ["good", "run"]
    out = run_cli("runs", "--beamtime", str(beamtime), "--workflow", "euxfel", "--format", "json", "--columns", "xgm")
    rows = json.loads(out.stdout)
    assert [r["run"] for r in rows] == RUNS
    assert rows[0]["XGM (uJ)"] == pytest.approx(value(cfg, "xgm", "r0002").value)
    out = run_cli("runs", "--beamtime", str(beamtime), "--format", "csv", "--workflow", "insitu", "--columns", "Exposure (s),mean com")
    assert out.stdout.splitlines()[0] == "measurement,Exposure (s),Mean COM x (px)"
    out = run_cli("runs", "--beamtime", str(beamtime), "--format", "markdown")
    assert "run_table (euxfel, 2 rows)" in out.stdout and "insitu_run_table (insitu, 2 rows)" in out.stdout
    assert "| r0002 |" in out.stdout
    out = run_cli("runs", "--beamtime", str(beamtime), "--workflow", "euxfel", "--columns", "scan")
    assert out.returncode == 2 and "matches 2 columns" in out.stderr


def test_notes_keep_their_history_and_refuse_unknown_keys(beamtime, tmp_path):
    cfg = loaded(beamtime)
    home = tmp_path / "home"
    out = run_cli("note", "--beamtime", str(beamtime), "r0002", "first", "--tag", "a", "--tag", "b", home=home)
    assert out.returncode == 0 and "1 notes on it" in out.stdout, out.stderr
    run_cli("note", "--beamtime", str(beamtime), "r0002", "second", home=home)
    listed = run_cli("note", "--beamtime", str(beamtime), "r0002", home=home).stdout.splitlines()
    assert [line.split(": ", 1)[1] for line in listed] == ["first  [a, b]", "second"]
    assert [n.text for n in read_notes(cfg)["r0002"]] == ["first", "second"]
    bad = run_cli("note", "--beamtime", str(beamtime), "GaN99", "x", home=home)
    assert bad.returncode == 2 and "neither a run" in bad.stderr
    # The note is recorded as a new version of the notes source: the run tables' input changed.
    import dagster as dg

    with dg.DagsterInstance.from_config(str(home)) as instance:
        obs = instance.fetch_observations(dg.AssetKey("run_notes"), limit=10).records
    assert len(obs) == 2


DSSC_VARIABLES = '''
import numpy as np

from xfel_core.variables import variable


@variable(title="XGM", units="uJ")
def xgm(run):
    energy = run["SCS_BLU_XGM/XGM/DOOCS:output", "data.intensitySa3TD"].ndarray()
    return float(np.nanmean(energy[:, (energy > 0).any(axis=0)]))


@variable(title="Difference at the last delay", units="ADU")
def last(binned_cube):
    return float(binned_cube["difference"].isel(scan_variable=-1).mean())


@variable(title="Broken")
def broken(last):
    raise ValueError("this variable has a bug")
'''


def dssc_beamtime(root: Path, variables: str = DSSC_VARIABLES) -> Path:
    path = make_beamtime(root, [small_run(2)])
    (root / "variables.py").write_text(variables)
    data = yaml.safe_load(path.read_text())
    data["variables"] = "variables.py"
    path.write_text(yaml.safe_dump(data))
    return path


def test_materialize_makes_the_variables_and_tables_and_a_failing_variable_fails_alone(tmp_path):
    """Through Dagster (`xfel-assets materialize`): the failing variable's Dagster step fails with its error,
    the other variables and the run table are made; the refresh sensor's conditions then request nothing until
    a note is added, and then the run table."""
    path = dssc_beamtime(tmp_path / "bt")
    home = tmp_path / "home"
    out = run_cli("materialize", "--beamtime", str(path), home=home)
    assert out.returncode == 1, out.stdout + out.stderr
    assert "variables_run_job [r0002]: broken: ValueError: this variable has a bug" in out.stdout
    assert "tables (run_table): 1/1 Dagster runs succeeded" in out.stdout
    assert re.search(r"ok\s+r0002", out.stdout)  # the run's own outputs are current
    cfg = loaded(path)
    with h5py.File(cfg.output_path("r0002", "binned_cube"), "r") as f:
        last = float(f["difference"][-1].mean())
    assert value(cfg, "last", "r0002").value == pytest.approx(last, rel=1e-6)
    assert not declared.output_path(cfg, declared.variables()[2], "r0002").exists()
    df = pd.read_parquet(table_path(cfg, "run_table"))
    assert df.loc[0, "Difference at the last delay (ADU)"] == pytest.approx(last, rel=1e-6) and df.loc[0, "Broken"] is None
    assert {st.asset for st in staleness.find_stale(cfg)} == {"broken"}

    # Dagster's automation (the refresh sensor's conditions), evaluated against this home as the daemon does.
    script = f"""
import subprocess
import dagster as dg
from xfel_assets.definitions import defs

def requested(r):
    return sorted(n for n in ("xgm", "last", "broken", "run_table") if r.get_num_requested(dg.AssetKey(n)))

{TICKS}
with dg.DagsterInstance.get() as instance:
    r = dg.evaluate_automation_conditions(defs=defs, instance=instance, evaluation_time=at(1))
    print("tick1", requested(r))
    subprocess.run(["{CLI}", "note", "--beamtime", "{path}", "r0002", "refilled"], check=True)
    r = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=r.cursor, evaluation_time=at(2))
    print("tick2", requested(r))
    r = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=r.cursor, evaluation_time=at(3))
    print("tick3", requested(r))
"""
    ticks = automation_ticks(script, path, home)
    assert "run_table" not in ticks["tick1"] and "'xgm'" not in ticks["tick1"], ticks  # all current
    assert ticks["tick2"] == "[]" and ticks["tick3"] == "['run_table']", ticks  # the note: the table, a tick on


#: The ticks' times in the scripts: ``at(s)`` is s seconds into the current minute (a run table is also
#: made at the first tick of each minute, so the minute they pass is said, not left to the clock).
TICKS = """
import datetime
_minute = datetime.datetime.now(datetime.timezone.utc).replace(second=0, microsecond=0)
def at(s):
    return _minute + datetime.timedelta(seconds=s)
"""


def automation_ticks(script: str, path: Path, home: Path) -> dict[str, str]:
    """Run a script that evaluates Dagster's automation against this home as the daemon does; its ``tickN`` lines."""
    env = dict(os.environ, DAGSTER_HOME=str(home), XFEL_BEAMTIME=str(path))
    res = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    return dict(line.split(" ", 1) for line in res.stdout.splitlines() if line.startswith("tick"))


def test_a_broken_variables_file_leaves_materialize_working(tmp_path):
    path = dssc_beamtime(tmp_path / "bt", DSSC_VARIABLES + "\n@variable()\ndef oops(run:\n")
    out = run_cli("materialize", "--beamtime", str(path), home=tmp_path / "home")
    assert out.returncode == 0, out.stdout + out.stderr
    assert re.search(r"the variables file does not load, its variables are left out: .*variables\.py:\d+: SyntaxError",
                     out.stderr)
    cfg = loaded(path)
    assert cfg.output_path("r0002", "binned_cube").exists() and staleness.find_stale(cfg) == []
    assert "variables file: " in table_path(cfg, "run_table").with_suffix(".html").read_text()


@pytest.mark.daemon
def test_backfills_redo_exactly_the_edited_variable_and_keep_the_notes(tmp_path):
    """`backfill --stale-only` after editing one variable redoes its partitions and the run table, nothing else;
    a full backfill then redoes everything and leaves the notes as they were."""
    from test_backfill import backfill

    path = dssc_beamtime(tmp_path / "bt", DSSC_VARIABLES.replace('raise ValueError("this variable has a bug")',
                                                                 "return 2 * last"))
    cfg = loaded(path)
    make_all(cfg)
    add_note(cfg, "r0002", "sample B, 50 % transmission", ["alignment"])
    notes_before = (cfg.processed_root / "notes" / "notes.jsonl").read_bytes()
    everything = [a.name for a in model.assets() if a.enabled(cfg)]
    before = created(cfg, everything)
    edit_variables(path, "return 2 * last", "return 3 * last")
    cfg = loaded(path)
    assert stale_pairs(cfg) == {("broken", "r0002")}

    out = backfill(path, tmp_path / "home", "--stale-only")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "backfill of 1 partitions (broken 1)" in out.stdout and "run tables: run_table made" in out.stdout
    after = created(cfg, everything)
    assert {k for k in after if after[k] != before[k]} == {("broken", "r0002"), ("run_table", None)}
    assert value(cfg, "broken", "r0002").value == pytest.approx(3 * value(cfg, "last", "r0002").value)
    assert stale_pairs(cfg) == set()

    out = backfill(path, tmp_path / "home")
    assert out.returncode == 0, out.stdout + out.stderr
    again = created(cfg, everything)
    assert all(again[k] != after[k] for k in again)  # every output made again
    assert (cfg.processed_root / "notes" / "notes.jsonl").read_bytes() == notes_before
    assert pd.read_parquet(table_path(cfg, "run_table")).loc[0, "notes"] == "sample B, 50 % transmission [alignment]"


@pytest.mark.e2e
def test_the_run_table_page_sorts_filters_and_hides_columns_in_the_browser(beamtime, tmp_path):
    from playwright.sync_api import sync_playwright

    from test_e2e_ui import CHROMIUM_ARGS, chromium

    cfg = loaded(beamtime)
    add_note(cfg, "r0003", "good <b>run</b>")  # shown as text, not markup
    model.asset("run_table").make(cfg)
    page_path = table_path(cfg, "run_table").with_suffix(".html")
    xgm = {r: value(cfg, "xgm", r).value for r in RUNS}
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium(), headless=True, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1800, "height": 900})
        page.goto(page_path.as_uri())
        assert page.locator("#count").inner_text() == "2 of 2 rows"
        # Every thumbnail (cube previews, figure variables) decodes.
        sizes = page.eval_on_selector_all("td img", "imgs => imgs.map(i => i.naturalWidth)")
        assert len(sizes) == 4 and min(sizes) > 50
        heads = page.locator("th .name").all_inner_texts()
        col = heads.index("XGM (uJ)")
        runs = lambda: page.eval_on_selector_all("#runs tbody tr", "rs => rs.filter(r => r.style.display !== 'none')"  # noqa: E731
                                                 ".map(r => r.cells[0].textContent)")
        page.locator("th .name").nth(col).click()
        assert runs() == sorted(RUNS, key=xgm.get)
        page.locator("th .name").nth(col).click()
        assert runs() == sorted(RUNS, key=xgm.get, reverse=True)
        page.locator("th input").nth(heads.index("notes")).fill("good")
        assert runs() == ["r0003"] and page.locator("#count").inner_text() == "1 of 2 rows"
        assert "good <b>run</b>" in page.inner_text("#runs")
        page.locator("th input").nth(heads.index("notes")).fill("")
        page.locator(f'#columns input[data-col="{heads.index("checks")}"]').uncheck()
        hidden = page.eval_on_selector_all(f"#runs tr > :nth-child({heads.index('checks') + 1})",
                                           "cs => cs.every(c => c.style.display === 'none')")
        assert hidden and runs() == sorted(RUNS, key=xgm.get, reverse=True)
        page.screenshot(path=str(tmp_path / "run_table.png"), full_page=True)
        browser.close()


def test_a_run_table_waits_for_the_variables_its_inputs_change(tmp_path):
    """The refresh sensor's conditions (evaluated as the daemon does): a variable's input changes; the variable is
    requested, the run table waits (made beside it, it would miss its value) until a tick sees no new update and
    nothing being made; then it is requested once. While inputs change at every tick, it is requested at the
    first tick of the next minute."""
    path = dssc_beamtime(tmp_path / "bt", DSSC_VARIABLES.replace('raise ValueError("this variable has a bug")',
                                                                 "return 2 * last"))
    home = tmp_path / "home"
    assert run_cli("materialize", "--beamtime", str(path), home=home).returncode == 0
    script = f"""
from pathlib import Path
import dagster as dg
from xfel_assets.definitions import defs
from xfel_assets.defs.assets import ALL_ASSETS
from xfel_assets.defs.resources import resources_for

def requested(r):
    return sorted(n for n in ("xgm", "last", "broken", "run_table") if r.get_num_requested(dg.AssetKey(n)))

def make(name, key=None):
    dg.materialize(ALL_ASSETS, selection=dg.AssetSelection.assets(name), partition_key=key, instance=instance,
                   resources=resources_for(Path("{path}")))

{TICKS}
with dg.DagsterInstance.get() as instance:
    r = dg.evaluate_automation_conditions(defs=defs, instance=instance, evaluation_time=at(1))
    print("tick1", requested(r))
    make("last", "r0002")
    r = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=r.cursor, evaluation_time=at(2))
    print("tick2", requested(r))
    make("broken", "r0002")
    r = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=r.cursor, evaluation_time=at(3))
    print("tick3", requested(r))
    r = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=r.cursor, evaluation_time=at(4))
    print("tick4", requested(r))
    make("run_table")
    r = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=r.cursor, evaluation_time=at(5))
    print("tick5", requested(r))
    # Runs keep arriving: an input changes at every tick, no tick is quiet; the table waits for the next minute.
    for i, t in enumerate((6, 30, 61), start=6):
        make("last", "r0002")
        r = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=r.cursor, evaluation_time=at(t))
        print(f"tick{{i}}", requested(r))
"""
    ticks = automation_ticks(script, path, home)
    assert ticks == {"tick1": "[]", "tick2": "['broken']", "tick3": "[]", "tick4": "['run_table']", "tick5": "[]",
                     **{k: ticks[k] for k in ("tick6", "tick7", "tick8")}}, ticks
    assert ["run_table" in ticks[k] for k in ("tick6", "tick7", "tick8")] == [False, False, True], ticks
