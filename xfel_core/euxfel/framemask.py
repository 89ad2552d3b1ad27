"""The framemask: which frames of which trains are used (trains x frames, True: keep).

Frames at positions beyond the mask's frame axis (``maxframes``) and trains absent from it
are not processed, as in dssc_process.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..config import FramemaskConfig
from ..scan import lookup_rows

#: Why a frame was rejected, by the code stored in ``FrameMask.reason``.
REASONS = {
    0: "kept",
    1: "low pulse energy",
    2: "no pulse energy for train",
    3: "excluded train",
    4: "excluded frame",
}


@dataclass
class FrameMask:
    train_id: np.ndarray  # (trains,) uint64, ascending
    mask: np.ndarray  # (trains, frames) bool
    reason: np.ndarray  # (trains, frames) uint8, a key of REASONS

    def reason_counts(self) -> dict[str, int]:
        codes, n = np.unique(self.reason, return_counts=True)
        return {REASONS[int(c)]: int(k) for c, k in zip(codes, n)}


def xray_frames(pattern: list[str], nframes: int) -> np.ndarray:
    """(nframes,) bool: True for frames that see an X-ray pulse (names without "dark")."""
    return np.array(["dark" not in pattern[p % len(pattern)] for p in range(nframes)], dtype=bool)


def build_framemask(
    train_ids: np.ndarray,
    nframes: int,
    pattern: list[str],
    rules: FramemaskConfig,
    pulse_train_ids: np.ndarray | None = None,
    pulse_energy_uj: np.ndarray | None = None,
) -> FrameMask:
    """Apply the config's rules to the run's trains.

    ``pulse_energy_uj`` is (trains with gas-monitor data, pulse slots): the k-th X-ray frame
    of a train sees the k-th pulse. Dark frames are never rejected for pulse energy.
    """
    tids = np.sort(np.asarray(train_ids, dtype=np.uint64))
    reason = np.zeros((len(tids), nframes), dtype=np.uint8)
    xray = xray_frames(pattern, nframes)

    if rules.min_pulse_energy_uj is not None and pulse_energy_uj is not None:
        slot = np.cumsum(xray) - 1  # pulse slot of each X-ray frame
        ptids = np.asarray(pulse_train_ids, dtype=np.uint64)
        order = np.argsort(ptids)
        row = lookup_rows(ptids[order], tids, order)  # gas-monitor row of each train, -1: none
        energy = np.asarray(pulse_energy_uj)
        cols = np.flatnonzero(xray & (slot < energy.shape[1]))
        has = row >= 0
        low = np.zeros(reason.shape, bool)
        low[np.ix_(has, cols)] = energy[row[has]][:, slot[cols]] < rules.min_pulse_energy_uj
        reason[low] = 1
        # X-ray frames of trains without gas-monitor data, or beyond its pulse slots.
        reason[np.ix_(~has, np.flatnonzero(xray))] = 2
        reason[:, np.flatnonzero(xray & (slot >= energy.shape[1]))] = 2

    if rules.exclude_trains:
        reason[np.isin(tids, np.asarray(rules.exclude_trains, dtype=np.uint64))] = 3
    cols = [p for p in rules.exclude_frames if p < nframes]
    reason[:, cols] = 4
    return FrameMask(tids, reason == 0, reason)


def write_framemask(path, fm: FrameMask, attrs: dict) -> None:
    from ..outputs import atomic_h5

    with atomic_h5(path) as f:
        f["train_id"] = fm.train_id
        f["mask"] = fm.mask
        f["mask"].attrs["axes"] = "train_id, frame"
        f["reason"] = fm.reason
        f["reason"].attrs["codes"] = ", ".join(f"{k}: {v}" for k, v in REASONS.items())
        f.attrs.update(attrs)


def read_framemask(path) -> FrameMask:
    import h5py

    from ..exceptions import MissingInputError

    try:
        with h5py.File(path, "r") as f:
            return FrameMask(f["train_id"][()], f["mask"][()], f["reason"][()])
    except FileNotFoundError:
        raise MissingInputError(f"{path} does not exist: materialize framemask for this run first") from None
