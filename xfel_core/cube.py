"""Join the per-module sums of a run into the binned cube (an xarray Dataset written as HDF5).

Dimensions: (scan_variable, frame_type, module, y, x). Variables: ``mean`` and ``sem``
(standard error of the mean) in ADU, ``count`` (frames averaged), with corrected data
``pixel_count`` (the frames each pixel was averaged over: its masked frames left out; cubes
without it, as before, average every pixel over ``count``), and, where the frame
pattern has both "pumped" and "unpumped", ``difference`` = mean(pumped) - mean(unpumped)
with ``difference_sem``. Means are per frame: every kept frame weighs the same.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import xarray as xr

from .binning_kernel import finalize
from .euxfel.preprocess import read_module_sums
from .exceptions import RunDataError
from .outputs import atomic_path


def build_cube(module_files: dict[int, Path], trains_per_bin: np.ndarray | None, units: str,
               attrs: dict | None = None) -> xr.Dataset:
    """Read every module's sums and make the cube; modules must share scan points and frame types."""
    return cube_from_sums({m: read_module_sums(module_files[m]) for m in sorted(module_files)}, trains_per_bin,
                          units, attrs, {m: str(p) for m, p in module_files.items()})


def cube_from_sums(sums: dict[int, dict], trains_per_bin: np.ndarray | None, units: str,
                   attrs: dict | None = None, names: dict[int, str] | None = None,
                   value_units: str = "ADU") -> xr.Dataset:
    """The cube from per-module sums: {module: {"sum", "sumsq" (bins, types, y, x), "count" (bins, types),
    "scan_variable" (bins,), "frame_type" [types]}}; ``trains_per_bin`` becomes ``trains``."""
    modules = sorted(sums)
    names = names or {m: f"module {m}" for m in modules}
    first = None
    mean = sem = count = pixel_count = None
    per_pixel = any("pixel_count" in d for d in sums.values())
    for i, m in enumerate(modules):
        d = sums[m]
        if first is None:
            first = d
            nb, nt = d["count"].shape
            shape = (nb, nt, len(modules)) + d["sum"].shape[2:]
            mean = np.empty(shape, np.float32)
            sem = np.empty(shape, np.float32)
            count = np.zeros((nb, nt, len(modules)), np.int64)
            if per_pixel:
                pixel_count = np.zeros(shape, np.int32)
        elif not (np.array_equal(d["scan_variable"], first["scan_variable"]) and d["frame_type"] == first["frame_type"]
                  and d["sum"].shape == first["sum"].shape):
            raise RunDataError(f"{names[m]} was made with other scan points, frame types or module "
                               f"shape than {names[modules[0]]}; rematerialize the run's modules")
        n = d["pixel_count"] if "pixel_count" in d else d["count"]
        mu, se = finalize(d["sum"], d["sumsq"], n)
        mean[:, :, i] = mu
        sem[:, :, i] = se
        count[:, :, i] = d["count"]
        if per_pixel:
            pixel_count[:, :, i] = np.broadcast_to(n.reshape(n.shape + (1,) * (4 - n.ndim)), mu.shape)

    ftypes = first["frame_type"]
    ny, nx = mean.shape[-2:]
    coords = {
        "scan_variable": ("scan_variable", first["scan_variable"], {"units": units, "long_name": "scan point"}),
        "frame_type": ("frame_type", np.array(ftypes, dtype=object)),
        "module": ("module", np.array(modules, dtype=np.int64)),
        "y": ("y", np.arange(ny), {"units": "pixel", "long_name": "slow-scan pixel index"}),
        "x": ("x", np.arange(nx), {"units": "pixel", "long_name": "fast-scan pixel index"}),
    }
    dims5 = ("scan_variable", "frame_type", "module", "y", "x")
    data = {
        "mean": (dims5, mean, {"units": value_units, "long_name": "mean dark-subtracted intensity per frame"}),
        "sem": (dims5, sem, {"units": value_units, "long_name": "standard error of the mean"}),
        "count": (dims5[:3], count, {"units": "frames", "long_name": "frames averaged"}),
    }
    if per_pixel:
        data["pixel_count"] = (dims5, pixel_count, {"units": "frames", "long_name": "frames averaged per pixel "
                                                    "(masked pixels of corrected data left out)"})
    if trains_per_bin is not None:
        data["trains"] = (("scan_variable",), np.asarray(trains_per_bin, np.int64),
                          {"units": "trains", "long_name": "trains with this scan point"})
    if "pumped" in ftypes and "unpumped" in ftypes:
        p, u = ftypes.index("pumped"), ftypes.index("unpumped")
        dims4 = ("scan_variable", "module", "y", "x")
        data["difference"] = (dims4, mean[:, p] - mean[:, u],
                              {"units": value_units, "long_name": "pumped minus unpumped mean"})
        data["difference_sem"] = (dims4, np.hypot(sem[:, p], sem[:, u]),
                                  {"units": value_units, "long_name": "standard error of the difference"})
    return xr.Dataset(data, coords=coords, attrs=attrs or {})


def write_cube(path: Path, ds: xr.Dataset) -> None:
    """Write the cube as HDF5 (netCDF4 flavour) that ``xarray.open_dataset(path, engine="h5netcdf")`` opens."""
    with atomic_path(path) as tmp:
        ds.to_netcdf(tmp, engine="h5netcdf", invalid_netcdf=False)


