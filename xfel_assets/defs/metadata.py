"""Turn the result dicts of xfel_core.euxfel.pipeline into typed Dagster metadata (int, float, path, table, md)."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import dagster as dg
import numpy as np


def readable_size(nbytes: int) -> str:
    """A size as a person reads it: 3 significant digits in GB, MB or kB (decimal units, as `ls -h --si`)."""
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if nbytes >= scale:
            return f"{nbytes / scale:.3g} {unit}"
    return f"{int(nbytes)} B"


def three_digits(x: float) -> float:
    """``x`` rounded to three significant digits (seconds, rates: more digits are noise)."""
    return float(f"{float(x):.3g}")


def size_md(nbytes: int) -> dg.MetadataValue:
    return dg.MetadataValue.text(readable_size(nbytes))


def common(info: dict) -> dict:
    """Output path and size, seconds spent, where it was computed: shown for every materialization."""
    md = {
        "output_path": dg.MetadataValue.path(str(info["path"])),
        "output_size": size_md(info["size_bytes"]),
        "seconds": dg.MetadataValue.float(three_digits(info["seconds"])),
    }
    if "slurm" in info:  # computed as a SLURM job (dagster-slurm adds sacct's slurm_job_id, elapsed_seconds, ...)
        job = info["slurm"]
        md["computed_on"] = dg.MetadataValue.text(f"SLURM job {job['job_id']} on {job['node']}")
        md["slurm_node"] = dg.MetadataValue.text(str(job["node"]))
        md["slurm_payload_seconds"] = dg.MetadataValue.float(three_digits(job["seconds"]))
    return md


def scalar(value) -> dg.MetadataValue:
    if isinstance(value, (bool, np.bool_)):
        return dg.MetadataValue.bool(bool(value))
    if isinstance(value, (int, np.integer)):
        return dg.MetadataValue.int(int(value))
    if isinstance(value, (float, np.floating)):
        return dg.MetadataValue.float(three_digits(value) if np.isfinite(value) else float(value))
    if isinstance(value, Path):
        return dg.MetadataValue.path(str(value))
    return dg.MetadataValue.text(str(value))


def scalars(info: dict, *keys: str) -> dict:
    return {k: scalar(info[k]) for k in keys if info.get(k) is not None}


def counts_table(counts: dict[str, int], name: str = "reason", value: str = "frames") -> dg.MetadataValue:
    """A two-column table, e.g. frames rejected per reason."""
    schema = dg.TableSchema(columns=[dg.TableColumn(name, "string"), dg.TableColumn(value, "int")])
    return dg.MetadataValue.table(
        records=[dg.TableRecord({name: str(k), value: int(v)}) for k, v in counts.items()], schema=schema
    )


def scan_points_table(centres, units: str, trains=None, frame_counts=None, frame_types=()) -> dg.MetadataValue:
    """One row per scan point: its value, trains, frames per frame type."""
    label = f"scan value ({units})" if units else "scan value"
    cols = [dg.TableColumn(label, "float")]
    if trains is not None:
        cols.append(dg.TableColumn("trains", "int"))
    cols += [dg.TableColumn(f"frames {t}", "int") for t in frame_types]
    rows = []
    for i, c in enumerate(np.asarray(centres, dtype=float)):
        row = {label: round(float(c), 6)}
        if trains is not None:
            row["trains"] = int(trains[i])
        for j, t in enumerate(frame_types):
            row[f"frames {t}"] = int(frame_counts[i][j])
        rows.append(dg.TableRecord(row))
    return dg.MetadataValue.table(records=rows, schema=dg.TableSchema(columns=cols))


def png_md(png: bytes, alt: str) -> dg.MetadataValue:
    """A PNG shown inline in the web UI (markdown with a data URL; the figures are tens of kB)."""
    return dg.MetadataValue.md(f"![{alt}](data:image/png;base64,{base64.b64encode(png).decode()})")


def table_from_frame(df) -> dg.MetadataValue:
    """A small pandas table as a Dagster table (numbers rounded for reading)."""
    types = {"i": "int", "u": "int", "f": "float", "b": "bool"}
    schema = dg.TableSchema(columns=[dg.TableColumn(str(c), types.get(df[c].dtype.kind, "string")) for c in df.columns])
    records = []
    for row in df.itertuples(index=False):
        rec = {}
        for c, v in zip(df.columns, row):
            kind = types.get(df[c].dtype.kind, "string")
            rec[str(c)] = (round(float(v), 6) if kind == "float" else int(v) if kind == "int"
                           else bool(v) if kind == "bool" else str(v))
        records.append(dg.TableRecord(rec))
    return dg.MetadataValue.table(records=records, schema=schema)


VERSION_KEYS = ("lineage_version", "code_version", "dark_version", "gain_version", "dark_versions", "gain_versions")


def version_metadata(info: dict) -> dict:
    """What made the output, in one block: its lineage and code versions, the calibration's, its inputs'.

    The hashes are for comparing (same hash: same code, config and inputs); the dark run is named apart.
    """
    rows = [(k.removesuffix("_version").removesuffix("_versions").replace("_", " "), str(info[k]))
            for k in VERSION_KEYS if info.get(k) is not None]
    if info.get("input_versions"):
        rows += [(f"input {k}", v) for k, v in sorted(json.loads(info["input_versions"]).items())]
    md = {}
    if info.get("dark_run") is not None:
        md["dark_run"] = dg.MetadataValue.text(str(info["dark_run"]))
    if rows:
        lines = "\n".join(f"| {k} | `{v}` |" for k, v in rows)
        md["versions"] = dg.MetadataValue.md(f"| of | version |\n|---|---|\n{lines}")
    return md


def materialized(asset: str, info: dict, metadata: dict) -> dg.MaterializeResult:
    """The materialization of an output: common and version metadata, its lineage as Dagster data
    version, and the results of the checks the science layer ran on it (same step)."""
    checks = [
        dg.AssetCheckResult(check_name=name, asset_key=dg.AssetKey(asset), passed=bool(c.passed),
                            description=c.description, metadata=dict(c.values), severity=dg.AssetCheckSeverity.ERROR)
        for name, c in info.get("checks", {}).items()
    ]
    return dg.MaterializeResult(
        metadata={**common(info), **metadata, **version_metadata(info)},
        data_version=dg.DataVersion(info["lineage_version"]),
        check_results=checks or None,
    )
