"""Data-quality checks on the outputs: plain functions returning (passed, what was found, numbers).

The Dagster assets run them in the same step as the output they check (see README, "Checks").
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import xarray as xr

from .exceptions import RunDataError
from .lineage import model


@dataclass
class CheckOutcome:
    passed: bool
    description: str
    values: dict = field(default_factory=dict)


def kept_fraction(fraction: float, minimum: float) -> CheckOutcome:
    """The framemask keeps at least ``minimum`` of the run's frames."""
    ok = fraction >= minimum
    return CheckOutcome(ok, f"kept fraction {fraction:.3f} {'>=' if ok else '<'} minimum {minimum}",
                        {"kept_fraction": float(fraction), "minimum": float(minimum)})


def dark_noise(noise: np.ndarray, bounds: tuple[float, float]) -> CheckOutcome:
    """The median noise (ADU) of a module's dark lies within bounds and has no NaN."""
    finite = np.isfinite(noise)
    median = float(np.median(noise[finite])) if finite.any() else float("nan")
    low, high = bounds
    ok = bool(finite.all()) and low <= median <= high
    text = f"median noise {median:.3f} ADU, bounds [{low}, {high}]"
    if not finite.all():
        text += f"; {int((~finite).sum())} pixels have NaN noise"
    return CheckOutcome(ok, text, {"median_noise_adu": median, "nan_pixels": int((~finite).sum())})


def counts_add_up(counts: np.ndarray, frames_kept: int, frames_total: int, rejected: dict[str, int]) -> CheckOutcome:
    """The frames summed equal the frames kept, and kept plus rejected equal all frames."""
    summed = int(np.sum(counts))
    nrej = int(sum(rejected.values()))
    ok = summed == frames_kept and frames_kept + nrej == frames_total
    return CheckOutcome(ok, f"{summed} frames summed, {frames_kept} kept, {nrej} rejected, {frames_total} in all",
                        {"frames_summed": summed, "frames_kept": int(frames_kept), "frames_rejected": nrej,
                         "frames_total": int(frames_total)})


def means_finite(ds: xr.Dataset) -> CheckOutcome:
    """No NaN or infinite mean where frames were averaged and no inf anywhere: empty bins are NaN by design, and so
    is a pixel of corrected data masked in every frame of its bin (its ``pixel_count`` is 0)."""
    mean = ds["mean"].values
    if "pixel_count" in ds:
        has_frames = ds["pixel_count"].values > 0
    else:
        has_frames = np.broadcast_to((ds["count"].values > 0)[..., None, None], mean.shape)
    bad = int((~np.isfinite(mean) & has_frames).sum()) + int(np.isinf(mean[~has_frames]).sum())
    return CheckOutcome(bad == 0, f"{bad} NaN or infinite means in bins with frames",
                        {"bad_values": bad, "empty_bins": int((ds["count"].values == 0).sum())})


def all_modules_present(ds: xr.Dataset, modules: list[int]) -> CheckOutcome:
    """Every configured module is in the cube and has frames."""
    have = [int(m) for m in ds["module"].values]
    with_frames = [int(m) for m in ds["module"].values if int(ds["count"].sel(module=m).sum()) > 0]
    missing = sorted(set(modules) - set(with_frames))
    return CheckOutcome(not missing, "all modules present" if not missing
                        else f"modules without frames: {missing} (cube has {have})",
                        {"modules_expected": len(modules), "modules_with_frames": len(with_frames)})


def modules_cover_run(coverage: dict[int, float], gaps: dict[int, list[int]], minimum: float) -> CheckOutcome:
    """Every module has data in at least ``minimum`` of the control data's trains and no missing sequence file.

    A module may lack a few trains, as real runs do, but not a whole sequence file: that is a
    half-copied run (or a file lost), whose cube would silently hold fewer frames of that module.
    """
    low = {m: f for m, f in coverage.items() if f < minimum}
    parts = [f"module {m:02d} has {f:.1%} of the run's trains" for m, f in sorted(low.items())]
    parts += [f"module {m:02d} lacks sequence file(s) S{', S'.join(f'{q:05d}' for q in qs)}" for m, qs in sorted(gaps.items())]
    text = "; ".join(parts) if parts else (
        f"every module covers >= {minimum:.0%} of the run's trains (lowest {min(coverage.values(), default=1):.1%}), "
        "no sequence file missing")
    return CheckOutcome(not parts, text, {"lowest_module_coverage": float(min(coverage.values(), default=1.0)),
                                          "minimum": float(minimum),
                                          "missing_sequence_files": int(sum(len(q) for q in gaps.values()))})


def check_attrs(checks: dict[str, CheckOutcome]) -> dict[str, str]:
    """Output attributes recording each check: ``check_<name>`` = "passed" or "failed: <what was found>"."""
    return {f"check_{name}": "passed" if c.passed else f"failed: {c.description}" for name, c in checks.items()}


def require_passed(attrs: dict, asset: str, path) -> None:
    """Refuse an input whose blocking checks failed when it was made (naming the file and the check)."""
    failed = {n: str(attrs[f"check_{n}"]) for n in model.asset(asset).blocking_checks
              if str(attrs.get(f"check_{n}", "passed")) != "passed"}
    if failed:
        why = "; ".join(f"{n} {v}" for n, v in failed.items())
        raise RunDataError(f"{path}: blocking check of {asset} {why}; fix the data or the bounds in "
                           f"'checks' and rematerialize {asset} before its dependents")
