"""The scan variable: one value per train (for example the pump-probe delay), binned into scan points."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .config import Binning


@dataclass
class ScanBins:
    """Per train (``train_id`` ascending): the value and its scan point (-1: not used); with per-pulse values
    (the laser delay corrected by the BAM) also per X-ray pulse of each train."""

    train_id: np.ndarray  # (trains,) uint64
    value: np.ndarray  # (trains,) float64, in the scan variable's units
    bin_index: np.ndarray  # (trains,) int64, -1 where the value fits no scan point
    centres: np.ndarray  # (scan points,) float64
    pulse_value: np.ndarray | None = None  # (trains, X-ray pulses) float64; NaN: no such pulse
    pulse_bin: np.ndarray | None = None  # (trains, X-ray pulses) int64, -1: no scan point

    @property
    def nbins(self) -> int:
        return len(self.centres)

    def trains_per_bin(self) -> np.ndarray:
        b = self.bin_index[self.bin_index >= 0]
        return np.bincount(b, minlength=self.nbins)

    def bins_of(self, train_ids: np.ndarray, slot: np.ndarray | None = None) -> np.ndarray:
        """Scan point of each given frame's train, -1 for trains without a (binned) value; with per-pulse
        values and ``slot`` (each frame's X-ray pulse, -1: a dark frame), of its pulse (a dark frame: its train's)."""
        train = lookup_rows(self.train_id, train_ids, self.bin_index)
        if self.pulse_bin is None or slot is None:
            return train
        row = lookup_rows(self.train_id, train_ids, np.arange(len(self.train_id)))
        slot = np.asarray(slot, np.int64)
        pulsed = (row >= 0) & (slot >= 0) & (slot < self.pulse_bin.shape[1])
        out = np.where(slot >= 0, -1, train)
        out[pulsed] = self.pulse_bin[row[pulsed], slot[pulsed]]
        return out


def lookup_rows(sorted_keys: np.ndarray, keys: np.ndarray, values: np.ndarray, missing=-1) -> np.ndarray:
    """``values[i]`` where ``sorted_keys[i] == key`` for each key; ``missing`` where absent."""
    keys = np.asarray(keys, dtype=sorted_keys.dtype)
    if len(sorted_keys) == 0:
        return np.full(len(keys), missing, dtype=np.asarray(values).dtype)
    idx = np.searchsorted(sorted_keys, keys)
    idx_c = np.minimum(idx, len(sorted_keys) - 1)
    found = (idx < len(sorted_keys)) & (sorted_keys[idx_c] == keys)
    return np.where(found, np.asarray(values)[idx_c], missing)


def bin_scan_values(train_ids: np.ndarray, values: np.ndarray, binning: Binning) -> ScanBins:
    """Assign each train's value to a scan point as the config says (bin_width, nbins or values).

    - ``bin_width``: scan points at whole multiples of the width; a value goes to the nearest.
    - ``nbins``: equal-width bins spanning the run's smallest to largest value; centres.
    - ``values``: the listed values; a train further than ``tolerance`` from all is dropped.
    - ``edges``: bins between the edges; centres; values outside are dropped.
    - ``auto``: the scan's steps found from the values (:func:`find_steps`).
    NaN values are dropped.
    """
    order = np.argsort(train_ids, kind="stable")
    tids = np.asarray(train_ids, dtype=np.uint64)[order]
    v = np.asarray(values, dtype=np.float64)[order]
    idx, centres = bin_values(v, binning)
    return ScanBins(tids, v, idx, centres)


def bin_values(v: np.ndarray, binning: Binning) -> tuple[np.ndarray, np.ndarray]:
    """(scan point of each value, -1: none; the scan points) of values in time order, as
    :func:`bin_scan_values` says."""
    finite = np.isfinite(v)
    idx = np.full(len(v), -1, dtype=np.int64)
    if binning.auto:
        centres, idx[finite] = find_steps(v[finite], binning.resolution, binning.min_trains)
    elif binning.bin_width is not None:
        w = binning.bin_width
        labels = np.rint(v[finite] / w).astype(np.int64)
        uniq, inv = np.unique(labels, return_inverse=True)
        idx[finite] = inv
        centres = uniq * w
    elif binning.nbins is not None:
        n = binning.nbins
        lo, hi = (v[finite].min(), v[finite].max()) if finite.any() else (0.0, 1.0)
        if hi == lo:
            hi = lo + 1.0
        edges = np.linspace(lo, hi, n + 1)
        idx[finite] = np.clip(np.searchsorted(edges, v[finite], side="right") - 1, 0, n - 1)
        centres = 0.5 * (edges[:-1] + edges[1:])
    elif binning.edges is not None:
        edges = np.asarray(binning.edges, dtype=np.float64)
        n = len(edges) - 1
        pos = np.searchsorted(edges, v[finite], side="right") - 1
        pos[v[finite] == edges[-1]] = n - 1
        idx[finite] = np.where((pos >= 0) & (pos < n), pos, -1)
        centres = 0.5 * (edges[:-1] + edges[1:])
    else:
        centres = np.unique(np.asarray(binning.values, dtype=np.float64))
        near = np.abs(v[finite, None] - centres[None, :])
        best = near.argmin(axis=1)
        ok = near[np.arange(len(best)), best] <= binning.tolerance
        idx[np.flatnonzero(finite)[ok]] = best[ok]
    return idx, np.asarray(centres, dtype=np.float64)


def bin_pulses(scan: ScanBins, pulse_value: np.ndarray, binning: Binning) -> ScanBins:
    """The scan points of per-pulse values (trains, pulses) beside the trains' values: both binned together
    (the scan points are those of all values), the trains' for the frames without a pulse."""
    v = np.concatenate([scan.value, pulse_value.ravel()])
    idx, centres = bin_values(v, binning)
    n = len(scan.value)
    return ScanBins(scan.train_id, scan.value, idx[:n], centres, pulse_value, idx[n:].reshape(pulse_value.shape))


def guess_resolution(values: np.ndarray) -> float | None:
    """Half the typical step of a scan's values (None: the values do not step).

    The differences between neighbouring trains are the jitter within steps and the moves between
    them: the moves are the differences further than 5 robust standard deviations (1.4826 x the
    median absolute difference) from zero, the step the median of their sizes. (EXtra's Scan takes
    a weighted mean of the differences within 2 standard deviations of their mean instead, which a
    jittering motor turns into the jitter's scale.)
    """
    diff = np.diff(values)
    diff = diff[np.isfinite(diff)]
    if diff.size == 0:
        return None
    jitter = 1.4826 * np.median(np.abs(diff))
    moves = np.abs(diff[np.abs(diff) > 5 * jitter])
    if moves.size == 0:
        return None
    return float(np.median(moves)) / 2


def find_steps(values: np.ndarray, resolution: float | None = None,
               min_trains: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The steps of a scan from its per-train values in train order: (step positions ascending, step of each
    train, -1 for none).

    As EXtra's ``Scan`` component finds them (the resolution guessed more robustly: :func:`guess_resolution`):
    a step starts at a value and takes the following trains
    within ``resolution`` of it; in each step the trains further than one standard deviation from its mean
    are let go, a step left with fewer than ``min_trains`` is dropped, and a step then spans its first to
    its last train, its position their mean value; a first step moving the other way than the next one
    is the motor's backlash and is dropped. Unlike EXtra, a run that does not step (a non-scan run, or
    one step) is one scan point of every train, and steps at the same position (a scan there and back)
    are one scan point.
    """
    n = len(values)
    one = (np.array([float(values.mean())]), np.zeros(n, np.int64)) if n else (np.zeros(0), np.zeros(0, np.int64))
    resolution = guess_resolution(values) if resolution is None else resolution
    if resolution is None or n == 0:
        return one
    starts = [0]  # a step's first train; runs of trains within resolution of that train's value
    for i in range(1, n):
        if abs(values[i] - values[starts[-1]]) >= resolution:
            starts.append(i)
    bounds = np.append(starts, n)
    if min_trains is None:
        lengths = np.diff(bounds)
        lengths = lengths[lengths > 1]
        min_trains = int(max(2, lengths.mean() // 2)) if lengths.size else 2
    steps = []  # (first train, last train) of the steps kept
    for a, b in zip(bounds[:-1], bounds[1:]):
        v = values[a:b]
        kept = np.flatnonzero(np.abs(v - v.mean()) <= v.std())
        if len(kept) >= min_trains:
            steps.append((a + kept[0], a + kept[-1]))
    positions = [float(values[a:b + 1].mean()) for a, b in steps]
    if len(steps) >= 3 and np.sign(positions[1] - positions[0]) != np.sign(positions[2] - positions[1]):
        steps, positions = steps[1:], positions[1:]
    if len(steps) < 2:
        return one
    # Steps at the same position (within the resolution) are one scan point: the mean of their trains.
    order = np.argsort(positions, kind="stable")
    point = np.cumsum(np.r_[0, np.diff(np.asarray(positions)[order]) >= resolution])
    step_point = np.empty(len(steps), np.int64)
    step_point[order] = point
    idx = np.full(n, -1, np.int64)
    for (a, b), p in zip(steps, step_point):
        idx[a:b + 1] = p
    centres = np.array([values[idx == p].mean() for p in range(point[-1] + 1)])
    return centres, idx


def write_scan_bins(path, scan: ScanBins, units: str, attrs: dict) -> None:
    """Write the scan_variable output: per-train values and scan points, and the scan points."""
    from .outputs import atomic_h5

    with atomic_h5(path) as f:
        f["train_id"] = scan.train_id
        f["value"] = scan.value
        f["value"].attrs["units"] = units
        f["bin_index"] = scan.bin_index
        f["centres"] = scan.centres
        f["centres"].attrs["units"] = units
        f["trains_per_bin"] = scan.trains_per_bin()
        if scan.pulse_bin is not None:
            f["pulse_value"] = scan.pulse_value
            f["pulse_value"].attrs.update(units=units, axes="train_id, X-ray pulse")
            f["pulse_bin"] = scan.pulse_bin
        f.attrs.update(attrs)
        f.attrs["units"] = units


def read_scan_bins(path) -> tuple[ScanBins, str]:
    """(the scan points, their units) from a scan_variable output."""
    import h5py

    from .exceptions import MissingInputError

    try:
        with h5py.File(path, "r") as f:
            pulses = (f["pulse_value"][()], f["pulse_bin"][()]) if "pulse_bin" in f else (None, None)
            return ScanBins(f["train_id"][()], f["value"][()], f["bin_index"][()], f["centres"][()],
                            *pulses), str(f.attrs["units"])
    except FileNotFoundError:
        raise MissingInputError(f"{path} does not exist: materialize scan_variable for this run first") from None
