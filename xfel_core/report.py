"""A short per-run table of what the pipeline produced (trains, frames kept, scan points, output)."""

from __future__ import annotations

import h5py
import numpy as np

from .config import BeamtimeConfig


def run_rows(cfg: BeamtimeConfig, runs: list[str]) -> list[dict]:
    rows = []
    for run in runs:
        cube = cfg.output_path(run, "binned_cube")
        raw = cfg.output_path(run, "raw_run")
        row = {"run": run, "trains": "-", "frames kept": "-", "scan points": "-", "output": "(not made)"}
        if raw.exists():
            with h5py.File(raw, "r") as f:
                row["trains"] = len(f["train_id"])
        if cube.exists():
            with h5py.File(cube, "r") as f:
                row["frames kept"] = int(np.ravel(f.attrs["frames_kept"])[0])
                row["scan points"] = len(f["scan_variable"])
            row["output"] = str(cube)
        rows.append(row)
    return rows


def format_table(rows: list[dict]) -> str:
    if not rows:
        return "(no runs)"
    cols = list(rows[0])
    widths = {c: max(len(c), *(len(str(r[c])) for r in rows)) for c in cols}
    line = lambda r: "  ".join(str(r[c]).ljust(widths[c]) for c in cols)  # noqa: E731
    return "\n".join([line({c: c for c in cols}), "  ".join("-" * widths[c] for c in cols)] + [line(r) for r in rows])
