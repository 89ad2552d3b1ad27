"""Read photon-counting detector TIFFs and their Pilatus headers (acquisition time, exposure, filter transmission).

Each TIFF holds one frame; its ImageDescription is the detector's text header (Pilatus CBF
header convention, parsed with tifffile), for example::

    # Detector: PILATUS 100K, S/N 1-0001
    # 2026-11-20T14:00:02.000
    # Exposure_time 1.0000000 s
    # Count_cutoff 1048575 counts
    # Filter_transmission 0.2500

Times become UNIX epoch seconds with the time zone of the config (the header has none).
"""

from __future__ import annotations

import datetime as dt
import re
import struct
from dataclasses import dataclass
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np
import tifffile
from tifffile.tifffile import pilatus_description_metadata

from ..exceptions import RunDataError

#: The older camserver date format: "# 2012/Mar/13 12:34:56.789".
OLD_DATE_RE = re.compile(r"^#\s*(\d{4}/[A-Za-z]{3}/\d{1,2} \d{1,2}:\d{2}:\d{2}(?:\.\d+)?)\s*$", re.M)
_READ_ERRORS = (tifffile.TiffFileError, ValueError, OSError, EOFError, struct.error, IndexError, KeyError)


class TiffDataError(RunDataError):
    """A TIFF of an in-situ measurement is unreadable, truncated or has an unusable header."""


@dataclass(frozen=True)
class FrameHeader:
    """What one frame's header says."""

    path: Path
    time: float  # acquisition start, UNIX epoch seconds
    exposure_s: float
    transmission: float  # filter transmission (0-1]; NaN if the header has none
    count_cutoff: int | None  # counts at which a pixel saturates; None if not given
    shape: tuple[int, int]  # (y, x) pixels
    dtype: np.dtype


def _header_time(path: Path, meta: dict, description: str, tz: ZoneInfo) -> float:
    when = meta.get("DateTime")
    if when is None:
        m = OLD_DATE_RE.search(description)
        if m:
            fmt = "%Y/%b/%d %H:%M:%S.%f" if "." in m.group(1) else "%Y/%b/%d %H:%M:%S"
            when = dt.datetime.strptime(m.group(1), fmt)
    if when is None:
        raise TiffDataError(f"{path}: the TIFF header has no acquisition date-time line "
                            "('# 2026-11-20T14:00:02.000')")
    return when.replace(tzinfo=tz).timestamp() if when.tzinfo is None else when.timestamp()


def parse_header(path: Path, description: str, shape: tuple[int, ...], dtype, tz: ZoneInfo) -> FrameHeader:
    """The header fields of one frame, from its ImageDescription text."""
    if not description.startswith("# "):
        raise TiffDataError(f"{path}: no Pilatus header in the TIFF's ImageDescription "
                            f"(it starts {description[:40]!r})")
    try:
        meta = pilatus_description_metadata(description)
    except ValueError as e:
        raise TiffDataError(f"{path}: unreadable Pilatus header: {e}") from None
    exposure = meta.get("Exposure_time")
    if not isinstance(exposure, float) or not np.isfinite(exposure) or exposure <= 0:
        raise TiffDataError(f"{path}: the TIFF header has no valid Exposure_time (got {exposure!r})")
    transmission = meta.get("Filter_transmission", float("nan"))
    if not isinstance(transmission, float) or (np.isfinite(transmission) and not 0 < transmission <= 1):
        raise TiffDataError(f"{path}: Filter_transmission {transmission!r} is not in (0, 1]")
    if len(shape) != 2:
        raise TiffDataError(f"{path}: holds an image of shape {shape}; expected one 2-D frame per TIFF")
    cutoff = meta.get("Count_cutoff")
    return FrameHeader(path=path, time=_header_time(path, meta, description, tz), exposure_s=exposure,
                       transmission=transmission, count_cutoff=cutoff if isinstance(cutoff, int) else None,
                       shape=(int(shape[0]), int(shape[1])), dtype=np.dtype(dtype))


def read_header(path: Path, tz: ZoneInfo) -> FrameHeader:
    """Open a TIFF, check its image data lies inside the file, and parse its header."""
    try:
        with tifffile.TiffFile(path) as tif:
            if len(tif.pages) != 1:
                raise TiffDataError(f"{path}: has {len(tif.pages)} images; expected one frame per TIFF")
            page = tif.pages.first
            size = path.stat().st_size
            end = max((o + n for o, n in zip(page.dataoffsets, page.databytecounts)), default=0)
            if end > size or not page.dataoffsets:
                raise TiffDataError(f"{path}: truncated: its image data ends at byte {end}, "
                                    f"the file has {size} bytes")
            return parse_header(path, page.description, page.shape, page.dtype, tz)
    except TiffDataError:
        raise
    except _READ_ERRORS as e:
        raise TiffDataError(f"{path}: not a readable TIFF ({type(e).__name__}: {e})") from None


def read_headers(paths: list[Path], tz: ZoneInfo) -> list[FrameHeader]:
    """Headers of every frame; all frames must have one shape."""
    headers = [read_header(p, tz) for p in paths]
    if headers:
        shape = headers[0].shape
        for h in headers[1:]:
            if h.shape != shape:
                raise TiffDataError(f"{h.path}: frame shape {h.shape} differs from {shape} of {headers[0].path}")
    return headers


def read_frames_into(paths: list[Path], out: np.ndarray) -> None:
    """Read one frame per path into out[i] (a preallocated (frames, y, x) buffer)."""
    for i, p in enumerate(paths):
        try:
            out[i] = tifffile.imread(p)
        except _READ_ERRORS as e:
            raise TiffDataError(f"{p}: cannot read its image ({type(e).__name__}: {e})") from None


@dataclass(frozen=True)
class Measurement:
    """An in-situ measurement's frames, in acquisition order: their headers, and their pixels on demand."""

    key: str
    headers: list[FrameHeader]

    @property
    def times(self) -> np.ndarray:
        """Acquisition start of each frame, UNIX epoch seconds."""
        return np.array([h.time for h in self.headers])

    def frames(self) -> np.ndarray:
        """Every frame's pixels, (frames, y, x) in the files' dtype."""
        out = np.empty((len(self.headers), *self.headers[0].shape), dtype=self.headers[0].dtype)
        read_frames_into([h.path for h in self.headers], out)
        return out


def read_measurement(ins, key: str) -> Measurement:
    """The measurement ``sample/measurement`` of an insitu config section, its headers read and sorted by time."""
    from ..insitu import layout

    files = layout.tiff_files(layout.measurement_dir(ins, key))
    if not files:
        raise RunDataError(f"no TIFFs in {layout.measurement_dir(ins, key)} (measurement {key})")
    headers = read_headers(files, ZoneInfo(ins.timezone))
    return Measurement(key, sorted(headers, key=lambda h: h.time))


def format_pilatus_header(when: dt.datetime, exposure_s: float, transmission: float | None,
                          detector: str = "PILATUS 100K, S/N 1-0001", count_cutoff: int = 1048575,
                          period_s: float | None = None) -> str:
    """A Pilatus (camserver) ImageDescription header; used by the demo and the tests."""
    lines = [
        f"# Detector: {detector}",
        f"# {when.strftime('%Y-%m-%dT%H:%M:%S')}.{when.microsecond // 1000:03d}",
        "# Pixel_size 172e-6 m x 172e-6 m",
        "# Silicon sensor, thickness 0.000450 m",
        f"# Exposure_time {exposure_s:.7f} s",
        f"# Exposure_period {period_s or exposure_s:.7f} s",
        "# Tau = 124.0e-09 s",
        f"# Count_cutoff {count_cutoff} counts",
        "# Threshold_setting: 7500 eV",
        "# Gain_setting: low gain (vrf = -0.200)",
        "# N_excluded_pixels = 0",
        "# Excluded_pixels: (nil)",
        "# Flat_field: (nil)",
        "# Trim_file: (nil)",
        "# Image_path: /ramdisk/",
        "# Wavelength 0.8266 A",
    ]
    if transmission is not None:
        lines.append(f"# Filter_transmission {transmission:.4f}")
    return "\r\n".join(lines) + "\r\n"
