"""Frame corrections of parse.py: bad pixels (3 x 3 median), flat-field, background from empty areas.

Arrays are (frame, y, x); counts are photons per pixel per exposure as the detector wrote them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..config import InsituConfig
from ..exceptions import RunDataError


@dataclass
class Flatfield:
    """The normalised flat-field response (median 1; 1 at bad pixels) and the bad pixels it shows."""

    response: np.ndarray  # (y, x) float32, detector sensitivity relative to the median pixel
    bad: np.ndarray  # (y, x) bool: dead or hot pixels
    frames: int


def make_flatfield(frames: np.ndarray, good_range: tuple[float, float]) -> Flatfield:
    """From flat-field frames (frame, y, x): pixels whose summed response is outside good_range x median are bad."""
    total = frames.sum(axis=0, dtype=np.float64)
    positive = total[total > 0]
    if positive.size == 0:
        raise RunDataError("the flat-field frames have no counts")
    rel = total / np.median(positive)
    bad = (rel < good_range[0]) | (rel > good_range[1])
    response = np.where(bad, 1.0, rel).astype(np.float32)
    return Flatfield(response=response, bad=bad, frames=len(frames))


def bad_pixels(raw: np.ndarray, static_bad: np.ndarray, count_cutoff: int | None) -> np.ndarray:
    """(frame, y, x) bool: flat-field bad pixels, negative values (the detector's gap / bad marks), saturated pixels."""
    bad = raw < 0
    if count_cutoff is not None:
        bad |= raw >= count_cutoff
    return bad | static_bad


def median_replace(raw: np.ndarray, bad: np.ndarray, mode: str) -> np.ndarray:
    """The 3 x 3 median filter: every pixel (mode all), or only bad pixels (mode bad_pixels); float32 out."""
    frames = raw.astype(np.float32)
    if mode == "none" or (mode == "bad_pixels" and not bad.any()):
        return frames
    # size (1, 3, 3): each frame on its own; edges repeat the nearest pixel.
    from scipy import ndimage  # (imported where used, as the other scipy and matplotlib imports)

    filtered = ndimage.median_filter(frames, size=(1, 3, 3), mode="nearest")
    if mode == "all":
        return filtered
    return np.where(bad, filtered, frames)


def background_per_frame(images: np.ndarray, ins: InsituConfig) -> np.ndarray:
    """(frame,) mean counts per pixel in the configured empty areas; zeros if none are configured."""
    if not ins.background_regions:
        return np.zeros(len(images), dtype=np.float64)
    ny, nx = images.shape[1:]
    total = np.zeros(len(images), dtype=np.float64)
    npix = 0
    for r in ins.background_regions:
        if r.y[1] > ny or r.x[1] > nx:
            raise RunDataError(f"background region y={list(r.y)} x={list(r.x)} lies outside the "
                               f"detector image of {ny} x {nx} pixels (insitu.background_regions)")
        total += images[:, r.slices[0], r.slices[1]].sum(axis=(1, 2), dtype=np.float64)
        npix += r.npixels
    return total / npix


def correct_frames(raw: np.ndarray, flat: Flatfield, ins: InsituConfig,
                   count_cutoff: int | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(corrected images float32, background per frame, bad pixels per frame) of a block of raw frames.

    Order as in the seed's parse.py: median filter of the bad pixels, division by the flat-field
    response, subtraction of the background measured in the empty areas.
    """
    if raw.shape[1:] != flat.response.shape:
        raise RunDataError(f"frames of {raw.shape[1]} x {raw.shape[2]} pixels but a flat-field of "
                           f"{flat.response.shape[0]} x {flat.response.shape[1]}")
    bad = bad_pixels(raw, flat.bad, count_cutoff)
    images = median_replace(raw, bad, ins.median_filter)
    images /= flat.response
    background = background_per_frame(images, ins)
    images -= background[:, None, None].astype(np.float32)
    return images, background, bad.sum(axis=(1, 2))
