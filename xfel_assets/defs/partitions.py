"""The Dagster partitions of the workflow model's partitionings, and the run x module key's helpers."""

from __future__ import annotations

import dagster as dg

from xfel_core.config import BeamtimeConfig, parse_run_key
from xfel_core.exceptions import ConfigError
from xfel_core.workflows import euxfel, events, insitu

from xfel_assets.defs.model_defs import partitions_def

#: Runs (dynamic, added by the new-run sensor), modules (static, from the config), both.
run_partitions = partitions_def(euxfel.RUN)
module_partitions = partitions_def(euxfel.MODULE)
run_module_partitions = partitions_def(euxfel.RUN_MODULE)
#: In-situ measurements, ``<sample>/<measurement folder>``, and samples (added by the in-situ sensor).
measurement_partitions = partitions_def(insitu.MEASUREMENT)
sample_partitions = partitions_def(insitu.SAMPLE)
#: Runs of per-event files (PAL-XFEL, generic), ``r0039`` (added by the event-run sensor).
event_run_partitions = partitions_def(events.EVENT_RUN)

RUNS_PARTITION_SET = euxfel.RUN.dynamic
MEASUREMENTS_PARTITION_SET = insitu.MEASUREMENT.dynamic
SAMPLES_PARTITION_SET = insitu.SAMPLE.dynamic
EVENT_RUNS_PARTITION_SET = events.EVENT_RUN.dynamic


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
        raise ConfigError(
            f"config {cfg.source_file} lists modules {cfg.module_keys}, but the Dagster definitions "
            f"were loaded with {module_partitions.get_partition_keys()}; reload the code location"
        )
