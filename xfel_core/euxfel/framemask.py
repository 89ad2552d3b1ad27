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
    5: "no bunch pattern for train",
}


@dataclass
class FrameMask:
    train_id: np.ndarray  # (trains,) uint64, ascending
    mask: np.ndarray  # (trains, frames) bool
    reason: np.ndarray  # (trains, frames) uint8, a key of REASONS
    #: (trains, frames) int8: each frame's type, an index into the frame types (frame_pattern: auto, from the
    #: bunch pattern); None: the frame's position modulo the frame pattern's length.
    frame_type: np.ndarray | None = None

    def reason_counts(self) -> dict[str, int]:
        codes, n = np.unique(self.reason, return_counts=True)
        return {REASONS[int(c)]: int(k) for c, k in zip(codes, n)}

    def types_of(self, row: np.ndarray, position: np.ndarray, ntypes: int) -> np.ndarray:
        """The type of frames at (framemask row, position in the train); row and position inside the mask."""
        if self.frame_type is None:
            return np.asarray(position, np.int64) % ntypes
        return self.frame_type[row, position].astype(np.int64)


    def pulse_slots(self, names: list[str]) -> np.ndarray:
        """(trains, frames) the pulse slot each X-ray frame sees (the k-th X-ray frame of a train: slot k); -1 for
        dark frames (``names``: the frame types)."""
        xray, slot = _pulse_slots(self.frame_type, names, *self.mask.shape)
        return np.where(xray, slot, -1)


    def slots_of(self, row: np.ndarray, position: np.ndarray, names: list[str]) -> np.ndarray:
        """The pulse slot of frames at (framemask row, position in the train); -1 for dark frames and frames
        outside the mask (row -1 or a position beyond it)."""
        slots = self.pulse_slots(names)
        inside = (row >= 0) & (position < slots.shape[1])
        out = np.full(len(row), -1, np.int64)
        out[inside] = slots[row[inside], position[inside]]
        return out


def _pulse_slots(frame_type: np.ndarray | None, names: list[str], ntrains: int,
                 nframes: int) -> tuple[np.ndarray, np.ndarray]:
    """(trains, frames): whether each frame sees an X-ray pulse (its type's name has no "dark"), and the count
    of X-ray frames before it in its train (its pulse slot); types from ``frame_type`` or the pattern repeating."""
    types = frame_type if frame_type is not None else np.broadcast_to(np.arange(nframes) % len(names),
                                                                      (ntrains, nframes))
    xray = ~np.array(["dark" in n for n in names], bool)[types]
    return xray, np.cumsum(xray, axis=1) - 1


def build_framemask(
    train_ids: np.ndarray,
    nframes: int,
    pattern: list[str],
    rules: FramemaskConfig,
    pulse_train_ids: np.ndarray | None = None,
    pulse_energy_uj: np.ndarray | None = None,
    frame_type: np.ndarray | None = None,
    no_pattern: np.ndarray | None = None,
) -> FrameMask:
    """Apply the config's rules to the run's trains.

    ``pulse_energy_uj`` is (trains with gas-monitor data, pulse slots): the k-th X-ray frame
    of a train sees the k-th pulse. Dark frames are never rejected for pulse energy.
    ``frame_type`` (trains, frames): each frame's index into ``pattern`` (from the bunch pattern),
    with ``no_pattern`` (trains,) the trains without one (rejected); None: the pattern repeats.
    """
    tids = np.sort(np.asarray(train_ids, dtype=np.uint64))
    reason = np.zeros((len(tids), nframes), dtype=np.uint8)
    xray, slot = _pulse_slots(frame_type, pattern, len(tids), nframes)  # (trains, frames)

    if rules.min_pulse_energy_uj is not None and pulse_energy_uj is not None:
        ptids = np.asarray(pulse_train_ids, dtype=np.uint64)
        order = np.argsort(ptids)
        row = lookup_rows(ptids[order], tids, order)  # gas-monitor row of each train, -1: none
        energy = np.asarray(pulse_energy_uj)
        has = (row >= 0)[:, None]
        ok = xray & has & (slot < energy.shape[1])
        rows = np.broadcast_to(row[:, None], ok.shape)
        reason[ok] = np.where(energy[rows[ok], slot[ok]] < rules.min_pulse_energy_uj, 1, 0)
        # X-ray frames of trains without gas-monitor data, or beyond its pulse slots.
        reason[xray & (~has | (slot >= energy.shape[1]))] = 2

    if rules.exclude_trains:
        reason[np.isin(tids, np.asarray(rules.exclude_trains, dtype=np.uint64))] = 3
    cols = [p for p in rules.exclude_frames if p < nframes]
    reason[:, cols] = 4
    if no_pattern is not None:
        reason[no_pattern] = 5
    return FrameMask(tids, reason == 0, reason, None if frame_type is None else np.asarray(frame_type, np.int8))


def write_framemask(path, fm: FrameMask, attrs: dict) -> None:
    from ..outputs import atomic_h5

    with atomic_h5(path) as f:
        f["train_id"] = fm.train_id
        f["mask"] = fm.mask
        f["mask"].attrs["axes"] = "train_id, frame"
        f["reason"] = fm.reason
        f["reason"].attrs["codes"] = ", ".join(f"{k}: {v}" for k, v in REASONS.items())
        if fm.frame_type is not None:
            f["frame_type"] = fm.frame_type
            f["frame_type"].attrs["axes"] = "train_id, frame"
        f.attrs.update(attrs)


def read_framemask(path) -> FrameMask:
    import h5py

    from ..exceptions import MissingInputError

    try:
        with h5py.File(path, "r") as f:
            return FrameMask(f["train_id"][()], f["mask"][()], f["reason"][()],
                             f["frame_type"][()] if "frame_type" in f else None)
    except FileNotFoundError:
        raise MissingInputError(f"{path} does not exist: materialize framemask for this run first") from None
