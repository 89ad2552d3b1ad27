"""Generate event-file runs with a known signal: PAL-XFEL's raw layout or a generic per-run HDF5 file.

A powder ring at q0 (in 1/Angstrom) whose radius and intensity change with the pump-probe delay
in laser-on shots: after time zero the ring shifts by RING_SHIFT and loses PUMP_DEPTH of its
intensity, building up as 1 - exp(-delay / TAU_PS). Every shot scales with its
I0 (uniform jitter of +-10 %). Planted quirks: shots with a beam dropout (I0 at 15 %), shots with
2.5 x the intensity for their I0, a saturated frame, an empty frame (no X-rays), a hot pixel, a
per-pixel pedestal that the dark run records, and (pal) shots missing from the QBPM's or the
metadata's timestamp list. Each shot has a timing-tool value (fs) that the delay is corrected by.

Units: detector ADU (1 photon = 1 ADU here), delays in ps, timing tool in fs, q in 1/Angstrom.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import pandas as pd

from ..azimuthal import integrator
from ..config import GeometryConfig
from .config import write_config

SHAPE = (192, 256)
GEOMETRY = {"distance_m": 0.08, "pixel_size_m": [75e-6, 75e-6], "beam_centre_px": [90.0, 120.0],
            "energy_kev": 9.7, "npt": 120, "unit": "q_A^-1"}
DELAYS_PS = (-1.0, 0.0, 0.5, 1.0, 2.0, 4.0)
Q0 = 0.40  # ring position, 1/A
RING_WIDTH = 0.012  # 1/A (sigma)
RING_SHIFT = -0.010  # 1/A, full pump effect on the position
PUMP_DEPTH = 0.3  # full pump effect on the intensity
TAU_PS = 1.0
RING_PEAK = 60.0  # photons per pixel at the ring maximum for the nominal I0
BACKGROUND = 2.0  # photons per pixel per shot
I0_NOMINAL = 1000.0
PEDESTAL = 100.0  # ADU, per-pixel offset (+-10) that the dark run records
SATURATION = 60000.0
HOT_ADU = 5000.0
PAL_HUTCH, PAL_DETECTOR, PAL_QBPM = "eh1", "jungfrau2", "qbpm1"
GENERIC_PATHS = {"images": "entry/data/images", "timestamps": "entry/data/timestamp", "i0": "entry/monitor/i0",
                 "scan": "entry/scan/delay", "laser": "entry/laser/on", "timing_tool": "entry/timing/tt_fs"}


@dataclass
class EventTruth:
    """What was generated, per written event (in file order) and per planted quirk."""

    timestamp: np.ndarray
    delay: np.ndarray  # nominal, ps
    timing_tool_fs: np.ndarray
    laser: np.ndarray  # bool
    i0: np.ndarray
    outliers: dict[str, np.ndarray]  # quirk -> timestamps
    hot_pixel: tuple[int, int]
    dropped: dict[str, np.ndarray]  # timestamps missing from "i0" or "metadata" (pal)

    def ring_q(self, delay: np.ndarray, laser: np.ndarray) -> np.ndarray:
        return Q0 + RING_SHIFT * pump(delay) * laser


def pump(delay_ps: np.ndarray) -> np.ndarray:
    """Pump effect 0..1: none before time zero, building up with TAU_PS after it."""
    d = np.asarray(delay_ps, dtype=np.float64)
    return np.where(d > 0, 1.0 - np.exp(-np.clip(d, 0, None) / TAU_PS), 0.0)


def _q_map(shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    geom = GeometryConfig.model_validate(dict(GEOMETRY))
    ai = integrator(geom)
    return (ai.array_from_unit(shape, "center", "q_A^-1", scale=True).astype(np.float64),
            ai.solidAngleArray(shape).astype(np.float64))


def _images(rng, shape, q, solid, pedestal, delay, laser, i0, scale) -> np.ndarray:
    """(k, y, x) float32 ADU: Poisson photons of ring + background, times I0, plus pedestal and noise."""
    out = np.empty((len(delay),) + shape, dtype=np.float32)
    for i in range(len(delay)):  # generator only: one Poisson draw per shot
        qc = Q0 + RING_SHIFT * pump(delay[i]) * laser[i]
        amp = RING_PEAK * (1 - PUMP_DEPTH * pump(delay[i]) * laser[i])
        mean = (amp * np.exp(-0.5 * ((q - qc) / RING_WIDTH) ** 2) + BACKGROUND) * solid * i0[i] / I0_NOMINAL * scale[i]
        out[i] = rng.poisson(mean) + pedestal + rng.normal(0, 2.0, shape)
    return out


def make_events(rng, n_per_point: int, first_ts: int):
    """Per event of a run: scan point, delay, laser, I0, timing tool, timestamp, intensity scale."""
    n = n_per_point * len(DELAYS_PS)
    point = np.repeat(np.arange(len(DELAYS_PS)), n_per_point)
    delay = np.asarray(DELAYS_PS)[point]
    laser = (np.arange(n) % 2) == 0
    i0 = I0_NOMINAL * rng.uniform(0.9, 1.1, n)
    tt = rng.uniform(-150, 150, n)  # fs
    ts = first_ts + 33_333 * np.arange(n, dtype=np.int64)  # 30 Hz, microseconds
    return point, delay, laser, i0, tt, ts


def write_event_run(raw_root: Path, run_number: int, layout: str = "pal", n_per_point: int = 40,
                    shape: tuple[int, int] = SHAPE, seed: int = 0, dark: bool = False, scans: int = 1) -> EventTruth:
    """One run: pal: run=NNN/scan=SSS/pPPPP.h5, one file per scan point in each of ``scans`` scan folders (the
    shots of a point dealt round the scans); generic: rNNNN.h5. ``dark``: no X-rays."""
    rng = np.random.default_rng(seed + 1000 * run_number)
    pedestal = PEDESTAL + np.random.default_rng(seed).normal(0, 10, shape).astype(np.float32)
    hot = (shape[0] // 4, shape[1] // 5)
    q, solid = _q_map(shape)
    point, delay, laser, i0, tt, ts = make_events(rng, n_per_point, 10**12 + run_number * 10**9)
    n = len(ts)
    scale = np.zeros(n) if dark else np.ones(n)
    outliers: dict[str, np.ndarray] = {}
    if not dark:
        pick = rng.choice(n, size=6, replace=False)
        i0[pick[:2]] *= 0.15
        scale[pick[2:4]] = 2.5
        scale[pick[5]] = 0.0
        outliers = {"i0": ts[pick[:2]], "intensity": ts[pick[2:4]], "saturated": ts[pick[4:5]],
                    "empty": ts[pick[5:6]]}
    images = _images(rng, shape, q, solid, pedestal, delay, laser, i0, scale)
    images[:, hot[0], hot[1]] += HOT_ADU
    if not dark:
        sat = np.flatnonzero(np.isin(ts, outliers["saturated"]))[0]
        images[sat, 5:8, 5:8] = SATURATION + PEDESTAL + 1000

    dropped = {"i0": np.zeros(0, np.int64), "metadata": np.zeros(0, np.int64)}
    if layout == "pal" and not dark:
        lost = rng.choice(np.setdiff1d(np.arange(n), np.flatnonzero(np.isin(ts, np.concatenate(list(outliers.values()))))),
                          size=4, replace=False)
        dropped = {"i0": ts[lost[:3]], "metadata": ts[lost[3:]]}
    if layout == "pal":
        _write_pal(Path(raw_root), run_number, point, images, ts, i0, delay, laser, tt, dropped, scans)
    else:
        _write_generic(Path(raw_root), run_number, images, ts, i0, delay, laser, tt)
    return EventTruth(timestamp=ts, delay=delay, timing_tool_fs=tt, laser=laser, i0=i0, outliers=outliers,
                      hot_pixel=hot, dropped=dropped)


#: The timing system's rate flags PAL-XFEL writes per shot (``timestamp_info.RATE_HX_<rate>``): the shots of the
#: 30 Hz X-ray line fall on the 60 and 30 Hz patterns, every 2nd on 15 Hz (the pump: PUMP_RATE), every 3rd on 10 Hz.
RATES_HZ = (60, 30, 15, 10)
XRAY_HZ = 30
PUMP_RATE = "15HZ"


def rate_flags(shot: np.ndarray) -> dict[str, np.ndarray]:
    """The metadata's rate columns for shots numbered ``shot`` (0, 1, ... at XRAY_HZ)."""
    return {f"timestamp_info.RATE_HX_{r}HZ": (shot % max(XRAY_HZ // r, 1)) == 0 for r in RATES_HZ}


def _write_pal(raw_root, run_number, point, images, ts, i0, delay, laser, tt, dropped, scans) -> None:
    shot = np.arange(len(ts))
    assert np.array_equal(rate_flags(shot)[f"timestamp_info.RATE_HX_{PUMP_RATE}"], laser)
    within = shot - np.searchsorted(point, point)  # shot number within its scan point
    for s in range(scans):
        folder = raw_root / f"run={run_number:03d}" / f"scan={s + 1:03d}"
        folder.mkdir(parents=True, exist_ok=True)
        for p in np.unique(point):
            sel = np.flatnonzero((point == p) & (within % scans == s))
            path = folder / f"p{p + 1:04d}.h5"
            tmp = folder / f".{path.name}.part"
            keep_q = sel[~np.isin(ts[sel], dropped["i0"])]
            keep_m = sel[~np.isin(ts[sel], dropped["metadata"])]
            meta = pd.DataFrame({**{k: v[keep_m] for k, v in rate_flags(shot).items()},
                                 "delay_value": delay[keep_m], "tt_fs": tt[keep_m]},
                                index=pd.Index(ts[keep_m], name="timestamp"))
            meta.to_hdf(tmp, key="metadata", mode="w", format="fixed")
            with h5py.File(tmp, "a") as f:
                base = f"detector/{PAL_HUTCH}/{PAL_DETECTOR}/image"
                f.create_dataset(f"{base}/block0_values", data=images[sel], chunks=(1,) + images.shape[1:])
                f[f"{base}/block0_items"] = ts[sel]
                qb = f"qbpm/{PAL_HUTCH}/{PAL_QBPM}"
                # Four channels of 8 samples each; I0 is their sum.
                wave = np.repeat(i0[keep_q, None] / 32.0, 8, axis=1)
                for ch in range(1, 5):
                    f[f"{qb}/waveforms.ch{ch}/block0_values"] = wave
                f[f"{qb}/waveforms.ch1/axis1"] = ts[keep_q]
            os.replace(tmp, path)


def _write_generic(raw_root, run_number, images, ts, i0, delay, laser, tt) -> None:
    raw_root.mkdir(parents=True, exist_ok=True)
    path = raw_root / f"r{run_number:04d}.h5"
    tmp = raw_root / f".{path.name}.part"
    with h5py.File(tmp, "w") as f:
        g = GENERIC_PATHS
        f.create_dataset(g["images"], data=images, chunks=(1,) + images.shape[1:])
        f[g["timestamps"]] = ts
        f[g["i0"]] = i0
        f[g["scan"]] = delay
        f[g["laser"]] = laser.astype(np.uint8)
        f[g["timing_tool"]] = tt
    os.replace(tmp, path)


def demo_rois(shape: tuple[int, int] = SHAPE) -> list[dict]:
    """A ROI on the ring (right of the beam) and one on the background (a corner)."""
    q, _ = _q_map(shape)
    rows, cols = np.nonzero(np.abs(q - Q0) < 2 * RING_WIDTH)
    right = cols > np.median(cols)
    y0, y1 = int(np.percentile(rows[right], 40)), int(np.percentile(rows[right], 60)) + 1
    x0, x1 = int(cols[right].min()), int(cols[right].max()) + 1
    return [{"name": "ring", "role": "intensity", "y": [y0, y1], "x": [x0, x1]},
            {"name": "corner", "role": "intensity", "y": [0, 12], "x": [0, 12]}]


def events_config(raw_root: str, layout: str = "pal", shape: tuple[int, int] = SHAPE) -> dict:
    """The beamtime.yaml events section for demo runs (dark run 1)."""
    cfg = {
        "layout": layout,
        "raw_root": raw_root,
        "dark_run": 1,
        "rois": demo_rois(shape),
        "geometry": dict(GEOMETRY, radial_range=[0.2, 0.6]),
        "anomalies": {"saturation": SATURATION},
        "normalisation": {"by": "i0"},
        "binning": {"edges": [-1.5, -0.5, 0.1, 0.6, 1.5, 3.0, 5.0]},
        "scan_units": "ps",
        "timing_tool_scale": 1e-3,
    }
    if layout == "pal":
        cfg["pal"] = {"hutch": PAL_HUTCH, "detector": PAL_DETECTOR, "qbpm": PAL_QBPM, "xray_line": "HX",
                      "pump_rate": PUMP_RATE, "timing_tool_column": "tt_fs"}
    else:
        cfg["generic"] = dict(GENERIC_PATHS, file="r{run:04d}.h5")
    return cfg


def write_event_runs(raw: Path, layout: str = "pal", runs: int = 2, n_per_point: int = 40, seed: int = 0) -> None:
    """A dark run 1 and ``runs`` data runs 2, 3, ... of event files under ``raw``."""
    write_event_run(raw, 1, layout, n_per_point=5, seed=seed, dark=True)
    for r in range(runs):
        write_event_run(raw, 2 + r, layout, n_per_point=n_per_point, seed=seed)


def write_demo_events(root: Path, layout: str = "pal", runs: int = 2, n_per_point: int = 40, seed: int = 0) -> Path:
    """An event-file demo beamtime: a dark run 1 and ``runs`` data runs under <root>/raw/events; beamtime.yaml (kept if present)."""

    root = Path(root)
    write_event_runs(root / "raw" / "events", layout, runs, n_per_point, seed)
    path = root / "beamtime.yaml"
    if path.exists():
        return path
    return write_config(root, {"name": root.name, "raw_root": "raw", "processed_root": "processed",
                               "events": events_config("raw/events", layout)})
