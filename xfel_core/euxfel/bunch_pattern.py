"""Frame types from the machine's bunch pattern (``frame_pattern: auto``): pumped, unpumped or dark.

The timeserver writes, per train, the bunch pattern table: 2700 uint32 words, one per bunch
position (4.5 MHz). The facility's decoder (``euxfel_bunch_pattern``) tells from its bits which
positions send an X-ray pulse to a SASE (``is_sase``) and which have a pulse of a pump-probe laser
seed (``is_laser``, ``PPL_BITS``). As EXtra's ``PumpProbePulses`` does, the laser's positions are
taken as written from position 0 and anchored to the FEL pulses: laser pulse ``k`` is at the first
FEL pulse + ``laser_offset`` x the FEL pulse spacing + its own position (EXtra's ``pulse_offset``);
a train without two FEL pulses takes the anchor of the train before (EXtra's ``extrapolate``).

The mapping to detector frames (stated in the README): frame ``i`` of a train sees bunch position
``first_frame + i x frame_stride``; by default the detector's first frame is the train's first FEL
pulse and its frames follow at the FEL pulse spacing (one frame per FEL pulse, as the XTDF
detectors are set up for a pump-probe run). A frame whose position has an FEL pulse is
``pumped`` if the laser pulses there too, else ``unpumped``; a frame without an FEL pulse is
``dark``.
"""

from __future__ import annotations

import numpy as np

from ..config import AUTO_FRAME_TYPES, BeamtimeConfig
from ..exceptions import RunDataError
from ..readers import euxfel
from ..scan import lookup_rows

#: The frame types of ``frame_pattern: auto``, in the cube's order (indices of :func:`frame_types`).
AUTO_TYPES = list(AUTO_FRAME_TYPES)
#: The pump-probe laser seed of each instrument (EXtra's OpticalLaserPulses), for ``bunch_pattern.laser: auto``.
INSTRUMENT_SEEDS = {"FXE": "LP_FXE", "SPB": "LP_SPB", "MID": "LP_SASE2", "HED": "LP_SASE2", "SCS": "LP_SCS",
                    "SQS": "LP_SQS"}


def laser_bit(laser: str, source: str) -> int:
    """The bunch-pattern bit of a PPL seed (``LP_SCS``; ``auto``: the instrument of ``source``'s name)."""
    from euxfel_bunch_pattern import PPL_BITS

    if laser == "auto":
        instrument = source.split("_", 1)[0]
        if instrument not in INSTRUMENT_SEEDS:
            raise RunDataError(f"bunch_pattern.laser: auto cannot tell the laser seed of instrument {instrument!r} "
                               f"(from {source}); give one of {[b.name for b in PPL_BITS]}")
        laser = INSTRUMENT_SEEDS[instrument]
    try:
        return int(PPL_BITS[laser])
    except KeyError:
        raise RunDataError(f"bunch_pattern.laser {laser!r} is not a PPL seed: one of "
                           f"{[b.name for b in PPL_BITS]}") from None


def xray_pulses(table: np.ndarray, sase: int) -> np.ndarray:
    """(trains, 2700) bool: the bunch positions with an X-ray pulse to ``sase`` (the facility's ``is_sase``)."""
    from euxfel_bunch_pattern import is_sase

    return np.asarray(is_sase(np.asarray(table, np.uint32), sase), bool)


def frame_types(table: np.ndarray, nframes: int, sase: int, laser: int, laser_offset: float = 0.0,
                first_frame: int | None = None, frame_stride: int | None = None, what: str = "") -> np.ndarray:
    """(trains, nframes) int8 index into :data:`AUTO_TYPES` of each frame, from (trains, 2700) bunch pattern tables.

    ``laser``: the PPL seed's bit; ``laser_offset``, ``first_frame`` and ``frame_stride``: see the module
    docstring. ``what`` names the data in errors."""
    from euxfel_bunch_pattern import is_laser

    fel = xray_pulses(table, sase)  # (trains, positions)
    ppl = np.asarray(is_laser(np.asarray(table, np.uint32), laser), bool)
    ntrains, npos = fel.shape
    if not fel.any():
        raise RunDataError(f"{what}: no X-ray pulse of SASE {sase} in any train's bunch pattern "
                           "(check bunch_pattern.sase, or give frame_pattern by hand)")
    first = np.argmax(fel, axis=1)
    rest = fel.copy()
    rest[np.arange(ntrains), first] = False
    second = np.argmax(rest, axis=1)
    spacing = np.where(rest.any(axis=1), second - first, 0)
    has = fel.any(axis=1) & (spacing > 0)
    if not has.any():  # one FEL pulse per train: its spacing cannot be read off
        if frame_stride is None or laser_offset:
            raise RunDataError(f"{what}: every train has at most one X-ray pulse of SASE {sase}: give "
                               "bunch_pattern.frame_stride (and laser_offset 0)")
        has = fel.any(axis=1)
        spacing = np.full(ntrains, frame_stride)
    # A train without the anchor takes the last train's before it (the first trains: the first train's after).
    idx = np.where(has, np.arange(ntrains), -1)
    np.maximum.accumulate(idx, out=idx)
    idx[idx < 0] = np.flatnonzero(has)[0]
    first, spacing = first[idx], spacing[idx]
    anchor = first + np.floor(spacing * laser_offset).astype(np.int64)  # where the laser's position 0 lies
    start = first if first_frame is None else np.full(ntrains, first_frame)
    stride = spacing if frame_stride is None else np.full(ntrains, frame_stride)
    pos = start[:, None] + stride[:, None] * np.arange(nframes)[None, :]  # (trains, frames) bunch positions
    inside = (pos >= 0) & (pos < npos)
    rows = np.arange(ntrains)[:, None]
    fel_at = inside & fel[rows, np.clip(pos, 0, npos - 1)]
    lpos = pos - anchor[:, None]
    ppl_at = (lpos >= 0) & (lpos < npos) & ppl[rows, np.clip(lpos, 0, npos - 1)]
    return np.where(fel_at, np.where(ppl_at, 0, 1), 2).astype(np.int8)


def frame_types_of_run(cfg: BeamtimeConfig, dc, run: str, tids: np.ndarray,
                       nframes: int) -> tuple[np.ndarray, np.ndarray]:
    """((trains, frames) index of each frame's type in ``cfg.frame_types``, (trains,) trains without a bunch
    pattern) from the bunch pattern of the run opened as ``dc`` (``frame_pattern: auto``)."""
    bp = cfg.bunch_pattern
    run_dir = cfg.run_dir(run)
    btids, table = euxfel.train_values(dc, bp.source, bp.key)
    if table.ndim != 2:
        raise RunDataError(f"run {run}: {bp.source} / {bp.key} must be (trains, 2700) bunch pattern tables, "
                           f"got shape {table.shape}")
    order = np.argsort(btids)
    row = lookup_rows(np.asarray(btids, np.uint64)[order], tids, order)
    types = np.full((len(tids), nframes), cfg.frame_types.index("dark"), np.int8)
    has = row >= 0
    if has.any():
        types[has] = frame_types(
            table[row[has]], nframes, bp.sase, laser_bit(bp.laser, bp.source), bp.laser_offset,
            bp.first_frame, bp.frame_stride, what=f"run {run} ({run_dir}): {bp.source} / {bp.key}")
    return types, ~has
