"""Per-event files (PAL-XFEL, generic HDF5): per run the per-event small data and the binned cube."""

from __future__ import annotations

from ..config import BeamtimeConfig, run_key
from ..events import pipeline
from ..hashing import digest, files_fingerprint
from ..lineage.model import BEAMTIME, AssetSpec, Input, Job, Partitioning, Scope, Source, Workflow, register
from ..lineage.versions import NO_DARK
from ..readers.events import event_runs, run_files
from ..rois import rois_version, section_rois


def event_run_keys(cfg: BeamtimeConfig, scope: Scope) -> list[str]:
    """The event runs of the raw root (the dark run and ignored runs left out), or the scope's."""
    found = event_runs(cfg.events)
    return found if scope.event_runs is None else [r for r in scope.event_runs if r in found]


EVENT_RUN = Partitioning("event_run", event_run_keys, dynamic="event_runs")


def has_events(cfg: BeamtimeConfig) -> bool:
    return cfg.events is not None


def raw_version(cfg: BeamtimeConfig, run: str) -> str:
    """Source version of an event run: its raw files' names, sizes and modification times."""
    return files_fingerprint(run_files(cfg.require_events(), run))


def dark_version(cfg: BeamtimeConfig, key: None) -> str:
    """Source version of the event files' dark run: its number and its files (a new dark run is new provenance)."""
    ev = cfg.require_events()
    if ev.dark_run is None:
        return NO_DARK
    return digest(run_key(ev.dark_run), files_fingerprint(run_files(ev, run_key(ev.dark_run))))


def rois_now(cfg: BeamtimeConfig, key: None) -> str:
    return rois_version(section_rois(cfg.require_events()))


def mask_version(cfg: BeamtimeConfig, key: None) -> str:
    return files_fingerprint([cfg.require_events().geometry.mask_file])


def has_mask(cfg: BeamtimeConfig) -> bool:
    return cfg.events is not None and cfg.events.geometry.mask_file is not None


def _output(name: str):
    return lambda cfg, run: pipeline.output_path(cfg, run, name)


WORKFLOW = register(Workflow("events", "Per-event files (PAL-XFEL, generic HDF5): small data and the binned cube", sources=[
    Source("event_run_files", EVENT_RUN, raw_version, "Each event run's raw files; version: names, sizes, "
           "modification times.", enabled=has_events),
    Source("event_dark_files", BEAMTIME, dark_version, "The event files' dark run (events.dark_run); version: its "
           "number and its files.", enabled=has_events),
    Source("event_rois", BEAMTIME, rois_now, "The event files' ROIs (events.rois or events.roi_file); version: a hash "
           "of the ROIs.", enabled=has_events),
    Source("event_mask", BEAMTIME, mask_version, "The detector mask file (events.geometry.mask_file); version: its "
           "name, size and modification time.", enabled=has_mask),
], assets=[
    AssetSpec("event_smalldata", EVENT_RUN, pipeline.make_event_smalldata, _output(pipeline.SMALLDATA_FILE),
              inputs=(Input("event_run_files", as_="raw"), Input("event_dark_files", as_="dark"),
                      Input("event_rois", as_="rois"), Input("event_mask", as_="mask", when=has_mask)),
              config={"events": {"layout", "pal", "generic", "dark_run", "geometry", "anomalies", "normalisation",
                                 "binning", "timing_tool_scale", "scan_units"}},
              kinds=("hdf5", "xarray"), slurm=True, enabled=has_events, job="event_run_job"),
    AssetSpec("event_cube", EVENT_RUN, pipeline.make_event_cube, _output(pipeline.CUBE_FILE),
              inputs=(Input("event_smalldata"),),
              config={"events": {"dark_run", "normalisation", "binning", "scan_units"}},
              kinds=("hdf5", "xarray"), enabled=has_events, job="event_run_job"),
], jobs=[
    Job("event_run_job", "Per-event small data and the binned cube of one run of event files.", stage="events"),
]))
