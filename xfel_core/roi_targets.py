"""What the ROI window shows and what its ROIs change: image stacks of a target, and the outputs new ROIs make stale.

A target is an in-situ measurement (``GaN01/GaN01_growth01``) or sample (``GaN01``: all its
measurements in time order), or a DSSC run (``r0002``: one module and frame type of its binned cube).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

from .config import RUN_KEY_RE, BeamtimeConfig, Roi
from .exceptions import ConfigError, MissingInputError
from .outputs import read_attrs
from .rois import rois_version, section_rois


@dataclass
class ImageStack:
    """Images along one axis (time or scan value), as the window shows them."""

    #: (index, y, x) float64: corrected counts per exposure (in-situ) or mean ADU per frame (cube).
    images: np.ndarray
    #: Value of each image on the axis: seconds since the first frame, or the scan value.
    axis: np.ndarray
    axis_label: str
    title: str
    #: The config section whose ROIs apply to these pixels: "insitu" or "smalldata" (module pixels).
    section: str
    files: list[Path] = field(default_factory=list)

    @property
    def shape(self) -> tuple[int, int]:
        return self.images.shape[1], self.images.shape[2]


def load_target(cfg: BeamtimeConfig, target: str, module: int | None = None,
                frame_type: str | None = None) -> ImageStack:
    """The image stack of ``target`` (see the module docstring); errors name what is missing."""
    if RUN_KEY_RE.match(target):
        return _cube_stack(cfg, target, module, frame_type)
    return _insitu_stack(cfg, target)


def _insitu_stack(cfg: BeamtimeConfig, target: str) -> ImageStack:
    from .insitu import layout
    from .insitu.pipeline import FRAMES_FILE

    ins = cfg.require_insitu()
    keys = ([target] if "/" in target
            else [layout.measurement_key(target, m) for m in layout.measurements(ins, target)]
            if target in layout.samples(ins) else [])
    if not keys:
        raise ConfigError(f"{target!r} is neither a run (r0002), an in-situ sample ({layout.samples(ins)}) "
                          f"nor a measurement (sample/measurement) under {ins.raw_root}")
    images, times, files = [], [], []
    for key in keys:
        path = layout.measurement_output(cfg, key, FRAMES_FILE)
        if not path.exists():
            raise MissingInputError(f"{path} does not exist: materialize insitu_frames [{key}] first")
        with h5py.File(path, "r") as f:
            images.append(f["images"][()].astype(np.float64))
            times.append(f["time"][()])
        files.append(path)
    t = np.concatenate(times)
    order = np.argsort(t, kind="stable")
    return ImageStack(np.concatenate(images)[order], t[order] - t.min(), "time since the first frame (s)",
                      f"{target}: corrected frames", "insitu", files)


def _cube_stack(cfg: BeamtimeConfig, run: str, module: int | None, frame_type: str | None) -> ImageStack:
    path = cfg.output_path(run, "binned_cube")
    if not path.exists():
        raise MissingInputError(f"{path} does not exist: materialize binned_cube [{run}] first")
    with h5py.File(path, "r") as f:
        modules = [int(m) for m in f["module"][()]]
        types = [t.decode() if isinstance(t, bytes) else str(t) for t in f["frame_type"][()]]
        module = modules[0] if module is None else module
        frame_type = frame_type or types[0]
        if module not in modules:
            raise ConfigError(f"module {module} is not in {path} (it has {modules})")
        m = modules.index(module)
        if frame_type == "difference":
            images = f["difference"][:, m]
        elif frame_type in types:
            images = f["mean"][:, types.index(frame_type), m]
        else:
            raise ConfigError(f"frame type {frame_type!r} is not in {path} (it has {types + ['difference']})")
        scan = f["scan_variable"][()]
        units = f["scan_variable"].attrs.get("units", "")
    units = units.decode() if isinstance(units, bytes) else str(units)
    label = f"scan value ({units})" if units else "scan value"
    return ImageStack(np.asarray(images, dtype=np.float64), np.asarray(scan, dtype=np.float64), label,
                      f"{run} module {module:02d} {frame_type}: mean per frame", "smalldata", [path])


def default_roi_file(cfg: BeamtimeConfig, section: str) -> Path:
    """The ROI file the config's section reads, else ``<section>_rois.yaml`` beside the beamtime YAML."""
    sec = getattr(cfg, section, None)
    if sec is not None and sec.roi_file is not None:
        return sec.roi_file
    return Path(cfg.source_file).parent / f"{section}_rois.yaml"


def _reads_file(cfg: BeamtimeConfig, section: str, roi_file: Path) -> bool:
    sec = getattr(cfg, section, None)
    return sec is not None and sec.roi_file is not None and Path(sec.roi_file).resolve() == Path(roi_file).resolve()


def recorded_roi_versions(cfg: BeamtimeConfig, roi_file: Path) -> dict[str, dict[str, str]]:
    """For each asset whose config section reads ``roi_file``: the ROI version each existing
    output was computed with, by partition key (read once; comparing is then cheap)."""
    def recorded(path: Path) -> str | None:
        attrs = read_attrs(path)
        return json.loads(attrs.get("input_versions", "{}")).get("rois", "") if attrs else None

    found: dict[str, dict[str, str | None]] = {}
    if _reads_file(cfg, "insitu", roi_file):
        from .insitu import layout
        from .insitu.pipeline import ROI_SERIES_FILE

        found["roi_series"] = {k: recorded(layout.measurement_output(cfg, k, ROI_SERIES_FILE))
                               for k in layout.all_measurement_keys(cfg.insitu)}
    if _reads_file(cfg, "events", roi_file):
        from .events.pipeline import SMALLDATA_FILE, output_path
        from .readers.events import event_runs

        found["event_smalldata"] = {r: recorded(output_path(cfg, r, SMALLDATA_FILE)) for r in event_runs(cfg.events)}
    if _reads_file(cfg, "smalldata", roi_file) and cfg.processed_root.is_dir():
        found["dssc_smalldata"] = {
            f"{cfg.module_keys[i]}|{run.name}": recorded(cfg.output_path(run.name, "dssc_smalldata", m))
            for run in sorted(cfg.processed_root.iterdir()) if RUN_KEY_RE.match(run.name)
            for i, m in enumerate(cfg.detector.modules)}
    return {asset: {k: v for k, v in parts.items() if v is not None} for asset, parts in found.items()}


def stale_partitions(recorded: dict[str, dict[str, str]], rois: list[Roi]) -> dict[str, list[str]]:
    """The partitions whose outputs were computed with other ROIs than ``rois``, and their downstream ones."""
    new = rois_version(rois)
    stale: dict[str, list[str]] = {}
    for asset, versions in recorded.items():
        keys = [k for k, v in versions.items() if v != new]
        if not keys:
            continue
        stale[asset] = keys
        if asset == "roi_series":
            from .insitu.layout import split_measurement_key

            stale["attenuation_corrected_series"] = sorted({split_measurement_key(k)[0] for k in keys})
        elif asset == "event_smalldata":
            stale["event_cube"] = keys
    return stale


def current_rois(cfg: BeamtimeConfig, section: str, roi_file: Path) -> list[Roi]:
    """The ROIs to start from: the ROI file if it exists, else the section's configured ROIs."""
    if Path(roi_file).exists():
        from .rois import load_rois

        return load_rois(roi_file)
    sec = getattr(cfg, section, None)
    return section_rois(sec) if sec is not None else []
