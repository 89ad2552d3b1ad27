"""The workflow model: every observed source and every asset of every workflow, declared once.

A workflow module (``xfel_core/workflows/<name>.py``) declares its partitionings, sources and
assets with the classes here and registers them. Everything else is derived from the model: the
code and configuration versions (:mod:`.versions`), the staleness walk and the backfill's
selection (:mod:`.staleness`), the blocking checks (:mod:`xfel_core.quality`) and, in
``xfel_assets``, the Dagster assets, observed sources, jobs and sensors' selections.

Partition keys are strings spelled as Dagster spells them: a run ``r0002``, a module ``03``, a run x
module ``03|r0002`` (Dagster joins the dimensions in the order of their names), a measurement
``GaN01/GaN01_growth01``, a sample ``GaN01``; an unpartitioned asset or source has the key ``None``.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..config import BeamtimeConfig

#: The workflow modules, each registering its workflow when imported (see :func:`workflows`).
WORKFLOW_MODULES = ["xfel_core.workflows.euxfel", "xfel_core.workflows.insitu", "xfel_core.workflows.events",
                    "xfel_core.workflows.variables"]


@dataclass(frozen=True)
class Scope:
    """Which partitions of a beamtime a command covers; None: every one found on disk."""

    runs: list[str] | None = None
    samples: list[str] | None = None
    event_runs: list[str] | None = None


@dataclass(frozen=True)
class Partitioning:
    """How an asset is partitioned: its keys in a beamtime and the make function's arguments per key.

    ``dynamic``: the Dagster dynamic partition set the sensors add keys to; ``dims``: the
    partitionings of a multi-partitioning (Dagster's dimension names are theirs).
    """

    name: str
    keys: Callable[[BeamtimeConfig, Scope], list[str]]
    args: Callable[[str], tuple] = lambda key: (key,)
    dynamic: str | None = None
    dims: tuple[Partitioning, ...] = ()

    def dynamic_keys(self, key: str) -> dict[str, str]:
        """{dynamic partition set: its key} that a partition key names (``03|r0002``: ``{"runs": "r0002"}``)."""
        return {d.dynamic: (self.dim_key(key, d.name) if self.dims else key) for d in self.dims or (self,) if d.dynamic}

    def dim_key(self, key: str, dim: str) -> str:
        """The component of a multi-partition key along one dimension (``03|r0002``, run: ``r0002``)."""
        names = sorted(d.name for d in self.dims)
        return key.split("|")[names.index(dim)]


def _beamtime_keys(cfg: BeamtimeConfig, scope: Scope) -> list[None]:
    return [None]


#: Not partitioned: one output (or one source version) for the whole beamtime.
BEAMTIME = Partitioning("beamtime", _beamtime_keys, lambda key: ())


@dataclass(frozen=True)
class Input:
    """An input of an asset: another asset or a source, and how its partitions map.

    ``as_``: its name in the output's recorded input versions (default: its own name).
    ``fan_in``: for a key, ``{recorded name: upstream key}`` when one partition reads several
    (a run's modules, a sample's measurements); without it the upstream key is the same key, the
    key's component along the upstream's partitioning, or None for an unpartitioned upstream.
    ``when``: the input exists only for beamtimes where this holds (a dark run configured); else
    ``otherwise`` is recorded in its place (None: nothing is recorded).
    """

    name: str
    as_: str | None = None
    fan_in: Callable[[BeamtimeConfig, str], dict[str, str]] | None = None
    when: Callable[[BeamtimeConfig], bool] | None = None
    otherwise: str | None = None

    @property
    def recorded_name(self) -> str:
        return self.as_ or self.name


@dataclass(frozen=True)
class Check:
    """A data-quality check an asset records on its output; a blocking one stops its dependents."""

    name: str
    description: str
    blocking: bool = False


@dataclass(frozen=True)
class Source:
    """Data from outside the platform (raw files, a calibration run, ROI files): observed, never made.

    ``version(cfg, key)`` is its data version now: names, sizes and times of files, or a hash of
    their content.
    """

    name: str
    partitioning: Partitioning
    version: Callable[[BeamtimeConfig, str | None], str]
    description: str
    enabled: Callable[[BeamtimeConfig], bool] = lambda cfg: True
    workflow: str = ""
    #: The job that observes it (a name in its workflow's ``jobs``), or none.
    job: str = ""


@dataclass(frozen=True)
class Job:
    """A Dagster asset job: assets (or sources) of one partitioning that one Dagster run makes (observes) together.

    ``stage``: the step of the workflow's processing of a run that it belongs to; a workflow's
    stages run in dependency order (:func:`stages`), and the new-run chain tags its Dagster runs
    with the stage's name. Observation jobs have no stage.
    """

    name: str
    description: str
    stage: str = ""


@dataclass(frozen=True)
class AssetSpec:
    """One asset: what it is made from, by which xfel_core function, reading which configuration.

    ``make(cfg, *partitioning.args(key), ...)`` writes the output at ``output(cfg, key)`` and
    returns a dict of what a scientist checks first. ``config``: the configuration keys it reads
    beyond its inputs (a dict names keys inside a section); their values are part of its version.
    ``pool``: the concurrency pool of its steps (``module``: whole detector modules), ``slurm``:
    it runs as a SLURM job with ``compute: slurm``. ``enabled``: whether a beamtime has it (its
    config section is there).
    """

    name: str
    partitioning: Partitioning
    make: Callable[..., dict]
    output: Callable[[BeamtimeConfig, str | None], Path]
    inputs: tuple[Input, ...] = ()
    config: tuple[str, ...] | dict[str, Any] = ()
    checks: tuple[Check, ...] = ()
    kinds: tuple[str, ...] = ()
    pool: str | None = None
    slurm: bool = False
    enabled: Callable[[BeamtimeConfig], bool] = lambda cfg: True
    workflow: str = ""
    #: The job (a name in its workflow's ``jobs``) whose Dagster runs make it; none: no job of ours (the
    #: web UI and backfills still make it).
    job: str = ""
    #: What it is, for the web UI, when no module in xfel_assets/defs/assets/ describes it (its metadata: the make
    #: function's numbers and strings).
    description: str = ""
    #: More functions whose code is part of its code version (a user variable's function).
    code: tuple[Callable, ...] = ()
    #: An overview of other outputs (a run table): made again after every change of them, by Dagster's
    #: automation, ``materialize`` and every backfill, and not listed by ``xfel-assets stale``.
    overview: bool = False
    #: Dagster's automation makes a partition again whenever one of its inputs changes (with the daemon running).
    refresh: bool = False

    @property
    def blocking_checks(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.checks if c.blocking)


@dataclass
class Workflow:
    """A workflow: its observed sources and its assets (in dependency order)."""

    name: str
    description: str
    sources: list[Source] = field(default_factory=list)
    assets: list[AssetSpec] = field(default_factory=list)
    jobs: list[Job] = field(default_factory=list)


_registry: dict[str, Workflow] = {}
_loaded = False
_files: dict[Path, tuple[str, set[str]]] = {}  # file: (module name, its workflows)
_index: dict[str, object] = {}  # the sorted assets and the nodes by name, made again after a registration
#: Functions that register workflows made from a beamtime's files (its variables), called by :func:`load_files`
#: with the config, and with None by :func:`unload_files`.
_file_loaders: list[Callable[[BeamtimeConfig | None], None]] = []


def on_load_files(loader: Callable[[BeamtimeConfig | None], None]) -> None:
    """Have :func:`load_files` call ``loader(cfg)`` after the workflow files (and :func:`unload_files` ``loader(None)``)."""
    if loader not in _file_loaders:
        _file_loaders.append(loader)


def register(wf: Workflow) -> Workflow:
    """Add a workflow to the model (its assets and sources named by it); returns it."""
    names = {n for w in _registry.values() if w.name != wf.name for n in node_names_of(w)}
    clash = names & set(node_names_of(wf))
    if clash:
        raise ValueError(f"workflow {wf.name}: {sorted(clash)} already declared by another workflow")
    wf.sources = [_with_workflow(s, wf.name) for s in wf.sources]
    wf.assets = [_with_workflow(a, wf.name) for a in wf.assets]
    _check_jobs(wf)
    _registry[wf.name] = wf
    _index.clear()
    return wf


def unregister(name: str) -> None:
    """Take a workflow out of the model again (a test's extra workflow)."""
    _registry.pop(name, None)
    _index.clear()


def _check_jobs(wf: Workflow) -> None:
    """Every job named by a node is declared, and each job's nodes share one partitioning (a Dagster job
    cannot mix them)."""
    declared = {j.name for j in wf.jobs}
    for n in (*wf.sources, *wf.assets):
        if n.job and n.job not in declared:
            raise ValueError(f"workflow {wf.name}: {n.name} names job {n.job!r}, not among its jobs {sorted(declared)}")
    for j in wf.jobs:
        parts = {n.partitioning.name for n in (*wf.sources, *wf.assets) if n.job == j.name}
        if len(parts) != 1:
            raise ValueError(f"workflow {wf.name}: job {j.name} has {len(parts)} partitionings {sorted(parts)}; "
                             "one job, one partitioning")
    _stage_order(wf)  # raises on a cycle


def _stage_order(wf: Workflow) -> list[str]:
    """The workflow's stages, each after every stage that makes an input of its assets (ties: declaration order)."""
    stage_of = {a.name: j.stage for j in wf.jobs if j.stage for a in wf.assets if a.job == j.name}
    names = list(dict.fromkeys(j.stage for j in wf.jobs if j.stage))
    after = {st: {stage_of[i.name] for a in wf.assets if stage_of.get(a.name) == st for i in a.inputs
                  if stage_of.get(i.name, st) != st} for st in names}
    order: list[str] = []
    while len(order) < len(names):
        ready = [st for st in names if st not in order and after[st] <= set(order)]
        if not ready:
            raise ValueError(f"workflow {wf.name}: its stages depend on each other in a cycle: {names}")
        order.append(ready[0])
    return order


def _with_workflow(node, name: str):
    from dataclasses import replace

    return node if node.workflow == name else replace(node, workflow=name)


def node_names_of(wf: Workflow) -> list[str]:
    return [s.name for s in wf.sources] + [a.name for a in wf.assets]


def load_files(cfg: BeamtimeConfig) -> None:
    """Import the beamtime's own workflow files (``workflows:`` in beamtime.yaml), once each per process."""
    from ..exceptions import ConfigError

    workflows()  # the built-in ones first: a file importing them must not count them as its own
    for path in cfg.workflows:
        path = Path(path).resolve()
        if path in _files:
            continue
        name = f"xfel_workflow_{path.stem}"  # the same in every process: it is part of the code version
        if name in sys.modules:
            raise ConfigError(f"{cfg.source_file}: workflows: {path} has the name of another workflow file "
                              f"({sys.modules[name].__file__}); rename one")
        spec = importlib.util.spec_from_file_location(name, path)
        if spec is None or not path.is_file():
            raise ConfigError(f"{cfg.source_file}: workflows: {path} is not a Python file")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # its functions' source is found by their module's name
        before = set(_registry)
        try:
            spec.loader.exec_module(module)
        except Exception as e:
            sys.modules.pop(name, None)
            for wf in set(_registry) - before:
                unregister(wf)
            raise ConfigError(f"{cfg.source_file}: workflows: {path} does not load: {type(e).__name__}: {e}") from e
        _files[path] = (name, set(_registry) - before)
    for loader in _file_loaders:
        loader(cfg)


def unload_files() -> None:
    """Take the workflows of beamtime workflow files out of the model again (a test's, before the next test)."""
    for name, workflows_of_file in _files.values():
        for wf in workflows_of_file:
            unregister(wf)
        sys.modules.pop(name, None)
    _files.clear()
    for loader in _file_loaders:
        loader(None)


def workflows() -> list[Workflow]:
    """Every registered workflow (the built-in ones imported on first use)."""
    global _loaded
    if not _loaded:
        _loaded = True
        for m in WORKFLOW_MODULES:
            importlib.import_module(m)
    return list(_registry.values())


def assets() -> list[AssetSpec]:
    """Every asset of every workflow, each after its inputs."""
    workflows()
    if "assets" not in _index:
        _index["assets"] = _sorted_assets()
    return list(_index["assets"])


def _sorted_assets() -> list[AssetSpec]:
    specs = [a for w in _registry.values() for a in w.assets]
    by_name = {a.name: a for a in specs}
    order: list[AssetSpec] = []
    seen: set[str] = set()

    def visit(a: AssetSpec) -> None:
        if a.name in seen:
            return
        seen.add(a.name)
        for i in a.inputs:
            if i.name in by_name:
                visit(by_name[i.name])
        order.append(a)

    for a in specs:
        visit(a)
    return order


def jobs(workflow: str | None = None) -> list[tuple[Job, list[str]]]:
    """Each job (of one workflow, or of all) with the names of the assets or sources it materializes or observes."""
    return [(j, [n.name for n in (*w.sources, *w.assets) if n.job == j.name])
            for w in workflows() if workflow in (None, w.name) for j in w.jobs]


def stages(workflow: str) -> list[str]:
    """A workflow's stages in dependency order."""
    return _stage_order(_workflow(workflow))


def stage_jobs(workflow: str, stage: str) -> list[tuple[Job, list[str]]]:
    """The jobs of one stage of a workflow, with their assets."""
    if stage not in stages(workflow):
        raise ValueError(f"no stage {stage!r} in workflow {workflow}: {stages(workflow)}")
    return [(j, names) for j, names in jobs(workflow) if j.stage == stage]


def _workflow(name: str) -> Workflow:
    found = {w.name: w for w in workflows()}
    if name not in found:
        raise KeyError(f"no workflow {name!r} in the model: {sorted(found)}")
    return found[name]


def sources() -> list[Source]:
    return [s for w in workflows() for s in w.sources]


def _nodes() -> dict[str, AssetSpec | Source]:
    workflows()
    if "nodes" not in _index:
        _index["nodes"] = {n.name: n for w in _registry.values() for n in (*w.sources, *w.assets)}
    return _index["nodes"]


def asset(name: str) -> AssetSpec:
    """The asset named ``name`` (KeyError naming the known ones if there is none)."""
    found = _nodes().get(name)
    if not isinstance(found, AssetSpec):
        raise KeyError(f"no asset {name!r} in the workflow model: {[a.name for a in assets()]}")
    return found


def node(name: str) -> AssetSpec | Source:
    """The asset or source named ``name``."""
    found = _nodes().get(name)
    if found is None:
        raise KeyError(f"no asset or source {name!r} in the workflow model")
    return found


def upstream_keys(cfg: BeamtimeConfig, spec: AssetSpec, inp: Input, key: str | None) -> dict[str, str | None]:
    """``{recorded name: upstream partition key}`` of one input of one partition of ``spec``."""
    if inp.fan_in is not None:
        return inp.fan_in(cfg, key)
    up = node(inp.name).partitioning
    if up is BEAMTIME:
        return {inp.recorded_name: None}
    if up is spec.partitioning:
        return {inp.recorded_name: key}
    if up in spec.partitioning.dims:
        return {inp.recorded_name: spec.partitioning.dim_key(key, up.name)}
    raise ValueError(f"{spec.name}: input {inp.name} is partitioned by {up.name}, {spec.name} by "
                     f"{spec.partitioning.name}: declare its fan_in")


def downstream(name: str) -> list[AssetSpec]:
    """The assets that read ``name`` directly."""
    return [a for a in assets() if any(i.name == name for i in a.inputs)]
