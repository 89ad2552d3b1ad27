"""Stitch a sample's measurements in time and correct the attenuator changes (the seed's attenuation_correction.py).

The seed corrects each attenuator change by hand: pick the points on either side of the change
and scale the data after it by their ratio. Here every change is found (from the headers'
filter transmission where they have it, else as a jump of the reference intensity), measured
the same way but from straight lines fitted to the ``points`` frames on either side (log
intensity against time, both extrapolated to the moment of the change, so a growing peak does
not bias the ratio), and can be overridden in the config. Intensities are first divided by the
exposure time (counts/s). The corrected series is in counts/s of the unattenuated beam when the
first frame's transmission is known, else relative to the first frame's attenuation.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict, dataclass
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd

from ..config import AttenuationConfig, AttenuationOverride
from ..exceptions import ConfigError

#: A change is also at least this many robust standard deviations of the frame-to-frame log jumps.
STEP_NOISE_SIGMAS = 8.0
#: A pause between frames longer than this many times the median frame spacing is a gap.
GAP_FACTOR = 3.0


@dataclass
class Change:
    """One attenuator change, between frame index-1 and frame index of the stitched series."""

    index: int
    time: float  # UNIX s, midway between the two frames
    found_by: str  # header, step or override
    #: Each of these is a factor for the frames from ``index`` on, relative to those before:
    nominal: float  # T(before) / T(after) from the headers; NaN if unknown
    measured: float  # I(before) / I(after), extrapolated to the change; NaN if not measurable
    factor: float  # the one applied
    used: str  # which of nominal, measured, override gave the factor
    residual: float = float("nan")  # relative jump left after correction


def override_time(o: AttenuationOverride, tz: ZoneInfo) -> float:
    if isinstance(o.time, (int, float)):
        return float(o.time)
    try:
        when = dt.datetime.fromisoformat(o.time)
    except ValueError:
        raise ConfigError(f"attenuation override for {o.sample}: time {o.time!r} is neither UNIX seconds "
                          "nor an ISO date-time") from None
    return (when if when.tzinfo else when.replace(tzinfo=tz)).timestamp()


def _line_at(t: np.ndarray, y: np.ndarray, at: float) -> float:
    """log-linear fit of y(t), evaluated at ``at``; NaN if any y <= 0 (then no log)."""
    if len(y) == 0 or np.any(~np.isfinite(y)) or np.any(y <= 0):
        return float("nan")
    ly = np.log(y)
    if len(y) == 1 or np.ptp(t) == 0:
        return float(np.exp(ly.mean()))
    slope, icept = np.polyfit(t - at, ly, 1)
    return float(np.exp(icept))


def measure_ratio(t: np.ndarray, y: np.ndarray, index: int, lo: int, hi: int, points: int) -> float:
    """After / before intensity ratio at the change before ``index``, from up to ``points`` frames on
    either side within [lo, hi) (the neighbouring changes bound the fit)."""
    at = 0.5 * (t[index - 1] + t[index])
    before = slice(max(lo, index - points), index)
    after = slice(index, min(hi, index + points))
    return _line_at(t[after], y[after], at) / _line_at(t[before], y[before], at)


def step_changes(t: np.ndarray, y: np.ndarray, threshold: float, points: int) -> list[int]:
    """Frames where the intensity jumps by more than ``threshold`` (relative) and STEP_NOISE_SIGMAS x the noise.

    Between frames taken in a row the jump is the ratio of neighbours. Across a pause (more than
    GAP_FACTOR x the usual frame spacing) the intensity may really change, so there the jump is
    measured between straight lines fitted on either side, bounded by the changes already found.
    """
    with np.errstate(divide="ignore", invalid="ignore"):
        d = np.diff(np.log(np.where(y > 0, y, np.nan)))
    dt_ = np.diff(t)
    gap = dt_ > GAP_FACTOR * np.median(dt_) if len(dt_) else np.zeros(0, dtype=bool)
    ok = np.isfinite(d) & ~gap
    if ok.sum() < 3:
        return []
    noise = 1.4826 * np.median(np.abs(d[ok] - np.median(d[ok])))
    limit = max(np.log1p(threshold), STEP_NOISE_SIGMAS * noise)
    found = [int(i) + 1 for i in np.flatnonzero(ok & (np.abs(d) > limit))]
    edges = sorted(set(found) | {int(i) + 1 for i in np.flatnonzero(gap)})
    for i in (int(i) + 1 for i in np.flatnonzero(gap)):
        k = edges.index(i)
        lo = edges[k - 1] if k else 0
        hi = edges[k + 1] if k + 1 < len(edges) else len(t)
        with np.errstate(divide="ignore", invalid="ignore"):
            jump = np.log(measure_ratio(t, y, i, lo, hi, points))
        if np.isfinite(jump) and abs(jump) > limit:
            found.append(i)
    return sorted(found)


def find_changes(t: np.ndarray, transmission: np.ndarray, y: np.ndarray, cfg: AttenuationConfig,
                 overrides: list[AttenuationOverride], tz: ZoneInfo) -> list[Change]:
    """Every attenuator change of a stitched series, with the factor that corrects it."""
    n = len(t)
    known = np.isfinite(transmission)
    found: dict[int, str] = {}
    for i in range(1, n):
        if known[i - 1] and known[i] and transmission[i] != transmission[i - 1]:
            found[i] = "header"
    # Step detection only between frames whose headers do not both say the transmission.
    for i in step_changes(t, y, cfg.step_threshold, cfg.points):
        if not (known[i - 1] and known[i]):
            found.setdefault(i, "step")
    forced: dict[int, float | None] = {}
    for o in overrides:
        i = int(np.searchsorted(t, override_time(o, tz)))
        if not 0 < i < n:
            raise ConfigError(f"attenuation override for sample {o.sample} at {o.time!r}: not inside "
                              f"the series ({dt.datetime.fromtimestamp(t[0], tz)} to {dt.datetime.fromtimestamp(t[-1], tz)})")
        forced[i] = o.factor
        if o.factor is None:
            found.pop(i, None)
        else:
            found[i] = "override"
    bounds = sorted(found)
    changes = []
    for k, i in enumerate(bounds):
        lo = bounds[k - 1] if k else 0
        hi = bounds[k + 1] if k + 1 < len(bounds) else n
        nominal = transmission[i - 1] / transmission[i] if known[i - 1] and known[i] else float("nan")
        measured = 1.0 / measure_ratio(t, y, i, lo, hi, cfg.points)
        if i in forced:
            factor, used = forced[i], "override"
        elif cfg.method == "header" and np.isfinite(nominal):
            factor, used = nominal, "nominal"
        elif np.isfinite(nominal) and t[i] - t[i - 1] > cfg.max_gap_s:  # the peak may have changed in the pause
            factor, used = nominal, "nominal (gap)"
        elif np.isfinite(measured):
            factor, used = measured, "measured"
        elif np.isfinite(nominal):
            factor, used = nominal, "nominal (not measurable)"
        else:
            raise ConfigError(f"attenuator change at {dt.datetime.fromtimestamp(t[i], tz)}: neither a header "
                              "transmission nor positive intensities to measure it; add an override")
        changes.append(Change(index=i, time=float(0.5 * (t[i - 1] + t[i])), found_by=found[i],
                              nominal=float(nominal), measured=float(measured), factor=float(factor), used=used))
    return changes


def correct_series(df: pd.DataFrame, intensity_cols: list[str], reference: str, cfg: AttenuationConfig,
                   overrides: list[AttenuationOverride], tz: ZoneInfo) -> tuple[pd.DataFrame, list[Change]]:
    """The stitched series with ``<col>_rate`` (counts/s as measured) and ``<col>_corrected`` (counts/s,
    unattenuated) per intensity column, ``segment`` and ``correction`` (the factor applied); and the changes."""
    if reference not in intensity_cols:
        raise ConfigError(f"attenuation.reference_roi: no intensity column {reference!r} "
                          f"(intensity columns: {intensity_cols})")
    df = df.sort_values("time", kind="stable").reset_index(drop=True)
    t = df["time"].to_numpy(dtype=np.float64)
    tr = df["transmission"].to_numpy(dtype=np.float64)
    exposure = df["exposure_s"].to_numpy(dtype=np.float64)
    rates = {c: df[c].to_numpy(dtype=np.float64) / exposure for c in intensity_cols}
    changes = find_changes(t, tr, rates[reference], cfg, overrides, tz)
    factor = np.ones(len(df))
    segment = np.zeros(len(df), dtype=np.int64)
    for k, ch in enumerate(changes):
        factor[ch.index:] *= ch.factor
        segment[ch.index:] = k + 1
    # Scale to the unattenuated beam with the first frame's transmission, when the header gives it.
    scale = factor / tr[0] if np.isfinite(tr[0]) else factor
    df["segment"] = segment
    df["correction"] = scale
    for c, r in rates.items():
        df[f"{c}_rate"] = r
        df[f"{c}_corrected"] = r * scale
    ref = df[f"{reference}_corrected"].to_numpy()
    bounds = [0] + [c.index for c in changes] + [len(df)]
    for k, ch in enumerate(changes):
        ch.residual = float(measure_ratio(t, ref, ch.index, bounds[k], bounds[k + 2], cfg.points) - 1.0)
    return df, changes


def changes_table(changes: list[Change], tz: ZoneInfo) -> pd.DataFrame:
    rows = []
    for c in changes:
        row = asdict(c)
        row["time_local"] = dt.datetime.fromtimestamp(c.time, tz).isoformat(timespec="seconds")
        rows.append(row)
    table = pd.DataFrame(rows, columns=["index", "time", "time_local", "found_by", "nominal", "measured",
                                        "factor", "used", "residual"])
    return table.astype({"index": "int64", "time": "float64", "nominal": "float64", "measured": "float64",
                         "factor": "float64", "residual": "float64"})
