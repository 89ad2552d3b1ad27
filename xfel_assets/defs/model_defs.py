"""The Dagster definitions built from the workflow model (xfel_core.lineage.model): partitions, assets' specs, sources.

Each asset module keeps only what a scientist sees in the web UI (its description and metadata);
its partitions, dependencies and their partition mappings, code version, group (its workflow),
kinds, pool, retries and checks come from its declaration in ``xfel_core/workflows/``.
"""

from __future__ import annotations

import sys
import warnings
from collections.abc import Callable
from functools import cache

import dagster as dg

from xfel_core.config import BeamtimeConfig
from xfel_core.lineage import model, versions
from xfel_core.lineage.model import BEAMTIME, Partitioning, Source

from xfel_assets.defs.beamtime import BeamtimeResource, config_at_load
from xfel_assets.defs.steps import MODULE_POOL, SLURM_POOL, retry_policy, run_science
from xfel_assets.runtime.dagster_names import DATA_VERSION_TAG

#: The tag of the runs of an `xfel-assets backfill` (value "cli").
BACKFILL_TAG = "xfel/backfill"
#: The pool of each of the model's pool names.
POOLS = {"module": MODULE_POOL}


@cache
def partitions_def(p: Partitioning) -> dg.PartitionsDefinition | None:
    """The Dagster partitions of a partitioning: dynamic (added by the sensors), static (from the config
    when the definitions load), multi, or None (unpartitioned)."""
    if p is BEAMTIME:
        return None
    if p.dims:
        return dg.MultiPartitionsDefinition({d.name: partitions_def(d) for d in p.dims})
    if p.dynamic:
        return dg.DynamicPartitionsDefinition(name=p.dynamic)
    cfg = config_at_load()
    keys = p.keys(cfg, model.Scope()) if cfg is not None else []
    # Module keys need a config; without one (the definitions loaded before a beamtime exists) all 16 DSSC modules.
    return dg.StaticPartitionsDefinition(keys or [f"{m:02d}" for m in range(16)])


def partition_mapping(down: Partitioning, up: Partitioning) -> dg.PartitionMapping | None:
    """How a partition of ``down`` maps to those of its input partitioned by ``up``."""
    if up is BEAMTIME or up is down:
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", dg.BetaWarning)  # stable in use since Dagster 1.5; only labelled beta
        if up in down.dims:  # a run x module partition reads its run's (its module's) partition
            return dg.MultiToSingleDimensionPartitionMapping(partition_dimension_name=up.name)
        if down in up.dims:  # a run reads all its modules' partitions
            return dg.MultiToSingleDimensionPartitionMapping(partition_dimension_name=down.name)
    # A sample reads its measurements (found in its folder): Dagster cannot map one to the other.
    return dg.AllPartitionMapping()


def pool_of(spec: model.AssetSpec) -> str | None:
    """The asset's concurrency pool: the SLURM jobs' in SLURM mode (the config when the definitions load), else its own."""
    cfg = config_at_load()
    if spec.slurm and cfg is not None and cfg.compute == "slurm":
        return SLURM_POOL
    return POOLS.get(spec.pool) if spec.pool else None


def model_asset(name: str, **kwargs) -> Callable:
    """``@dg.asset`` for the model's asset ``name``, everything but its body and description from the model."""
    spec = model.asset(name)
    return dg.asset(
        name=name,
        partitions_def=partitions_def(spec.partitioning),
        deps=[dg.AssetDep(i.name, partition_mapping=partition_mapping(spec.partitioning,
                                                                      model.node(i.name).partitioning))
              for i in spec.inputs],
        code_version=versions.code_version(name),
        group_name=spec.workflow,
        kinds=set(spec.kinds),
        pool=pool_of(spec),
        retry_policy=retry_policy(),
        automation_condition=refresh_condition(spec),
        check_specs=[dg.AssetCheckSpec(c.name, asset=name, blocking=c.blocking, description=c.description)
                     for c in spec.checks],
        **kwargs,
    )


def refresh_condition(spec: model.AssetSpec) -> dg.AutomationCondition | None:
    """When Dagster's automation makes the asset again (the variables and run tables, ``refresh`` in the model).

    A variable: a partition whose inputs were all made and one of them changed (Dagster's eager).
    A run table: when an input's partition was made (or a note added) after the table was last made and
    after it was last requested, at a tick that saw no new update and with none of its inputs being
    made; runs still missing outputs do not hold it back (eager would wait for every run's every input).
    The quiet tick keeps a table from running beside the variables its inputs' update requested (their
    requests are not visible across partitionings within one tick: the table would be made without
    their values); the updates' and the request's times, not the ticks that saw them, decide whether a
    change is still to be shown. A table whose run failed waits for the next change.
    While runs keep arriving there is no quiet tick (some run's steps are always in progress): then a
    change waits at most until the next minute (``TABLE_AT_LEAST``); the variables still being made
    change the inputs again, and the table is made again with them.
    """
    if not spec.refresh:
        return None
    if spec.partitioning is not BEAMTIME:
        return dg.AutomationCondition.eager()
    # newly_updated directly under the deps operator and since: only so does Dagster keep the updates' times.
    changed = dg.AutomationCondition.any_deps_match(dg.AutomationCondition.newly_updated())
    quiet = ~changed & ~dg.AutomationCondition.any_deps_in_progress()
    return (changed.since(dg.AutomationCondition.newly_updated()) & changed.since(dg.AutomationCondition.newly_requested())
            & ~dg.AutomationCondition.in_progress() & (quiet | dg.AutomationCondition.cron_tick_passed(TABLE_AT_LEAST))
            ).with_label("after its inputs change")


#: A run table shows its inputs' changes at least this often (cron), even while runs keep being made.
TABLE_AT_LEAST = "* * * * *"


def make(context: dg.AssetExecutionContext, cfg: BeamtimeConfig, *extra, compute=None) -> dict:
    """Call the asset's xfel_core make function on this partition (as a SLURM job through ``compute`` if it says so)."""
    spec = model.asset(context.asset_key.path[-1])
    args = (*spec.partitioning.args(str(context.partition_key)), *extra) if context.has_partition_key else extra
    # The function as its module has it now (a test or a debugging session may have replaced it).
    fn = getattr(sys.modules[spec.make.__module__], spec.make.__name__, spec.make)
    if compute is not None:
        return compute.run(context, cfg, fn, *args)
    return run_science(fn, cfg, *args)


#: Keys of a make function's result that every materialization shows anyway (common and version metadata).
BOOKKEEPING = {"path", "size_bytes", "seconds", "lineage_version", "code_version", "input_versions", "config_versions"}


def generic_asset(name: str) -> dg.AssetsDefinition:
    """The Dagster asset of a model asset without a module of its own: its make function's numbers and strings as metadata."""
    from xfel_assets.defs.metadata import materialized, scalars

    spec = model.asset(name)

    # No annotations: this module's are strings (from __future__), which Dagster cannot check.
    @model_asset(name, description=spec.description or None)
    def _asset(context, beamtime: BeamtimeResource):
        info = make(context, beamtime.load())
        simple = [k for k, v in info.items() if isinstance(v, (int, float, str, bool)) and k not in BOOKKEEPING]
        return materialized(name, info, {**scalars(info, *simple), **rich_metadata(info)})

    return _asset


def rich_metadata(info: dict) -> dict:
    """A figure (PNG bytes under ``png``) inline, a table (a DataFrame under ``latest``), an HTML page's path."""
    import pandas as pd

    from xfel_assets.defs.metadata import png_md, table_from_frame

    md = {}
    if isinstance(info.get("png"), bytes):
        md["figure"] = png_md(info["png"], str(info.get("title", "figure")))
    if isinstance(info.get("latest"), pd.DataFrame):
        md["latest rows"] = table_from_frame(info["latest"])
    if info.get("html"):
        md["html"] = dg.MetadataValue.path(str(info["html"]))
    return md


def source_keys(instance: dg.DagsterInstance, cfg: BeamtimeConfig, p: Partitioning) -> list[str | None]:
    """The partition keys of a source now: a dynamic set's from the instance, else the config's."""
    if p.dims:
        raise ValueError(f"sources partitioned by {p.name} are not supported")
    if p.dynamic:
        return instance.get_dynamic_partitions(p.dynamic)
    return p.keys(cfg, model.Scope())


def source_versions(instance: dg.DagsterInstance, cfg: BeamtimeConfig) -> dict[str, dict[str | None, str]]:
    """The current data version of every partition of every configured source."""
    return {s.name: {k: s.version(cfg, k) for k in source_keys(instance, cfg, s.partitioning)}
            for s in model.sources() if s.enabled(cfg)}


def observation(asset: str, partition: str | None, version: str) -> dg.AssetObservation:
    """An observation of a source partition with its data version (as the observable source asset records it)."""
    return dg.AssetObservation(asset_key=asset, partition=partition, tags={DATA_VERSION_TAG: version})


def observations(cfg: BeamtimeConfig, workflow: str, new_keys: dict[str, list[str]]) -> list[dg.AssetObservation]:
    """Observations of a workflow's sources: every partition of its static and unpartitioned ones, and
    ``new_keys`` (by dynamic partition set) of its dynamic ones.

    A sensor records them with the runs it requests, so that each materialization records the
    versions of its sources: one made before any observation of its source would never show stale.
    """
    out = []
    for s in model.sources():
        if s.workflow == workflow and s.enabled(cfg):
            p = s.partitioning
            keys = new_keys.get(p.dynamic, []) if p.dynamic else p.keys(cfg, model.Scope())
            out += [observation(s.name, k, s.version(cfg, k)) for k in keys]
    return out


def _observable(src: Source) -> dg.SourceAsset:
    def observe(context, beamtime: BeamtimeResource):
        cfg = beamtime.load()
        if src.partitioning is BEAMTIME:
            return dg.DataVersion(src.version(cfg, None) if src.enabled(cfg) else "not-configured")
        keys = source_keys(context.instance, cfg, src.partitioning) if src.enabled(cfg) else []
        return dg.DataVersionsByPartition({k: dg.DataVersion(src.version(cfg, k)) for k in keys})

    observe.__doc__ = src.description
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", dg.BetaWarning)  # observable source assets: beta label since 1.5
        return dg.observable_source_asset(name=src.name, partitions_def=partitions_def(src.partitioning),
                                          group_name="sources", description=src.description)(observe)


def observed_sources() -> list[dg.SourceAsset]:
    """Every source of the model as an observable source asset: new data versions show their dependents stale."""
    return [_observable(s) for s in model.sources()]
