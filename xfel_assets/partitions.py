"""Partitions: `run` (dynamic, added by the sensor), `module` (static, from the config), and both."""

from __future__ import annotations

import warnings

import dagster as dg

from xfel_core.config import BeamtimeConfig, module_key, parse_run_key

from .resources import config_at_load

RUNS_PARTITION_SET = "runs"


def _configured_module_keys() -> list[str]:
    """Module keys from the beamtime config; all 16 DSSC modules if the config does not exist yet."""
    cfg = config_at_load()
    return cfg.module_keys if cfg is not None else [module_key(m) for m in range(16)]


run_partitions = dg.DynamicPartitionsDefinition(name=RUNS_PARTITION_SET)
module_partitions = dg.StaticPartitionsDefinition(_configured_module_keys())
run_module_partitions = dg.MultiPartitionsDefinition({"run": run_partitions, "module": module_partitions})

with warnings.catch_warnings():
    warnings.simplefilter("ignore", dg.BetaWarning)  # stable in use since Dagster 1.5; only labelled beta
    #: A run x module asset depends on the run-partitioned assets of its run ...
    by_run = dg.MultiToSingleDimensionPartitionMapping(partition_dimension_name="run")
    #: ... and on the module-partitioned assets (the dark) of its module.
    by_module = dg.MultiToSingleDimensionPartitionMapping(partition_dimension_name="module")


def module_step_deps(*per_module: str) -> list[dg.AssetDep]:
    """Dependencies of a run x module asset: its run's raw_run, scan_variable and framemask, and
    the per-module assets named (dark, gain_map) of its module."""
    return ([dg.AssetDep(a, partition_mapping=by_run) for a in ("raw_run", "scan_variable", "framemask")]
            + [dg.AssetDep(a, partition_mapping=by_module) for a in per_module])


def run_module_key(run: str, module: str) -> dg.MultiPartitionKey:
    return dg.MultiPartitionKey({"run": run, "module": module})


def split_run_module_key(key: str | dg.MultiPartitionKey) -> tuple[str, int]:
    """(run, module number) of a run x module partition key."""
    if not isinstance(key, dg.MultiPartitionKey):
        key = run_module_partitions.get_partition_key_from_str(key)
    dims = key.keys_by_dimension
    return parse_run_key(dims["run"])[1], int(dims["module"])


def check_modules_match(cfg: BeamtimeConfig) -> None:
    """The config's modules must be the module partitions the definitions were loaded with."""
    if cfg.module_keys != module_partitions.get_partition_keys():
        raise ValueError(
            f"config {cfg.source_file} lists modules {cfg.module_keys}, but the Dagster definitions "
            f"were loaded with {module_partitions.get_partition_keys()}; reload the code location"
        )


MEASUREMENTS_PARTITION_SET = "insitu_measurements"
SAMPLES_PARTITION_SET = "insitu_samples"
#: In-situ measurements, ``<sample>/<measurement folder>`` (added by the in-situ sensor).
measurement_partitions = dg.DynamicPartitionsDefinition(name=MEASUREMENTS_PARTITION_SET)
#: In-situ samples (added by the in-situ sensor).
sample_partitions = dg.DynamicPartitionsDefinition(name=SAMPLES_PARTITION_SET)

EVENT_RUNS_PARTITION_SET = "event_runs"
#: Runs of per-event files (PAL-XFEL, generic), ``r0039`` (added by the event-run sensor).
event_run_partitions = dg.DynamicPartitionsDefinition(name=EVENT_RUNS_PARTITION_SET)
