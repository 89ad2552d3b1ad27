"""Short tables of what the pipeline produced: per run (trains, frames kept, scan points) and per in-situ sample."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pandas as pd

from .config import BeamtimeConfig
from .insitu import layout
from .insitu.pipeline import SERIES_FILE
from .outputs import read_attrs


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


def sample_rows(cfg: BeamtimeConfig, samples: list[str]) -> list[dict]:
    """Per in-situ sample: measurements, frames, attenuator changes, corrected reference intensity first and last."""
    rows = []
    for sample in samples:
        path = layout.output_dir(cfg, sample) / SERIES_FILE
        row = {"sample": sample, "measurements": len(layout.measurements(cfg.require_insitu(), sample)),
               "frames": "-", "attenuator changes": "-", "corrected (counts/s) first -> last": "-",
               "output": "(not made)"}
        attrs = read_attrs(path)
        if attrs:
            ref = attrs["reference"]
            df = pd.read_parquet(path, columns=[f"{ref}_corrected"])
            row.update({"frames": len(df), "attenuator changes": len(json.loads(attrs["changes"])),
                        "corrected (counts/s) first -> last":
                            f"{df.iloc[0, 0]:.4g} -> {df.iloc[-1, 0]:.4g} ({ref})",
                        "output": str(path)})
        rows.append(row)
    return rows


def event_run_rows(cfg: BeamtimeConfig, runs: list[str]) -> list[dict]:
    """Per run of event files: events, kept, shots rejected per rule, scan points, the cube."""
    from .events.pipeline import CUBE_FILE, SMALLDATA_FILE, output_path

    rows = []
    for run in runs:
        sd, cube = read_attrs(output_path(cfg, run, SMALLDATA_FILE)), output_path(cfg, run, CUBE_FILE)
        rejected = {k: v for k, v in json.loads(sd.get("rejected_by_rule", "{}")).items() if v}
        first = lambda k, sd=sd: int(np.ravel(sd[k])[0]) if k in sd else "-"  # noqa: E731 (netCDF attributes are arrays)
        rows.append({"run": run, "events": first("events"), "kept": first("kept"),
                     "rejected": ", ".join(f"{k} {v}" for k, v in rejected.items()) or "-",
                     "output": str(cube) if cube.exists() else "(not made)"})
    return rows


def failed_checks(cfg: BeamtimeConfig, partitioning, key: str) -> list[str]:
    """The checks that failed on the outputs of one partition key (``asset check: what was found``), per the model."""
    from .lineage import model

    out = []
    for asset in model.assets():
        if asset.partitioning is not partitioning or not asset.checks or not asset.enabled(cfg):
            continue
        attrs = read_attrs(asset.output(cfg, key))
        out += [f"{asset.name} {c.name} {attrs[f'check_{c.name}']}" for c in asset.checks
                if str(attrs.get(f"check_{c.name}", "passed")) != "passed"]
    return out


def mark_failed(rows: list[dict], key: str, failed: set[str], checks: dict[str, list[str]] | None = None) -> list[dict]:
    """A status column first: FAILED for the rows whose key failed now (their outputs are the previous ones),
    CHECK for those whose outputs were made but a check of them failed (``checks``: key: what failed)."""
    out = []
    for row in rows:
        bad = row[key] in failed
        output = row.get("output", "")
        if bad and output and not output.startswith("("):
            output = f"previous, not current: {output}"
        status = "FAILED" if bad else "CHECK" if (checks or {}).get(row[key]) else "ok"
        out.append({"status": status, **row, **({"output": output} if "output" in row else {})})
    return out


def format_table(rows: list[dict]) -> str:
    if not rows:
        return "(no runs)"
    cols = list(rows[0])
    widths = {c: max(len(c), *(len(str(r[c])) for r in rows)) for c in cols}
    line = lambda r: "  ".join(str(r[c]).ljust(widths[c]) for c in cols)  # noqa: E731
    return "\n".join([line({c: c for c in cols}), "  ".join("-" * widths[c] for c in cols)] + [line(r) for r in rows])
