"""The pump-probe delay from the machine's data, as EXtra's ``OpticalLaserDelay`` builds it (in ps).

delay = (stage - ref_stage) x 2 mm / c  -  (trigger - ref_trigger)  +  (BAM - ref_bam)  -  ref_delay

- the stage: the optical delay line's motor position (mm); the light goes there and back, so a
  millimetre is 2 mm of path, 6.671 ps;
- the trigger: the laser's electronic trigger delay (ps), per train;
- the BAM: the bunch arrival monitor's arrival time of each bunch (fs; two values per bunch position,
  the first at ``2 x position``), so with a BAM the delay is per X-ray pulse: the k-th X-ray pulse of
  a train (from the bunch pattern, ``bunch_pattern.sase``) is the k-th X-ray frame of the train, as
  for the gas monitor's pulse energies.

Without a BAM the delay is one value per train (the train's scan point, as for any scan variable).
"""

from __future__ import annotations

import numpy as np

from ..config import BeamtimeConfig
from ..exceptions import ConfigError, RunDataError
from ..readers import euxfel
from ..scan import lookup_rows
from .bunch_pattern import xray_pulses

#: Picoseconds of delay per millimetre of stage travel: 2 mm of light path (c = 299,792,458 m/s).
PS_PER_MM = 2e-3 / 299_792_458.0 * 1e12


def _per_train(dc, source: str, key: str, run: str) -> tuple[np.ndarray, np.ndarray]:
    tids, values = euxfel.train_values(dc, source, key)
    if values.ndim != 1:
        raise RunDataError(f"run {run}: {source} / {key} has shape {values.shape[1:]} per train; expected one "
                           "number per train")
    return np.asarray(tids, np.uint64), values.astype(np.float64)


def delays(cfg: BeamtimeConfig, dc, run: str) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """(train ids, delay per train (ps), delay per train and X-ray pulse (ps) or None without a BAM), trains
    ascending: those with every configured source."""
    d = cfg.scan_variable.delay
    parts = []
    if d.stage_source:
        tids, x = _per_train(dc, d.stage_source, d.stage_key, run)
        parts.append((tids, (x - d.ref_stage) * PS_PER_MM))
    if d.trigger_source:
        tids, x = _per_train(dc, d.trigger_source, d.trigger_key, run)
        parts.append((tids, -(x - d.ref_trigger)))
    bam_tids = bam = None
    if d.bam_source:
        bam_tids, bam = euxfel.train_values(dc, d.bam_source, d.bam_key)
        bam_tids = np.asarray(bam_tids, np.uint64)
        if bam.ndim != 2:
            raise RunDataError(f"run {run}: {d.bam_source} / {d.bam_key} must be (trains, 2 x bunch positions), "
                               f"got shape {bam.shape}")
        parts.append((bam_tids, np.zeros(len(bam_tids))))
    tids = parts[0][0]
    for t, _ in parts[1:]:
        tids = np.intersect1d(tids, t)
    train = np.full(len(tids), -d.ref_delay)
    for t, v in parts:
        train += lookup_rows(t, tids, v, np.nan)
    if bam is None:
        return tids, train, None
    return tids, train, train[:, None] + _bam_per_pulse(cfg, dc, run, tids, bam_tids, bam)


def _bam_per_pulse(cfg: BeamtimeConfig, dc, run: str, tids: np.ndarray, bam_tids: np.ndarray,
                   bam: np.ndarray) -> np.ndarray:
    """(trains, X-ray pulses) the BAM's arrival time (ps, less ref_bam) of each train's X-ray pulses; NaN past
    a train's last pulse."""
    bp, d = cfg.bunch_pattern, cfg.scan_variable.delay
    if bp is None:
        raise ConfigError(f"{cfg.source_file}: scan_variable.delay.bam_source needs bunch_pattern (which bunch "
                          "positions carry the X-ray pulses the BAM times)")
    ttids, table = euxfel.train_values(dc, bp.source, bp.key)
    # (trains without a table take row -1: has_table leaves them out)
    fel = xray_pulses(table, bp.sase)[lookup_rows(np.asarray(ttids, np.uint64), tids, np.arange(len(ttids)))]
    has_table = np.isin(tids, np.asarray(ttids, np.uint64))
    npulses = int(fel[has_table].sum(axis=1).max(initial=0))
    if npulses == 0:
        raise RunDataError(f"run {run}: no X-ray pulse of SASE {bp.sase} in the bunch pattern {bp.source}: the "
                           "BAM's values cannot be given to pulses")
    order = np.argsort(~fel, axis=1, kind="stable")[:, :npulses]  # the positions of the first pulses, in order
    present = np.take_along_axis(fel, order, axis=1) & has_table[:, None]
    column = 2 * order  # two BAM values per bunch position, the first at 2 x position
    rows = lookup_rows(bam_tids, tids, np.arange(len(bam_tids)))
    inside = present & (column < bam.shape[1]) & (rows >= 0)[:, None]
    out = np.full(order.shape, np.nan)
    r = np.broadcast_to(rows[:, None], order.shape)
    out[inside] = (bam[r[inside], column[inside]] - d.ref_bam) * 1e-3  # fs -> ps
    return out
