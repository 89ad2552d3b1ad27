"""Per-run quantities that scientists write themselves: the ``@variable`` decorator, ``Skip``, and their values' files.

A beamtime names a Python file of variables (``variables: variables.py`` in beamtime.yaml)::

    from xfel_core.variables import Skip, variable

    @variable(title="XGM mean", units="uJ", workflow="euxfel")
    def xgm_mean(run):                    # run: the run's raw data (an EXtra-data DataCollection)
        return float(run["SA1_XTD2_XGM/XGM/DOOCS:output", "data.intensityTD"].ndarray()[:, :10].mean())

    @variable(title="Pump-probe at the largest delay")
    def pp_last(binned_cube):             # an asset's output by its name (an xarray Dataset)
        ...

A function asks for its inputs by parameter name (see :data:`RAW_INPUT`, the platform's per-run
assets, other variables, ``run_key`` and ``beamtime``) and returns a number, string, bool, numpy
array, xarray object or matplotlib figure, or raises :class:`Skip`. Each variable becomes an asset
of the workflow model (``xfel_core/workflows/variables.py``); this module has no Dagster import.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

#: The workflows whose runs variables can be computed for.
WORKFLOWS = ("euxfel", "events", "insitu")
#: The parameter name of a run's raw data: an EXtra-data DataCollection (euxfel), the event reader's
#: EventRun (events), the measurement's frames and headers (insitu).
RAW_INPUT = "run"
#: Parameters every variable may ask for besides its inputs: the partition key and the beamtime's config.
META_INPUTS = ("run_key", "beamtime")
#: The file attribute saying what a value is.
KINDS = ("number", "string", "bool", "array", "xarray", "dataset", "figure", "skipped")


class Skip(Exception):
    """Raised by a variable to leave its cell empty for this run, with the reason shown in the run table."""


@dataclass(frozen=True)
class Variable:
    """A user variable: its function and what the run table shows of it."""

    name: str
    func: Callable
    title: str
    units: str = ""
    description: str = ""
    workflow: str = "euxfel"
    tags: tuple[str, ...] = ()
    inputs: tuple[str, ...] = field(default=())  # parameter names, in order

    @property
    def where(self) -> str:
        """``file:line`` of its definition, for error messages."""
        code = self.func.__code__
        return f"{code.co_filename}:{code.co_firstlineno}"


def variable(title: str | None = None, *, units: str = "", description: str = "", workflow: str = "euxfel",
             tags: tuple[str, ...] | list[str] = ()) -> Callable[[Callable], Callable]:
    """Declare a function as a per-run variable of ``workflow``'s runs (``euxfel``, ``events`` or ``insitu``)."""
    import inspect

    def mark(fn: Callable) -> Callable:
        params = [p.name for p in inspect.signature(fn).parameters.values()]
        fn._xfel_variable = Variable(fn.__name__, fn, title or fn.__name__, units, description or (fn.__doc__ or "").strip(),
                                     workflow, tuple(tags), tuple(params))
        return fn

    return mark


def variables_of(module) -> list[Variable]:
    """The variables a loaded module declares, in the order of their definitions."""
    found = [v._xfel_variable for v in vars(module).values() if hasattr(v, "_xfel_variable")]
    return sorted(found, key=lambda v: v.func.__code__.co_firstlineno)


def _figure_rgba(fig) -> tuple[np.ndarray, bytes]:
    """A matplotlib figure rendered: (its RGBA image (y, x, 4) uint8, its PNG bytes)."""
    from matplotlib.image import imread

    from .plots import png

    data = png(fig)
    rgba = imread(io.BytesIO(data), format="png")
    return (np.clip(rgba, 0, 1) * 255).round().astype(np.uint8), data


def as_dataset(value: Any, var: Variable):
    """A returned value as (xarray Dataset to write, kind, PNG bytes of a figure or None); TypeError for other types."""
    import xarray as xr

    png = None
    if isinstance(value, xr.Dataset):
        return value.copy(), "dataset", None
    if isinstance(value, xr.DataArray):
        da, kind = value.rename("value"), "xarray"
    elif isinstance(value, (bool, np.bool_)):
        da, kind = xr.DataArray(bool(value), name="value"), "bool"
    elif isinstance(value, (int, float, np.integer, np.floating)):
        da, kind = xr.DataArray(value, name="value"), "number"
    elif isinstance(value, str):
        da, kind = xr.DataArray(value, name="value"), "string"
    elif isinstance(value, np.ndarray):
        da, kind = xr.DataArray(value, name="value"), "array"
    elif type(value).__name__ == "Figure" and hasattr(value, "savefig"):
        rgba, png = _figure_rgba(value)
        da, kind = xr.DataArray(rgba, dims=("y_px", "x_px", "rgba"), name="value"), "figure"
    else:
        raise TypeError(f"variable {var.name} ({var.where}) returned a {type(value).__name__}; a variable returns a "
                        "number, string, bool, numpy array, xarray object or matplotlib figure, or raises Skip")
    return da.to_dataset(), kind, png


def write_value(path: Path, ds, kind: str, attrs: dict, png: bytes | None = None) -> None:
    """Write a variable's value (a Dataset with variable ``value``, or none for a skipped run) atomically, netCDF4/HDF5."""
    from .outputs import atomic_path, write_png

    ds.attrs = {**{k: v for k, v in ds.attrs.items() if isinstance(v, (str, int, float))},
                **{k: (json.dumps(v) if isinstance(v, (list, tuple, dict)) else v) for k, v in attrs.items()},
                "kind": kind}
    if png is not None:
        write_png(path.with_suffix(".png"), png)
        ds.attrs["png"] = str(path.with_suffix(".png"))
    with atomic_path(path) as tmp:
        ds.to_netcdf(tmp, engine="h5netcdf", invalid_netcdf=True)


@dataclass
class Value:
    """A variable's value for one run as its file has it."""

    kind: str
    value: Any  # a Python scalar, a numpy array, an xarray DataArray or Dataset; None if skipped
    attrs: dict

    @property
    def skipped(self) -> str | None:
        """The Skip reason, or None."""
        return self.attrs.get("skip_reason") if self.kind == "skipped" else None


def read_value(path: Path) -> Value:
    """The value a variable's file holds (as its function returned it, a figure as its RGBA image)."""
    import xarray as xr

    with xr.open_dataset(path, engine="h5netcdf") as f:
        ds = f.load()
    kind = str(ds.attrs.get("kind", ""))
    if kind == "skipped":
        return Value(kind, None, dict(ds.attrs))
    if kind == "dataset":
        return Value(kind, ds, dict(ds.attrs))
    da = ds["value"]
    if kind in ("number", "string", "bool"):
        v = da.values[()]
        v = bool(v) if kind == "bool" else str(v) if kind == "string" else v.item()
    elif kind in ("array", "figure"):
        v = da.values
    else:
        v = da
    return Value(kind, v, dict(ds.attrs))
