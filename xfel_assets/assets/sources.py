"""Observed source data: the raw run files, the dark run's files, the gain / flat-field map, the in-situ TIFFs, the event files.

Dagster does not make these; it observes them. Their data versions come from xfel_core.versions
(file names, sizes and modification times; the gain map's values), so a rewritten raw run, a new
dark run number or a new gain file shows every dependent partition as stale in the web UI.
"""

import warnings

import dagster as dg

from xfel_core import versions
from xfel_core.config import module_key

from ..partitions import (
    EVENT_RUNS_PARTITION_SET, MEASUREMENTS_PARTITION_SET, RUNS_PARTITION_SET, event_run_partitions,
    measurement_partitions, module_partitions, run_partitions,
)
from ..resources import BeamtimeResource

with warnings.catch_warnings():
    warnings.simplefilter("ignore", dg.BetaWarning)  # observable source assets: beta label since 1.5

    @dg.observable_source_asset(partitions_def=run_partitions, group_name="sources")
    def raw_run_files(context, beamtime: BeamtimeResource) -> dg.DataVersionsByPartition:
        """The raw files of each run (European XFEL run folder); version: file names, sizes, modification times."""
        cfg = beamtime.load()
        runs = context.instance.get_dynamic_partitions(RUNS_PARTITION_SET)
        return dg.DataVersionsByPartition({r: dg.DataVersion(versions.raw_run_version(cfg, r)) for r in runs})

    @dg.observable_source_asset(partitions_def=module_partitions, group_name="sources")
    def dark_run_files(beamtime: BeamtimeResource) -> dg.DataVersionsByPartition:
        """Each module's files in the configured dark run; version: the run number and the files."""
        cfg = beamtime.load()
        return dg.DataVersionsByPartition(
            {module_key(m): dg.DataVersion(versions.dark_source_version(cfg, m)) for m in cfg.detector.modules})

    @dg.observable_source_asset(partitions_def=module_partitions, group_name="sources")
    def gain_map(beamtime: BeamtimeResource) -> dg.DataVersionsByPartition:
        """Each module's gain / flat-field map from the configured file; version: a hash of its values."""
        cfg = beamtime.load()
        return dg.DataVersionsByPartition(
            {module_key(m): dg.DataVersion(versions.gain_version(cfg, m)) for m in cfg.detector.modules})

    @dg.observable_source_asset(partitions_def=measurement_partitions, group_name="sources")
    def insitu_files(context, beamtime: BeamtimeResource) -> dg.DataVersionsByPartition:
        """Each in-situ measurement's TIFFs and its sample's flat-field TIFFs; version: names, sizes, modification times."""
        cfg = beamtime.load()
        keys = context.instance.get_dynamic_partitions(MEASUREMENTS_PARTITION_SET) if cfg.insitu else []
        return dg.DataVersionsByPartition({k: dg.DataVersion(versions.insitu_source_version(cfg, k)) for k in keys})

    @dg.observable_source_asset(partitions_def=event_run_partitions, group_name="sources")
    def event_run_files(context, beamtime: BeamtimeResource) -> dg.DataVersionsByPartition:
        """Each event run's raw files (and the dark run's); version: names, sizes, modification times."""
        cfg = beamtime.load()
        runs = context.instance.get_dynamic_partitions(EVENT_RUNS_PARTITION_SET) if cfg.events else []
        return dg.DataVersionsByPartition({r: dg.DataVersion(versions.event_source_version(cfg, r)) for r in runs})
