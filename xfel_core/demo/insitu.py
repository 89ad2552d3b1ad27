"""Generate an in-situ sample in the SPring-8 BL11XU layout: Pilatus TIFFs with real headers.

A Bragg peak grows (exponentially), moves and broadens over the measurements; the attenuator is
changed whenever the peak pixel would exceed ATTENUATE_ABOVE counts, mid-measurement, and the
header's Filter_transmission says so (the counts jump by the ratio). The detector has a
per-pixel sensitivity (recorded by the flat-field frames), dead pixels (0 counts, also in the
flat-field), hot pixels, and a beam-related background that the empty rows record.

Units: rates in counts/s of the unattenuated beam; times in UNIX seconds; pixels (y, x).
"""

from __future__ import annotations

import datetime as dt
import os
from dataclasses import dataclass
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np
import tifffile

from ..readers.tiff import format_pilatus_header
from .config import write_config

TIMEZONE = "Asia/Tokyo"
START = dt.datetime(2026, 11, 20, 14, 0, 0)
#: Pilatus 100K.
SHAPE = (195, 487)
TRANSMISSIONS = (1.0, 0.5, 0.25, 0.1, 0.05, 0.02)
ATTENUATE_ABOVE = 800.0  # counts in the peak pixel
PEAK_RATE0 = 2.0e4  # counts/s in the whole peak at the start
GROWTH_S = 60.0  # e-folding time of the peak's growth
BACKGROUND_RATE = 3.0  # counts/s per pixel of the unattenuated beam
FLAT_COUNTS = 4000.0  # counts per pixel per flat-field frame
#: The empty rows of the demo detector (no peak reaches them).
BACKGROUND_REGION = {"y": [0, 24], "x": [0, 487]}


@dataclass
class InsituTruth:
    """The simulated truth per frame, in acquisition order over all measurements."""

    keys: list[str]  # measurement key per frame
    time: np.ndarray  # UNIX s
    exposure_s: np.ndarray
    transmission: np.ndarray
    rate: np.ndarray  # counts/s of the unattenuated beam in the whole peak
    centre_y: np.ndarray
    centre_x: np.ndarray
    sigma_y: np.ndarray
    sigma_x: np.ndarray
    sensitivity: np.ndarray  # (y, x) per-pixel response (what the flat-field measures)
    dead: np.ndarray  # (y, x) bool
    hot: np.ndarray  # (y, x) bool
    shape: tuple[int, int]

    def expected_counts(self, i: int) -> np.ndarray:
        """(y, x) counts of frame i without noise, sensitivity, background or bad pixels: the peak only."""
        yy, xx = np.mgrid[: self.shape[0], : self.shape[1]]
        g = np.exp(-0.5 * (((yy - self.centre_y[i]) / self.sigma_y[i]) ** 2
                           + ((xx - self.centre_x[i]) / self.sigma_x[i]) ** 2))
        g /= 2 * np.pi * self.sigma_y[i] * self.sigma_x[i]
        return self.rate[i] * self.exposure_s[i] * self.transmission[i] * g


def _write_tiff(path: Path, counts: np.ndarray, header: str) -> None:
    """Write one Pilatus-like TIFF; it appears under its name complete (renamed into place)."""
    tmp = path.with_name(f".{path.name}.part")
    tifffile.imwrite(tmp, counts.astype(np.int32), description=header, software="TVX TIFF", metadata=None)
    os.replace(tmp, path)


def write_insitu_sample(
    raw_root: Path, sample: str = "GaN01", measurements: tuple[str, ...] = ("growth01", "growth02", "anneal03"),
    frames: int = 30, shape: tuple[int, int] = SHAPE, exposure_s: float = 1.0, period_s: float = 2.0,
    gap_s: float = 30.0, header_transmission: bool = True, seed: int = 0,
    flatfield_in_sample: bool = True,
) -> InsituTruth:
    """Write <raw_root>/<sample>/<sample>_<measurement>/<sample>_<measurement>_NNNNN.tif and a flatfield folder."""
    rng = np.random.default_rng(seed)
    ny, nx = shape
    tz = ZoneInfo(TIMEZONE)
    sensitivity = np.clip(1.0 + 0.08 * rng.standard_normal(shape), 0.7, 1.3)
    dead = np.zeros(shape, dtype=bool)
    hot = np.zeros(shape, dtype=bool)
    dead.flat[rng.choice(ny * nx, size=max(3, ny * nx // 4000), replace=False)] = True
    hot.flat[rng.choice(ny * nx, size=max(2, ny * nx // 10000), replace=False)] = True
    hot &= ~dead
    # One dead pixel sits on the peak, where it would do most harm.
    cy0, cx0 = 0.55 * ny, 0.45 * nx
    dead[int(cy0) + 1, int(cx0) - 1] = True
    hot[int(cy0) + 1, int(cx0) - 1] = False

    nmeas = len(measurements)
    starts = [START.replace(tzinfo=tz).timestamp() + k * (frames * period_s + gap_s) for k in range(nmeas)]
    times = np.concatenate([s + period_s * np.arange(frames) for s in starts])
    total = times[-1] - times[0]
    frac = (times - times[0]) / total
    rate = PEAK_RATE0 * np.exp((times - times[0]) / GROWTH_S)
    centre_y = cy0 + 0.06 * ny * frac
    centre_x = cx0 + 0.05 * nx * frac
    sigma_y = 2.0 + 1.5 * frac
    sigma_x = 2.6 + 2.0 * frac
    peak_pixel = rate * exposure_s / (2 * np.pi * sigma_y * sigma_x)
    # The attenuator: the largest transmission that keeps the peak pixel below the limit, never
    # opened again (as at the beamline: attenuate when the peak gets too strong).
    transmission = np.empty_like(times)
    level = 0
    for i, p in enumerate(peak_pixel):  # a handful of frames: the operator's decision per frame
        while level + 1 < len(TRANSMISSIONS) and p * TRANSMISSIONS[level] > ATTENUATE_ABOVE:
            level += 1
        transmission[i] = TRANSMISSIONS[level]
    truth = InsituTruth(keys=[f"{sample}/{sample}_{m}" for m in measurements for _ in range(frames)],
                        time=times, exposure_s=np.full(len(times), exposure_s), transmission=transmission,
                        rate=rate, centre_y=centre_y, centre_x=centre_x, sigma_y=sigma_y, sigma_x=sigma_x,
                        sensitivity=sensitivity, dead=dead, hot=hot, shape=shape)

    for k, m in enumerate(measurements):
        folder = Path(raw_root) / sample / f"{sample}_{m}"
        folder.mkdir(parents=True, exist_ok=True)
        for j in range(frames):
            i = k * frames + j
            expected = truth.expected_counts(i) + BACKGROUND_RATE * exposure_s * transmission[i]
            counts = rng.poisson(expected * sensitivity).astype(np.int64)
            counts[dead] = 0
            counts[hot] += rng.poisson(2.0e4, size=int(hot.sum()))
            when = dt.datetime.fromtimestamp(times[i], tz).replace(tzinfo=None)
            header = format_pilatus_header(when, exposure_s, transmission[i] if header_transmission else None,
                                           period_s=period_s)
            _write_tiff(folder / f"{sample}_{m}_{j:05d}.tif", counts, header)

    flat_dir = (Path(raw_root) / sample if flatfield_in_sample else Path(raw_root)) / "flatfield"
    flat_dir.mkdir(parents=True, exist_ok=True)
    for j in range(3):
        counts = rng.poisson(FLAT_COUNTS * sensitivity).astype(np.int64)
        counts[dead] = 0
        counts[hot] += rng.poisson(2.0e4, size=int(hot.sum()))
        when = START - dt.timedelta(hours=1) + dt.timedelta(seconds=10 * j)
        _write_tiff(flat_dir / f"flatfield_{j:05d}.tif", counts, format_pilatus_header(when, 10.0, 1.0))
    return truth


def demo_rois(shape: tuple[int, int] = SHAPE) -> list[dict]:
    """ROIs around the demo peak's path (the seed's yellow, orange, red and green ROIs)."""
    ny, nx = shape
    y0, y1 = int(0.55 * ny) - 14, int(0.61 * ny) + 15
    x0, x1 = int(0.45 * nx) - 20, int(0.50 * nx) + 21
    return [
        {"name": "peak", "role": "com", "y": [y0, y1], "x": [x0, x1]},
        {"name": "width", "role": "fwhm", "y": [y0, y1], "x": [x0, x1]},
        {"name": "bragg", "role": "intensity", "y": [y0, y1], "x": [x0, x1]},
        {"name": "side", "role": "intensity", "y": [y0, y1], "x": [x1 + 5, x1 + 35]},
    ]


def insitu_config(raw_root: str = "raw/insitu", shape: tuple[int, int] = SHAPE) -> dict:
    """The beamtime.yaml insitu section for the demo sample."""
    return {
        "raw_root": raw_root,
        "timezone": TIMEZONE,
        "flatfield": "flatfield",
        "median_filter": "bad_pixels",
        "background_regions": [dict(BACKGROUND_REGION, x=[0, shape[1]])],
        "rois": demo_rois(shape),
        "attenuation": {"method": "ratio", "points": 5},
        "settle_seconds": 5.0,
    }


def write_demo_insitu(root: Path, measurements: int = 3, frames: int = 30, header_transmission: bool = True,
                      seed: int = 0) -> Path:
    """An in-situ-only demo beamtime: <root>/raw/insitu/GaN01/... and <root>/beamtime.yaml (kept if present)."""

    root = Path(root)
    names = ("growth01", "growth02", "anneal03") if measurements == 3 else tuple(f"m{k + 1:02d}" for k in range(measurements))
    write_insitu_sample(root / "raw" / "insitu", measurements=names, frames=frames,
                        header_transmission=header_transmission, seed=seed)
    path = root / "beamtime.yaml"
    if path.exists():
        return path
    return write_config(root, {"name": root.name, "raw_root": "raw", "processed_root": "processed",
                               "insitu": insitu_config("raw/insitu")})
