"""Regions of interest: the ROI file (the seed's dump_roi / load_roi) and per-frame ROI quantities.

Used by the in-situ series (roi_series), the event files (event_smalldata) and the DSSC small
data (dssc_smalldata); each reads its ROIs from its config section's ``roi_file`` or ``rois``.

A ROI file is a small YAML file::

    detector_shape: [195, 487]     # (y, x) pixels it was drawn on; optional
    rois:
      - {name: peak, role: com, y: [80, 120], x: [220, 270]}
      - {name: width, role: fwhm, y: [80, 120], x: [220, 270]}
      - {name: bragg, role: intensity, y: [80, 120], x: [220, 270]}

Rows ``y`` and columns ``x`` are [first, end) pixel ranges of the detector image, as in numpy slicing.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import yaml
from pydantic import ValidationError

from .config import BeamtimeConfig, Roi
from .exceptions import ConfigError
from .hashing import digest
from .outputs import atomic_path

#: FWHM of a Gaussian in units of its standard deviation.
GAUSS_FWHM = 2.0 * np.sqrt(2.0 * np.log(2.0))


def dump_rois(path: Path, rois: list[Roi], detector_shape: tuple[int, int] | None = None) -> Path:
    """Write ROIs to a ROI file (atomically)."""
    data: dict = {}
    if detector_shape is not None:
        data["detector_shape"] = [int(detector_shape[0]), int(detector_shape[1])]
    data["rois"] = [r.model_dump(mode="json") for r in rois]
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_text("# ROIs of xfel-assets (roi_series, roi-gui): y and x are [first, end) pixel ranges\n"
                       + yaml.safe_dump(data, sort_keys=False, default_flow_style=None))
    return path


def load_rois(path: Path) -> list[Roi]:
    """Read and validate a ROI file; errors name the file and the ROI."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"ROI file {path} does not exist") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"ROI file {path} is not valid YAML: {e}") from None
    if not isinstance(data, dict) or not isinstance(data.get("rois"), list):
        raise ConfigError(f"ROI file {path} must hold a list under 'rois'")
    rois = []
    for i, item in enumerate(data["rois"]):
        try:
            rois.append(Roi.model_validate(item))
        except ValidationError as e:
            problems = "; ".join(f"{'.'.join(map(str, x['loc'])) or 'roi'}: {x['msg']}" for x in e.errors())
            raise ConfigError(f"ROI file {path}, ROI {i} ({item!r}): {problems}") from None
    names = [r.name for r in rois]
    if len(set(names)) != len(names):
        raise ConfigError(f"ROI file {path}: ROI names repeat: {names}")
    return rois


def section_rois(section) -> list[Roi]:
    """The ROIs of a config section (insitu, events, smalldata): its roi_file if set, else its rois."""
    return load_rois(section.roi_file) if section.roi_file is not None else list(section.rois)


def configured_rois(cfg: BeamtimeConfig) -> list[Roi]:
    """The ROIs roi_series computes: from insitu.roi_file if set, else insitu.rois (at least one)."""
    rois = section_rois(cfg.require_insitu())
    if not rois:
        raise ConfigError(f"{cfg.source_file}: no ROIs: set insitu.rois or insitu.roi_file "
                          "(see 'xfel-assets roi save')")
    return rois


def rois_version(rois: list[Roi]) -> str:
    return digest(json.dumps([r.model_dump(mode="json") for r in rois], sort_keys=True))


def check_inside(rois: list[Roi], shape: tuple[int, int], where: str) -> None:
    for r in rois:
        if r.y[1] > shape[0] or r.x[1] > shape[1]:
            raise ConfigError(f"ROI {r.name!r} (y={list(r.y)}, x={list(r.x)}) lies outside the detector "
                              f"image of {shape[0]} x {shape[1]} pixels of {where}")


def centre_of_mass(block: np.ndarray, y0: int, x0: int) -> tuple[np.ndarray, np.ndarray]:
    """(y, x) centre of mass per frame of a (frame, y, x) block, in detector pixels.

    The counts are background-subtracted, so the noise around the peak averages to zero; clipping
    it at zero would pull the centre towards the middle of the ROI.
    """
    w = block.astype(np.float64)
    total = w.sum(axis=(1, 2))
    with np.errstate(invalid="ignore", divide="ignore"):
        cy = (w.sum(axis=2) @ np.arange(block.shape[1])) / total + y0
        cx = (w.sum(axis=1) @ np.arange(block.shape[2])) / total + x0
    return cy, cx


def fwhm(profiles: np.ndarray) -> np.ndarray:
    """FWHM (pixels) per row of (frame, n) peak profiles, from the half-maximum crossings interpolated
    linearly on both sides of the maximum (above the profile's minimum); NaN if a side never falls to half."""
    p = np.asarray(profiles, dtype=np.float64)
    n = p.shape[1]
    idx = np.arange(n)
    top = p.argmax(axis=1)
    base = p.min(axis=1)
    half = base + (p[np.arange(len(p)), top] - base) / 2.0
    below = p < half[:, None]
    # Left: the last pixel below half before the maximum; right: the first one after it.
    left = np.where(below & (idx < top[:, None]), idx, -1).max(axis=1)
    right = np.where(below & (idx > top[:, None]), idx, n).min(axis=1)
    ok = (left >= 0) & (right < n)
    rows = np.arange(len(p))
    li, ri = np.clip(left, 0, n - 2), np.clip(right, 1, n - 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        xl = li + (half - p[rows, li]) / (p[rows, li + 1] - p[rows, li])
        xr = ri - 1 + (half - p[rows, ri - 1]) / (p[rows, ri] - p[rows, ri - 1])
    return np.where(ok, xr - xl, np.nan)


def roi_sums(images: np.ndarray, rois: list[Roi], out: np.ndarray | None = None) -> np.ndarray:
    """Each ROI's sum per frame of (frame, y, x) images: (frame, roi) float64, into ``out`` if given.

    The per-frame ROI quantity of every workflow (DSSC small data, event small data, the in-situ
    intensity ROIs)."""
    sums = np.empty((len(images), len(rois))) if out is None else out
    for j, r in enumerate(rois):
        sums[:, j] = images[:, r.slices[0], r.slices[1]].sum(axis=(1, 2), dtype=np.float64)
    return sums


def roi_columns(images: np.ndarray, rois: list[Roi]) -> dict[str, np.ndarray]:
    """Per-frame ROI quantities of (frame, y, x) corrected images, by column name.

    com: ``<name>_com_y``, ``<name>_com_x`` (detector pixels); fwhm: ``<name>_fwhm_y``,
    ``<name>_fwhm_x`` (pixels, of the ROI's projections on each axis); intensity: ``<name>_sum``
    (counts); background: ``<name>_mean`` (counts per pixel), and with background ROIs each
    intensity ROI also gets ``<name>_net`` = sum - mean background x its pixels.
    """
    cols: dict[str, np.ndarray] = {}
    for r in rois:
        block = images[:, r.slices[0], r.slices[1]]
        if r.role == "com":
            cols[f"{r.name}_com_y"], cols[f"{r.name}_com_x"] = centre_of_mass(block, r.y[0], r.x[0])
        elif r.role == "fwhm":
            cols[f"{r.name}_fwhm_y"] = fwhm(block.sum(axis=2, dtype=np.float64))
            cols[f"{r.name}_fwhm_x"] = fwhm(block.sum(axis=1, dtype=np.float64))
        elif r.role == "intensity":
            cols[f"{r.name}_sum"] = roi_sums(images, [r])[:, 0]
        else:
            cols[f"{r.name}_mean"] = block.mean(axis=(1, 2), dtype=np.float64)
    backgrounds = [cols[f"{r.name}_mean"] for r in rois if r.role == "background"]
    if backgrounds:
        bg = np.mean(backgrounds, axis=0)
        for r in rois:
            if r.role == "intensity":
                cols[f"{r.name}_net"] = cols[f"{r.name}_sum"] - bg * r.npixels
    return cols


def intensity_columns(rois: list[Roi]) -> list[str]:
    """The intensity columns that attenuation correction scales (``_net`` where there is a background ROI)."""
    has_bg = any(r.role == "background" for r in rois)
    out = []
    for r in rois:
        if r.role == "intensity":
            out.append(f"{r.name}_sum")
            if has_bg:
                out.append(f"{r.name}_net")
    return out
