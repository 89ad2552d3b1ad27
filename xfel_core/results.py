"""Open the reduced outputs by run number or sample name: the entry point of the notebooks.

    from xfel_core import results
    cube = results.binned_cube(2)                 # run r0002's binned cube (xarray)
    events = results.event_smalldata(2)           # per-shot small data of event run r0002
    series = results.attenuation_corrected_series("GaN01")   # pandas, one row per frame

The beamtime is the one named by $XFEL_BEAMTIME unless a config or YAML path is given; outputs
are found where the pipeline writes them, so no notebook holds a path.
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import xarray as xr

from .config import BeamtimeConfig, beamtime_path_from_env, load_beamtime, run_key
from .exceptions import MissingInputError

Beamtime = BeamtimeConfig | str | os.PathLike | None


def beamtime(cfg: Beamtime = None) -> BeamtimeConfig:
    """The beamtime config: given, loaded from a YAML path, or the one named by $XFEL_BEAMTIME."""
    if isinstance(cfg, BeamtimeConfig):
        return cfg
    return load_beamtime(cfg if cfg is not None else beamtime_path_from_env())


def _run(run: int | str) -> str:
    return run if isinstance(run, str) else run_key(run)


def _existing(path: Path, asset: str, key: str) -> Path:
    if not path.exists():
        raise MissingInputError(f"{path} does not exist: materialize {asset} [{key}] first "
                                f"(xfel-assets materialize, or the web UI)")
    return path


def binned_cube(run: int | str, cfg: Beamtime = None) -> xr.Dataset:
    """A DSSC run's binned cube: mean, sum, sum of squares, counts per (scan_variable, frame_type, module, y, x)."""
    c = beamtime(cfg)
    path = _existing(c.output_path(_run(run), "binned_cube"), "binned_cube", _run(run))
    return xr.load_dataset(path, engine="h5netcdf")


def event_smalldata(run: int | str, cfg: Beamtime = None) -> xr.Dataset:
    """Per-event small data of a run of event files (first dimension ``event``)."""
    from .events.pipeline import SMALLDATA_FILE, output_path

    c = beamtime(cfg)
    path = _existing(output_path(c, _run(run), SMALLDATA_FILE), "event_smalldata", _run(run))
    return xr.load_dataset(path, engine="h5netcdf")


def attenuation_corrected_series(sample: str, cfg: Beamtime = None) -> pd.DataFrame:
    """An in-situ sample's stitched, attenuation-corrected series (one row per frame; attributes in ``.attrs``)."""
    from .insitu.layout import output_dir
    from .insitu.pipeline import SERIES_FILE
    from .outputs import read_attrs

    c = beamtime(cfg)
    path = _existing(output_dir(c, sample) / SERIES_FILE, "attenuation_corrected_series", sample)
    table = pd.read_parquet(path)
    table.attrs.update(read_attrs(path))
    return table


def attenuation_changes(sample: str, cfg: Beamtime = None) -> pd.DataFrame:
    """The attenuator changes found in a sample's series, with nominal and measured factors."""
    from .insitu.layout import output_dir

    c = beamtime(cfg)
    return pd.read_parquet(_existing(output_dir(c, sample) / "attenuation_changes.parquet",
                                     "attenuation_corrected_series", sample))
