"""Versions of code, configuration, source data and results: what made each output, as short hashes.

Three kinds of version, all short sha256 hex strings:

- **code version** of an asset: a hash of the source files of the xfel_core modules that compute
  it, so that editing the correction code changes the version of exactly the assets it computes;
- **source versions**: what comes from outside the pipeline. A raw run's files (names, sizes,
  modification times), the dark run's files of one module (and which run it is), the gain /
  flat-field map of one module (its content);
- **lineage version** of an output: a hash of its asset's code version, the parts of the config it
  reads, and the lineage or source versions of its inputs. Each output records its own lineage
  version (HDF5 attribute ``lineage_version``) and that is its Dagster data version. An output is
  stale when its recorded lineage version differs from the one its inputs have now: this walks
  the whole lineage, however many partitions an edge joins.
"""

from __future__ import annotations

import hashlib
import json
from functools import lru_cache
from pathlib import Path

from . import __version__
from .config import BeamtimeConfig, run_key
from .outputs import read_attrs
from .readers import euxfel

PACKAGE_DIR = Path(__file__).resolve().parent

#: The xfel_core source files (relative to the package) whose code computes each asset.
ASSET_CODE = {
    "raw_run": ["pipeline.py", "run_summary.py", "readers/euxfel.py"],
    "scan_variable": ["pipeline.py", "scan.py", "readers/euxfel.py"],
    "framemask": ["pipeline.py", "framemask.py", "run_summary.py", "readers/euxfel.py"],
    "dark": ["pipeline.py", "preprocess.py", "binning_kernel.py", "readers/euxfel.py", "readers/frame_map.py"],
    "preprocessed_module": ["pipeline.py", "preprocess.py", "binning_kernel.py", "gain.py", "readers/euxfel.py",
                            "readers/frame_map.py"],
    "binned_cube": ["pipeline.py", "cube.py", "preprocess.py", "previews.py"],
    "insitu_frames": ["insitu/pipeline.py", "insitu/correct.py", "insitu/tiff_reader.py", "insitu/layout.py"],
    "roi_series": ["insitu/pipeline.py", "rois.py", "insitu/plots.py"],
    "attenuation_corrected_series": ["insitu/pipeline.py", "insitu/attenuation.py", "rois.py",
                                     "insitu/plots.py"],
    "event_smalldata": ["events/pipeline.py", "events/readers.py", "events/anomalies.py", "events/azimuthal.py",
                        "events/smalldata.py", "scan.py"],
    "event_cube": ["events/pipeline.py", "events/readers.py", "events/smalldata.py", "cube.py", "binning_kernel.py", "previews.py"],
    "dssc_smalldata": ["dssc_smalldata.py", "pipeline.py", "events/azimuthal.py", "readers/euxfel.py"],
}

#: The config keys each asset reads (beyond its inputs); a dict names keys inside a section.
ASSET_CONFIG = {
    "raw_run": ["detector"],
    "scan_variable": ["scan_variable"],
    "framemask": ["framemask", "maxframes", "frame_pattern"],
    "dark": ["detector", "dark_run"],
    "preprocessed_module": ["detector", "frame_pattern", "gain_map"],
    "binned_cube": ["detector", "frame_pattern"],
    "insitu_frames": {"insitu": {"timezone", "flatfield", "median_filter", "flatfield_good_range",
                                 "background_regions"}},
    # The ROIs themselves (from the config or the ROI file) are an input of roi_series.
    "roi_series": {"insitu": {"timezone"}},
    "attenuation_corrected_series": {"insitu": {"timezone", "attenuation"}},
    # The raw files, the dark run, the ROIs and the mask are inputs of event_smalldata.
    "event_smalldata": {"events": {"layout", "pal", "generic", "dark_run", "geometry", "anomalies", "normalisation",
                                   "binning", "timing_tool_scale", "scan_units"}},
    "event_cube": {"events": {"dark_run", "normalisation", "binning", "scan_units"}},
    "dssc_smalldata": {"detector": True, "frame_pattern": True, "framemask": True,
                       "smalldata": {"geometry", "beam_centres"}},
}

NO_DARK = "no-dark"
NO_GAIN = "no-gain"


def digest(*parts: str, n: int = 16) -> str:
    """A short sha256 hex digest of strings."""
    h = hashlib.sha256()
    for p in parts:
        h.update(p.encode())
        h.update(b"\0")
    return h.hexdigest()[:n]


@lru_cache(maxsize=None)
def code_version(asset: str) -> str:
    """A hash of the package version and the source of the modules that compute ``asset``."""
    texts = [(PACKAGE_DIR / rel).read_text() for rel in ASSET_CODE[asset]]
    return digest(__version__, *ASSET_CODE[asset], *texts, n=12)


def config_version(cfg: BeamtimeConfig, asset: str) -> str:
    """A hash of the config keys ``asset`` reads."""
    keys = ASSET_CONFIG[asset]
    # Keys at their defaults are left out: a new optional key in a later release changes no version.
    data = cfg.model_dump(mode="json", include=keys if isinstance(keys, dict) else set(keys), exclude_defaults=True)
    return digest(json.dumps(data, sort_keys=True), n=12)


def files_fingerprint(files: list[Path]) -> str:
    """A hash of file names, sizes and modification times: changes when a file is rewritten or added."""
    parts = []
    for p in sorted(files):
        st = p.stat()
        parts.append(f"{p.name}:{st.st_size}:{st.st_mtime_ns}")
    return digest(*parts)


def raw_run_version(cfg: BeamtimeConfig, run: str) -> str:
    """Source version of a raw run: its folder's files."""
    run_dir = cfg.run_dir(run)
    if not run_dir.is_dir():
        return digest("missing", run)
    return files_fingerprint([p for p in run_dir.iterdir() if p.is_file()])


def dark_source_version(cfg: BeamtimeConfig, module: int) -> str:
    """Source version of a module's dark: the dark run's number and that module's raw files."""
    if cfg.dark_run is None:
        return NO_DARK
    run = run_key(cfg.dark_run)
    run_dir = cfg.run_dir(run)
    files = euxfel.files_of_aggregator(euxfel.run_files(run_dir), cfg.detector.aggregator_for(module)) \
        if run_dir.is_dir() else []
    return digest(run, files_fingerprint(files))


def gain_version(cfg: BeamtimeConfig, module: int) -> str:
    """Source version of a module's gain / flat-field map: a hash of its values (or no-gain)."""
    if cfg.gain_map is None:
        return NO_GAIN
    from .gain import read_gain_map

    return read_gain_map(cfg, module).version


def insitu_source_version(cfg: BeamtimeConfig, key: str) -> str:
    """Source version of an in-situ measurement: its TIFFs and its sample's flat-field TIFFs."""
    from .exceptions import RunDataError
    from .insitu import layout

    ins = cfg.require_insitu()
    sample, _ = layout.split_measurement_key(key)
    try:
        flat = layout.tiff_files(layout.flatfield_dir(ins, sample))
    except RunDataError:
        flat = []
    return digest(files_fingerprint(layout.tiff_files(layout.measurement_dir(ins, key))), files_fingerprint(flat))


def event_source_version(cfg: BeamtimeConfig, run: str) -> str:
    """Source version of an event run: its raw files and the dark run's."""
    from .events.readers import run_files

    ev = cfg.require_events()
    dark = run_files(ev, run_key(ev.dark_run)) if ev.dark_run is not None else []
    return digest(files_fingerprint(run_files(ev, run)), files_fingerprint(dark))


def lineage_version(asset: str, cfg: BeamtimeConfig, inputs: dict[str, str]) -> str:
    """The lineage version of an output of ``asset`` made from inputs with these versions."""
    return digest(asset, code_version(asset), config_version(cfg, asset),
                 json.dumps(inputs, sort_keys=True))


def recorded_lineage(path: Path) -> str | None:
    """The lineage version an output file records; None if the file or the attribute is missing."""
    v = read_attrs(path).get("lineage_version")
    return None if v is None else str(v)


def output_versions(cfg: BeamtimeConfig, asset: str, inputs: dict[str, str | None]) -> dict:
    """The version attributes of an output of ``asset`` made from ``inputs`` (their lineage or source versions).

    An input whose file records no version (written by an older release) counts as "unknown",
    which no current version equals: its dependents show as stale.
    """
    inputs = {k: v or "unknown" for k, v in inputs.items()}
    return {"lineage_version": lineage_version(asset, cfg, inputs),
            "code_version": code_version(asset),
            "input_versions": json.dumps(inputs, sort_keys=True)}
