"""The beamtime's own variables (``variables:`` in beamtime.yaml) and the run tables, as workflows of the model.

Each ``@variable`` function of the file is an asset of workflow ``variables`` (Dagster group
``variables``), partitioned like its workflow's runs, with an input per parameter: the run's raw
files, a platform asset of the same run, another variable. Its code version covers its function
and the helpers of the file it calls (:mod:`xfel_core.lineage.code` follows them), so editing one
variable makes only its partitions stale. A file that does not load (a syntax error, an unknown
input name, a cycle) registers no variable and leaves the error in :data:`LOAD_ERROR`; the
platform's own assets load and run as before.

The run tables (one per workflow: ``run_table``, ``event_run_table``, ``insitu_run_table``) read
every run's outputs, variables and notes (workflow ``run_table``; :mod:`xfel_core.runtable`).
"""

from __future__ import annotations

import importlib.util
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .. import runtable
from ..config import BeamtimeConfig
from ..exceptions import ConfigError, MissingInputError
from ..limits import run_limited
from ..lineage import model, versions
from ..lineage.model import BEAMTIME, AssetSpec, Input, Job, Partitioning, Scope, Source, Workflow
from ..notes import notes_version
from ..outputs import done_info, provenance, read_attrs
from ..variables import (
    META_INPUTS,
    RAW_INPUT,
    WORKFLOWS,
    Skip,
    Variable,
    as_dataset,
    read_value,
    variables_of,
    write_value,
)
from .euxfel import RUN
from .events import EVENT_RUN
from .insitu import MEASUREMENT

VARIABLES = "variables"
RUN_TABLES = "run_table"
#: The error of the beamtime's variables file, ``file:line: what`` (None: it loaded, or there is none).
LOAD_ERROR: str | None = None


@dataclass(frozen=True)
class Runs:
    """What a workflow's runs are to its variables: partitioning, raw-files source, folder of their outputs."""

    partitioning: Partitioning
    raw_source: str
    output_dir: Any  # (cfg, key) -> Path
    job: str


def _euxfel_dir(cfg: BeamtimeConfig, run: str) -> Path:
    return cfg.output_dir(run)


def _events_dir(cfg: BeamtimeConfig, run: str) -> Path:
    from ..events.pipeline import output_path

    return output_path(cfg, run, "")


def _insitu_dir(cfg: BeamtimeConfig, key: str) -> Path:
    from ..insitu.layout import measurement_output

    return measurement_output(cfg, key, "")


RUNS = {
    "euxfel": Runs(RUN, "raw_run_files", _euxfel_dir, "variables_run_job"),
    "events": Runs(EVENT_RUN, "event_run_files", _events_dir, "variables_event_run_job"),
    "insitu": Runs(MEASUREMENT, "insitu_files", _insitu_dir, "variables_measurement_job"),
}


def output_path(cfg: BeamtimeConfig, var: Variable, key: str) -> Path:
    """``<the run's output folder>/variables/<name>.h5``."""
    return RUNS[var.workflow].output_dir(cfg, key) / "variables" / f"{var.name}.h5"


# --- the inputs a variable asks for -----------------------------------------------------------------

def raw_data(cfg: BeamtimeConfig, workflow: str, key: str):
    """A run's raw data: an EXtra-data DataCollection, the event reader's EventRun, an in-situ Measurement."""
    if workflow == "euxfel":
        from ..readers import euxfel

        return euxfel.open_run(cfg.run_dir(key))
    if workflow == "events":
        from ..readers.events import read_run

        return read_run(cfg.require_events(), key)
    from ..readers.tiff import read_measurement

    return read_measurement(cfg.require_insitu(), key)


def existing_output(cfg: BeamtimeConfig, asset: str, key: str) -> Path:
    """The output file of an asset's partition; MissingInputError naming it if it is not made."""
    path = model.asset(asset).output(cfg, key)
    if not path.exists():
        raise MissingInputError(f"{path} does not exist: materialize {asset} [{key}] first")
    return path


def asset_output(path: Path):
    """A platform asset's output file: HDF5 as an xarray Dataset, Parquet as a DataFrame (attributes in .attrs)."""
    import pandas as pd
    import xarray as xr

    from ..outputs import read_attrs

    if path.suffix == ".parquet":
        df = pd.read_parquet(path)
        df.attrs.update(read_attrs(path))
        return df
    return xr.load_dataset(path, engine="h5netcdf", phony_dims="sort")


def variable_input(name: str, path: Path) -> Any:
    """The value of another variable (its file at ``path``); its Skip is this variable's Skip."""
    v = read_value(path)
    if v.skipped is not None:
        raise Skip(f"{name} skipped: {v.skipped}")
    return v.value


def raw_files(cfg: BeamtimeConfig, workflow: str, key: str) -> list[Path]:
    """The raw files of a run (for the value's provenance)."""
    if workflow == "euxfel":
        from ..readers import euxfel

        return euxfel.run_files(cfg.run_dir(key))
    if workflow == "events":
        from ..readers.events import run_files

        return run_files(cfg.require_events(), key)
    from ..insitu import layout

    return layout.tiff_files(layout.measurement_dir(cfg.require_insitu(), key))


def make_variable(cfg: BeamtimeConfig, var: Variable, key: str) -> dict:
    """Compute one variable for one run from the inputs it names (in a process of its own, under the time and
    memory limits of ``execution``); write its value (or its Skip) atomically."""
    t0 = time.perf_counter()
    vers = versions.made_from(cfg, var.name, key)
    names = _user_variables()

    def compute() -> tuple[list[Path], str | None, tuple | None]:
        """(inputs read, the Skip reason or None, (dataset, kind, png, plain value))."""
        args, inputs = {}, []
        try:
            for p in var.inputs:
                if p == RAW_INPUT:
                    inputs += raw_files(cfg, var.workflow, key)
                    args[p] = raw_data(cfg, var.workflow, key)
                elif p == "run_key":
                    args[p] = key
                elif p == "beamtime":
                    args[p] = cfg
                else:
                    inputs.append(existing_output(cfg, p, key))
                    args[p] = variable_input(p, inputs[-1]) if p in names else asset_output(inputs[-1])
            value = var.func(**args)
            if value is None:
                raise Skip("returned None")
        except Skip as e:
            return inputs, str(e) or "skipped", None
        ds, kind, png = as_dataset(value, var)
        plain = (value.item() if hasattr(value, "item") else value) if kind in ("number", "string", "bool") else None
        return inputs, None, (ds.load(), kind, png, plain)

    inputs, skip, made = run_limited(compute, f"variable {var.name} ({var.where}) of {key}",
                                     cfg.execution.variable_timeout_s, cfg.execution.variable_memory_gb)
    path = output_path(cfg, var, key)
    attrs = provenance(cfg.yaml_text(), [str(p) for p in inputs], run=key, title=var.title, units=var.units, description=var.description,
                       tags=list(var.tags), variable=var.name, **vers)
    if skip is not None:
        import xarray as xr

        write_value(path, xr.Dataset(), "skipped", {**attrs, "skip_reason": skip})
        return done_info(path, t0, title=var.title, skipped=skip, **vers)
    ds, kind, png, plain = made
    write_value(path, ds, kind, attrs, png)
    info = {"title": var.title, "units": var.units, "kind": kind}
    if kind in ("number", "string", "bool"):
        info["value"] = plain
    elif kind != "dataset":
        info["shape"] = str(tuple(ds["value"].shape))
    if png is not None:
        info.update(png=png, png_path=str(path.with_suffix(".png")))
    return done_info(path, t0, **info, **vers)


def _maker(var: Variable):
    """The make function of one variable's asset: :func:`make_variable` for it (its code is followed for the version)."""
    def make(cfg: BeamtimeConfig, key: str) -> dict:
        return make_variable(cfg, var, key)

    make.__wrapped__ = make_variable
    make.__name__ = make.__qualname__ = f"make_variable[{var.name}]"  # no module attribute has this name
    return make


# --- loading the beamtime's file --------------------------------------------------------------------

_loaded: dict[str, Any] = {"key": None, "variables": []}


def _user_variables() -> dict[str, Variable]:
    return {v.name: v for v in _loaded["variables"]}


def _import(path: Path):
    """Import the variables file as module ``xfel_variables_<its name>``: the same in every process and for a copy
    of the beamtime (the module's name is part of the code versions)."""
    name = f"xfel_variables_{path.stem}"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # its functions' source is found by their module's name
    try:
        spec.loader.exec_module(module)
    except SyntaxError as e:
        sys.modules.pop(name, None)
        raise ConfigError(f"{e.filename}:{e.lineno}: SyntaxError: {e.msg}") from e
    except Exception as e:
        sys.modules.pop(name, None)
        import traceback

        frames = [f for f in traceback.extract_tb(e.__traceback__) if f.filename == str(path)]
        line = frames[-1].lineno if frames else 1
        raise ConfigError(f"{path}:{line}: the variables file does not load: {type(e).__name__}: {e}") from e
    return module


def _validate(found: list[Variable]) -> None:
    """Unknown workflows and inputs, clashes with the platform's names, cycles: errors naming file and line."""
    names = {v.name: v for v in found}
    platform = {a.name: a for w in model.workflows() if w.name not in (VARIABLES, RUN_TABLES) for a in w.assets}
    for v in found:
        if v.workflow not in WORKFLOWS:
            raise ConfigError(f"{v.where}: variable {v.name}: workflow {v.workflow!r} is not one of {list(WORKFLOWS)}")
        if v.name in platform or v.name in {s.name for s in model.sources()}:
            raise ConfigError(f"{v.where}: variable {v.name} has the name of a platform asset; rename it")
        part = RUNS[v.workflow].partitioning
        for p in v.inputs:
            if p in (RAW_INPUT, *META_INPUTS):
                continue
            if p in names:
                if names[p].workflow != v.workflow:
                    raise ConfigError(f"{v.where}: variable {v.name} ({v.workflow}) reads {p}, a variable of "
                                      f"{names[p].workflow} runs")
                continue
            if p in platform and platform[p].partitioning is part:
                continue
            known = sorted(a for a, s in platform.items() if s.partitioning is part)
            raise ConfigError(f"{v.where}: variable {v.name}: unknown input {p!r}; a variable of {v.workflow} runs "
                              f"reads {RAW_INPUT!r} (the raw data), {', '.join(META_INPUTS)}, the assets "
                              f"{', '.join(known)} or another variable")
    state: dict[str, int] = {}

    def visit(v: Variable, chain: list[str]) -> None:
        if state.get(v.name) == 2:
            return
        if state.get(v.name) == 1:
            cycle = chain[chain.index(v.name):] + [v.name]
            raise ConfigError(f"{v.where}: variables read each other in a cycle: {' -> '.join(cycle)}")
        state[v.name] = 1
        for p in v.inputs:
            if p in names:
                visit(names[p], chain + [v.name])
        state[v.name] = 2

    for v in found:
        visit(v, [])


def variable_spec(var: Variable) -> AssetSpec:
    """The model asset of one variable."""
    runs = RUNS[var.workflow]
    inputs = ([Input(runs.raw_source, as_="raw")] if RAW_INPUT in var.inputs else []) + \
        [Input(p) for p in var.inputs if p not in (RAW_INPUT, *META_INPUTS)]
    kinds = ("python", "hdf5")
    return AssetSpec(var.name, runs.partitioning, _maker(var), lambda cfg, key, v=var: output_path(cfg, v, key),
                     inputs=tuple(inputs), code=(var.func,), kinds=kinds, workflow=VARIABLES, job=runs.job,
                     enabled=lambda cfg, w=var.workflow: _workflow_enabled(cfg, w), refresh=True,
                     description=f"{var.title}" + (f" ({var.units})" if var.units else "") +
                                 (f": {var.description}" if var.description else "") +
                                 f" [user variable, {var.where}]")


def _workflow_enabled(cfg: BeamtimeConfig, workflow: str) -> bool:
    return {"euxfel": cfg.has_dssc, "events": cfg.events is not None, "insitu": cfg.insitu is not None}[workflow]


def load(cfg: BeamtimeConfig | None) -> None:
    """Register the beamtime's variables and the run tables (None: take them out again)."""
    global LOAD_ERROR
    from ..lineage import code

    if cfg is None:
        model.unregister(VARIABLES)
        model.unregister(RUN_TABLES)
        _loaded.update(key=None, variables=[])
        LOAD_ERROR = None
        return
    path = Path(cfg.variables).resolve() if cfg.variables else None
    stamp = (str(path), path.stat().st_mtime_ns if path and path.exists() else None, str(cfg.source_file))
    if stamp == _loaded["key"]:
        return
    model.unregister(VARIABLES)
    model.unregister(RUN_TABLES)
    LOAD_ERROR, found = None, []
    if path is not None:
        try:
            if not path.is_file():
                raise ConfigError(f"{cfg.source_file}: variables: {path} does not exist")
            code.forget()
            versions.code_version.cache_clear()
            module = _import(path)
            found = variables_of(module)
            _validate(found)
        except ConfigError as e:
            LOAD_ERROR, found = str(e), []
    _loaded.update(key=stamp, variables=found)
    if found:
        jobs = [Job(RUNS[w].job, f"The user variables of one {w} run.", stage=w)
                for w in WORKFLOWS if any(v.workflow == w for v in found)]
        model.register(Workflow(VARIABLES, "The beamtime's own per-run variables (its variables file)",
                                assets=[variable_spec(v) for v in found], jobs=jobs))
    model.register(run_tables(found, LOAD_ERROR))


def variables() -> list[Variable]:
    """The variables of the beamtime loaded last (none if its file did not load)."""
    return list(_loaded["variables"])


# --- the run tables ---------------------------------------------------------------------------------

NOTES_SOURCE = "run_notes"


def run_keys(cfg: BeamtimeConfig, workflow: str) -> list[str]:
    return RUNS[workflow].partitioning.keys(cfg, Scope())


def _table_reads(table: runtable.Table, found: list[Variable]) -> list[str]:
    """The per-run assets and the variables a run table reads."""
    return [*table.reads, *(v.name for v in found if v.workflow == table.workflow)]


def _not_loaded(**_: Any) -> None:
    raise ConfigError(f"the variables file does not load: {LOAD_ERROR}")


def saved_variables(cfg: BeamtimeConfig, workflow: str) -> list[Variable]:
    """The variables whose values are on disk for this workflow's runs, described by their files' attributes.

    While the variables file does not load (a syntax error being mended), the run table keeps their columns
    with the values last computed, under the error shown at the top of the page."""
    seen: dict[str, Variable] = {}
    for key in run_keys(cfg, workflow):
        for path in sorted((RUNS[workflow].output_dir(cfg, key) / "variables").glob("*.h5")):
            if path.stem in seen:
                continue
            a = read_attrs(path)
            if a.get("variable") == path.stem:
                tags = a.get("tags", [])
                seen[path.stem] = Variable(path.stem, _not_loaded, str(a.get("title", path.stem)), str(a.get("units", "")),
                                           str(a.get("description", "")), workflow,
                                           tuple(str(t) for t in np.atleast_1d(tags)) if len(np.atleast_1d(tags)) else ())
    return list(seen.values())


def _table_maker(table: runtable.Table, found: list[Variable]):
    """The make function of one run table: :func:`xfel_core.runtable.make_run_table` on the workflow's runs now."""
    def make(cfg: BeamtimeConfig) -> dict:
        shown = found if LOAD_ERROR is None else saved_variables(cfg, table.workflow)
        columns = [(v, lambda key, v=v: output_path(cfg, v, key)) for v in shown if v.workflow == table.workflow]
        return runtable.make_run_table(cfg, table, run_keys(cfg, table.workflow), columns, LOAD_ERROR)

    make.__wrapped__ = runtable.make_run_table
    make.__name__ = make.__qualname__ = f"make_run_table[{table.name}]"
    return make


def _every_run(workflow: str, name: str):
    """The fan-in of a run table's input ``name``: every run's partition."""
    return lambda cfg, key: {f"{name}:{run}": run for run in run_keys(cfg, workflow)}


def run_tables(found: list[Variable], load_error: str | None = None) -> Workflow:
    """The run tables' workflow for a beamtime with these variables (one table per workflow); a variables file
    that does not load is said in each table's description (the web UI shows it on the asset)."""
    broken = f" The variables file does not load now (the tables keep the values made before): {load_error}" \
        if load_error else ""
    tables = runtable.TABLES
    return Workflow(RUN_TABLES, "The run tables: one row per run, with the user variables and the notes", sources=[
        Source(NOTES_SOURCE, BEAMTIME, notes_version, "The notes on runs (xfel-assets note); version: a hash of the "
               "notes store."),
    ], assets=[
        AssetSpec(t.name, BEAMTIME, _table_maker(t, found), lambda cfg, key, t=t: runtable.output_path(cfg, t.name),
                  inputs=(*(Input(n, fan_in=_every_run(t.workflow, n)) for n in _table_reads(t, found)),
                          Input(NOTES_SOURCE, as_="notes")),
                  kinds=("parquet", "csv", "html"), overview=True, refresh=True, job=f"{t.name}_job",
                  enabled=lambda cfg, w=t.workflow: _workflow_enabled(cfg, w),
                  description=f"One row per {t.key_column} of the {t.workflow} workflow: the platform's summary, "
                              "every user variable and the notes (Parquet, CSV, Excel and a sortable HTML page)." + broken)
        for t in tables
    ], jobs=[Job(f"{t.name}_job", f"Write the {t.name}.", stage="tables") for t in tables])


def load_error() -> str | None:
    """The error of the beamtime's variables file as loaded last, ``file:line: what``; None if it loaded."""
    return LOAD_ERROR


model.on_load_files(load)
