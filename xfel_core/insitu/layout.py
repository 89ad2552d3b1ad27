"""Where in-situ data lives: <raw_root>/<sample>/<sample>_<measurement>/*.tif, and where its outputs go.

A measurement's partition key is ``<sample>/<measurement folder>``, for example
``GaN01/GaN01_growth02``: unambiguous, and the path of its folder below the raw root.
"""

from __future__ import annotations

from pathlib import Path

from ..config import BeamtimeConfig, InsituConfig
from ..exceptions import ConfigError, RunDataError

TIFF_SUFFIXES = (".tif", ".tiff")


def tiff_files(folder: Path) -> list[Path]:
    """The TIFF files of a folder, in name order (the detector numbers its frames with zero padding)."""
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir()
                  if p.is_file() and p.suffix.lower() in TIFF_SUFFIXES and not p.name.startswith("."))


def samples(ins: InsituConfig) -> list[str]:
    """Sample folders of the raw root (the shared flat-field folder left out)."""
    if not ins.raw_root.is_dir():
        return []
    return sorted(p.name for p in ins.raw_root.iterdir()
                  if p.is_dir() and p.name != ins.flatfield and not p.name.startswith("."))


def measurements(ins: InsituConfig, sample: str) -> list[str]:
    """Measurement folders of a sample: its subfolders holding TIFFs (the flat-field folder left out)."""
    folder = ins.raw_root / sample
    if not folder.is_dir():
        return []
    return sorted(p.name for p in folder.iterdir()
                  if p.is_dir() and p.name != ins.flatfield and not p.name.startswith(".") and tiff_files(p))


def measurement_key(sample: str, measurement: str) -> str:
    return f"{sample}/{measurement}"


def split_measurement_key(key: str) -> tuple[str, str]:
    """(sample, measurement folder) of a key such as ``GaN01/GaN01_growth02``."""
    parts = key.split("/")
    if len(parts) != 2 or not all(parts) or any(p in (".", "..") for p in parts):
        raise ConfigError(f"measurement key {key!r} is not of the form <sample>/<measurement folder>")
    return parts[0], parts[1]


def all_measurement_keys(ins: InsituConfig) -> list[str]:
    return [measurement_key(s, m) for s in samples(ins) for m in measurements(ins, s)]


def measurement_dir(ins: InsituConfig, key: str) -> Path:
    sample, measurement = split_measurement_key(key)
    return ins.raw_root / sample / measurement


def flatfield_dir(ins: InsituConfig, sample: str) -> Path:
    """The sample's own flat-field folder, else the one in the raw root."""
    for folder in (ins.raw_root / sample / ins.flatfield, ins.raw_root / ins.flatfield):
        if tiff_files(folder):
            return folder
    raise RunDataError(
        f"no flat-field TIFFs for sample {sample}: looked in {ins.raw_root / sample / ins.flatfield} "
        f"and {ins.raw_root / ins.flatfield}")


def output_dir(cfg: BeamtimeConfig, sample: str, measurement: str | None = None) -> Path:
    """``<insitu processed root>/<sample>[/<measurement>]``."""
    root = cfg.insitu_processed_root / sample
    return root if measurement is None else root / measurement


def measurement_output(cfg: BeamtimeConfig, key: str, name: str) -> Path:
    """An output file of a measurement, e.g. ``.../GaN01/GaN01_growth02/insitu_frames.h5``."""
    sample, measurement = split_measurement_key(key)
    return output_dir(cfg, sample, measurement) / name
