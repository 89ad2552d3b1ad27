"""Azimuthal (radial) integration of a whole stack of images with one sparse matrix, geometry from pyFAI.

pyFAI gives each pixel's radial position (q, 2theta or r) and its solid angle from the config's
geometry. The profile of an image is, per radial bin, the sum of its unmasked pixels divided by
the sum of their (relative) solid angles: pyFAI's ``integrate1d`` with no pixel splitting
(``method=("no", "histogram", "cython")``, ``correctSolidAngle=True``), which the tests check;
the bins are pyFAI's (its upper bound raised by one float32 epsilon); one difference: pyFAI also
counts pixels up to one bin below the range in the first bin (its bin index is truncated towards
zero), here they are left out.
As a (bins x pixels) sparse matrix it applies to a block of images in one product, with no
Python loop over images.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import TYPE_CHECKING

import h5py
import numpy as np

from .config import ExtraGeomLayout, GeometryConfig
from .exceptions import ConfigError

if TYPE_CHECKING:
    import scipy.sparse as sp
    from pyFAI.integrator.azimuthal import AzimuthalIntegrator

#: pyFAI's method equivalent to this integration (no pixel splitting, histogram).
PYFAI_METHOD = ("no", "histogram", "cython")


def integrator(geom: GeometryConfig, shape: tuple[int, int] | None = None) -> AzimuthalIntegrator:
    """pyFAI's integrator for the geometry: the PONI file's, else the PONI at the beam centre with the detector
    normal to the beam. ``shape``: the images' (y, x), checked against a PONI file's detector."""
    # Imported here: pyFAI takes 2-3 s to import, which every process loading the definitions
    # (commands, code servers, sensors) would pay; the run workers' forkserver imports it once.
    from pyFAI.integrator.azimuthal import AzimuthalIntegrator

    if geom.poni_file is not None:
        return _poni_integrator(geom, shape)
    if geom.extra_geom is not None:
        return AzimuthalIntegrator(dist=geom.distance_m, poni1=0.0, poni2=0.0, wavelength=geom.wavelength,
                                   detector=_extra_geom_detector(geom.extra_geom.model_dump_json()))
    py, px = geom.pixel_size_m
    cy, cx = geom.beam_centre_px
    # pyFAI's poni is the position (m) of the beam's foot from the detector's first pixel corner.
    return AzimuthalIntegrator(dist=geom.distance_m, poni1=(cy + 0.5) * py, poni2=(cx + 0.5) * px,
                               pixel1=py, pixel2=px, wavelength=geom.wavelength)


@functools.lru_cache(maxsize=4)
def _extra_geom_detector(layout_json: str):
    """extra-geom's pyFAI detector (every pixel's corners, the beam at the origin) of a layout (made once per process)."""
    import extra_geom

    layout = ExtraGeomLayout.model_validate_json(layout_json)
    cls = {"DSSC_1M": extra_geom.DSSC_1MGeometry}[layout.detector]
    quads = [tuple(q) for q in layout.quadrant_positions_mm]
    if layout.geometry_file is None:
        g = cls.from_quad_positions(quads)
    else:
        try:
            g = cls.from_h5_file_and_quad_positions(str(layout.geometry_file), quads)
        except (OSError, KeyError) as e:
            raise ConfigError(f"geometry.extra_geom.geometry_file {layout.geometry_file}: not a {layout.detector} "
                              f"geometry file extra-geom reads ({e})") from None
    return g.to_pyfai_detector()


def unit_scale(unit: str) -> float:
    """pyFAI's factor from its internal radial unit to ``unit`` (0.1 for q_A^-1: it computes q in 1/nm)."""
    from pyFAI.units import to_unit

    return float(to_unit(unit).scale)


@functools.lru_cache(maxsize=4)
def _extra_geom_arrays(geom_json: str) -> tuple[np.ndarray, np.ndarray]:
    """(positions in pyFAI's internal unit of geom.unit, relative solid angles), (modules x rows, columns)."""
    geom = GeometryConfig.model_validate_json(geom_json)
    ai = integrator(geom)
    shape = ai.detector.max_shape
    return ai.center_array(shape, unit=geom.unit, scale=False), ai.solidAngleArray(shape)


def pixel_arrays(geom: GeometryConfig, shape: tuple[int, int], module: int | None = None,
                 scale: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """(radial position in ``geom.unit``, relative solid angle) of each pixel of images of ``shape`` (y, x):
    with ``geometry.extra_geom``, of that detector's module ``module``. ``scale=False``: the positions in
    pyFAI's internal unit (divided by :func:`unit_scale`), as pyFAI bins them."""
    factor = unit_scale(geom.unit) if scale else 1.0
    if geom.extra_geom is None:
        ai = integrator(geom, shape)
        return ai.center_array(shape, unit=geom.unit, scale=False) * factor, ai.solidAngleArray(shape)
    if module is None:
        raise ConfigError("geometry.extra_geom places the modules of a European XFEL detector: it is for the DSSC "
                          "small data (smalldata.geometry), not for single images")
    pos, solid = _extra_geom_arrays(geom.model_dump_json())
    rows = pos.shape[0] // 16
    if tuple(shape) != (rows, pos.shape[1]):
        raise ConfigError(f"geometry.extra_geom: a {geom.extra_geom.detector} module has {(rows, pos.shape[1])} "
                          f"pixels, the images {tuple(shape)}")
    return pos[module * rows:(module + 1) * rows] * factor, solid[module * rows:(module + 1) * rows]


def _poni_integrator(geom: GeometryConfig, shape: tuple[int, int] | None) -> AzimuthalIntegrator:
    import pyFAI

    path = geom.poni_file
    if not path.is_file():
        raise ConfigError(f"geometry.poni_file {path} does not exist")
    # pyFAI reads any text as a PONI file, taking defaults for what it lacks: the calibration's keys must be there.
    lines = path.read_text(errors="replace").splitlines()
    keys = {ln.split(":", 1)[0].strip().lower() for ln in lines if ":" in ln and not ln.lstrip().startswith("#")}
    missing = [k for k in ("Distance", "Poni1", "Poni2") if k.lower() not in keys]
    if missing:
        raise ConfigError(f"geometry.poni_file {path}: not a PONI file pyFAI reads (no {', '.join(missing)})")
    try:
        ai = pyFAI.load(str(path))
    except Exception as e:  # pyFAI raises what its parsers raise: a file it cannot read is a config error here
        raise ConfigError(f"geometry.poni_file {path}: not a PONI file pyFAI reads ({type(e).__name__}: {e})") from None
    if geom.wavelength is not None:
        ai.wavelength = geom.wavelength
    elif not ai.wavelength:
        raise ConfigError(f"geometry.poni_file {path} has no wavelength: give geometry.energy_kev or wavelength_m")
    det = ai.detector.max_shape
    if shape is not None and det is not None and tuple(det) != tuple(shape):
        raise ConfigError(f"geometry.poni_file {path}: its detector ({ai.detector.name}) has {tuple(det)} pixels, "
                          f"the images {tuple(shape)}")
    return ai


def read_mask(geom: GeometryConfig, shape: tuple[int, int]) -> np.ndarray:
    """(y, x) bool, True where masked; all False without a mask file."""
    if geom.mask_file is None:
        return np.zeros(shape, dtype=bool)
    try:
        with h5py.File(geom.mask_file, "r") as f:
            mask = f[geom.mask_dataset][()] != 0
    except (OSError, KeyError) as e:
        raise ConfigError(f"geometry.mask_file {geom.mask_file}: cannot read dataset {geom.mask_dataset!r} ({e})") from None
    if mask.shape != shape:
        raise ConfigError(f"geometry.mask_file {geom.mask_file}: mask of {mask.shape} pixels, images have {shape}")
    return mask


@dataclass
class RadialIntegrator:
    """Radial profiles of image stacks: ``profiles(images)`` -> (images, npt)."""

    norm: np.ndarray  # (npt,) sum of the relative solid angles of each bin's pixels
    bin_of: np.ndarray  # (pixels,) int32 bin of each pixel; -1: masked or outside the range
    solid: np.ndarray  # (pixels,) relative solid angle of each pixel
    radial: np.ndarray  # (npt,) bin centres in `unit`
    edges: np.ndarray  # (npt + 1,)
    unit: str

    @functools.cached_property
    def matrix(self) -> sp.csr_matrix:
        """(npt, pixels) 0/1 sparse matrix of the binning (solid-angle weights are in norm, not here)."""
        import scipy.sparse as sp  # here: not paid by every process that loads the pipeline

        pixels = np.flatnonzero(self.bin_of >= 0)
        return sp.csr_matrix((np.ones(len(pixels), dtype=np.float32), (self.bin_of[pixels], pixels)),
                             shape=(len(self.norm), self.bin_of.size))

    def without(self, pixels: np.ndarray) -> RadialIntegrator:
        """The integrator with these pixels (a (y, x) or flat bool mask) masked too."""
        drop = np.asarray(pixels, bool).reshape(-1) & (self.bin_of >= 0)
        bin_of = np.where(drop, -1, self.bin_of).astype(np.int32)
        norm = self.norm - np.bincount(self.bin_of[drop], weights=self.solid[drop], minlength=len(self.norm))
        return RadialIntegrator(norm=norm, bin_of=bin_of, solid=self.solid, radial=self.radial, edges=self.edges,
                                unit=self.unit)

    def profiles(self, images: np.ndarray) -> np.ndarray:
        """(k, npt) float64 profiles of (k, y, x) images; NaN in bins without pixels."""
        flat = images.reshape(len(images), -1)
        sums = (self.matrix @ flat.T).T
        return self.from_sums(sums)

    def from_sums(self, sums: np.ndarray) -> np.ndarray:
        """(k, npt) profiles from the (k, npt) sums of each bin's pixels; NaN in bins without pixels."""
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(self.norm > 0, sums / self.norm, np.nan)


def radial_integrator(geom: GeometryConfig, shape: tuple[int, int], mask: np.ndarray,
                      module: int | None = None) -> RadialIntegrator:
    """The sparse radial integrator of the geometry for images of ``shape`` (of ``module`` with extra_geom),
    masked pixels left out."""
    # Positions as pyFAI's histogram bins them (its center_array: float64, in its internal unit, 1/nm for
    # q_A^-1), so that a pixel near a bin edge lands where pyFAI puts it.
    pos, solid = pixel_arrays(geom, shape, module, scale=False)
    pos = pos.astype(np.float64).ravel()
    solid = solid.astype(np.float64).ravel()
    good = ~mask.ravel()
    factor = unit_scale(geom.unit)
    if geom.radial_range is not None:
        lo, hi = geom.radial_range[0] / factor, geom.radial_range[1] / factor
    else:  # pyFAI's range without radial_range: every pixel's (masked ones too)
        lo, hi = pos.min(), pos.max()
    if not hi > lo:
        raise ConfigError(f"geometry.radial_range {[lo * factor, hi * factor]} is empty")
    # pyFAI's bins: its upper bound raised by one float32 epsilon (so the largest position falls inside), the
    # width (upper - lo) / npt and a pixel's bin (r - lo) / width, in float64 (pyFAI's calc_upper_bound and
    # get_bin_number). Pixels below lo are left out (pyFAI truncates towards zero: see the module docstring).
    eps = float(np.finfo(np.float32).eps)
    upper = hi * (1.0 + eps) if hi > 0 else hi * (1.0 - eps)
    width = (upper - lo) / geom.npt
    edges = (lo + width * np.arange(geom.npt + 1)) * factor
    b = np.floor((pos - lo) / width).astype(np.int64)
    use = good & (b >= 0) & (b < geom.npt)
    norm = np.bincount(b[use], weights=solid[use], minlength=geom.npt)
    return RadialIntegrator(norm=norm, bin_of=np.where(use, b, -1).astype(np.int32), solid=solid,
                            radial=0.5 * (edges[:-1] + edges[1:]), edges=edges, unit=geom.unit)


def pyfai_profile(geom: GeometryConfig, image: np.ndarray, mask: np.ndarray, radial_range: tuple[float, float]) -> tuple[np.ndarray, np.ndarray]:
    """pyFAI's own integrate1d of one image with the same options (for tests and the benchmark)."""
    r = integrator(geom).integrate1d(image, geom.npt, unit=geom.unit, method=PYFAI_METHOD, mask=mask,
                                     radial_range=radial_range, correctSolidAngle=True)
    return r.radial, r.intensity


