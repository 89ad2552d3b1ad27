"""Gain / flat-field maps: one (y, x) map per module from an HDF5 file named in the config.

The map is per pixel (not per memory cell), so it is applied to the reduced sums after the
binning kernel, exactly: sum(g * (x - d)) = g * sum(x - d), and the sum of squares by g**2.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import h5py
import numpy as np

from ..config import BeamtimeConfig
from ..exceptions import ConfigError, RunDataError


@dataclass
class GainMap:
    """One module's multiplicative factor per pixel (y, x), float64, and its content version."""

    factor: np.ndarray  # (y, x): corrected = (raw - dark) * factor
    version: str
    source: str


def read_gain_map(cfg: BeamtimeConfig, module: int) -> GainMap:
    """The configured map of one module as a multiplicative factor; fails naming the file and dataset."""
    gm = cfg.gain_map
    if gm is None:
        raise ConfigError("gain_map is not configured")
    name = gm.dataset.format(module=module)
    where = f"gain map {gm.file} [{name}]"
    try:
        with h5py.File(gm.file, "r") as f:
            if name not in f:
                raise RunDataError(f"{where}: no such dataset (module {module:02d})")
            values = np.asarray(f[name][()], dtype=np.float64)
    except FileNotFoundError:
        raise ConfigError(f"gain map file {gm.file} does not exist (gain_map.file in {cfg.source_file})") from None
    except OSError as e:
        raise RunDataError(f"{gm.file} cannot be read as HDF5: {e}") from None
    shape = tuple(cfg.detector.module_shape)
    if values.shape != shape:
        raise RunDataError(f"{where}: shape {values.shape}, the module has {shape} pixels")
    if not np.isfinite(values).all():
        raise RunDataError(f"{where}: {int((~np.isfinite(values)).sum())} values are NaN or infinite")
    if gm.operation == "divide":
        if (values <= 0).any():
            raise RunDataError(f"{where}: a flat-field to divide by must be > 0 "
                               f"({int((values <= 0).sum())} pixels are not)")
        values = 1.0 / values
    h = hashlib.sha256(gm.operation.encode())
    h.update(np.ascontiguousarray(values).tobytes())
    return GainMap(values, h.hexdigest()[:16], where)


def apply_gain(sums: np.ndarray, sumsq: np.ndarray, gain: GainMap) -> None:
    """Scale (groups, pixels) sums by the gain and sums of squares by its square, in place."""
    g = gain.factor.reshape(1, -1)
    sums *= g
    sumsq *= g * g
