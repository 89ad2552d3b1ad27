"""The run tables: one row per run (per in-situ measurement) with the platform's summary, every user variable and the notes.

Three tables, one per workflow (``run_table`` for the European XFEL runs, ``event_run_table``,
``insitu_run_table``), each written to ``<processed root>/run_table/<name>.parquet`` with
``.csv``, ``.xlsx`` and ``.html`` beside it. The HTML page is self-contained (its thumbnails
embedded), opens from the file system and sorts, filters and hides columns in the browser.
Summary columns are read from the runs' outputs, never recomputed; a run whose outputs are not made
yet has empty cells there.
"""

from __future__ import annotations

import base64
import datetime as dt
import html
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from zoneinfo import ZoneInfo

import h5py
import numpy as np
import pandas as pd

from .config import BeamtimeConfig
from .lineage import versions
from .notes import read_notes
from .outputs import atomic_files, done_info, read_attrs, write_table
from .variables import Variable, read_value

THUMB_PX = 96  # the thumbnails' height in the HTML page
LATEST_ROWS = 20  # the rows the web UI shows


def _first(attrs: dict, key: str, default=None):
    """An attribute as a Python scalar (netCDF attributes may be 1-element arrays)."""
    v = attrs.get(key, default)
    return np.ravel(v)[0].item() if isinstance(v, np.ndarray) and v.size else v


def _checks(*attr_sets: dict) -> str:
    """"passed" if every recorded check passed, else the failed ones with what was found."""
    failed = [f"{k[6:]}: {str(v)[8:]}" for a in attr_sets for k, v in a.items()
              if k.startswith("check_") and str(v) != "passed"]
    recorded = any(k.startswith("check_") for a in attr_sets for k in a)
    return "; ".join(failed) if failed else ("passed" if recorded else "")


def _raw_start(files_json) -> str:
    """The run's start: METADATA/creationDate of its first raw file (European XFEL files of format 1.0 and later)."""
    try:
        files = sorted(json.loads(files_json or "[]"))
        with h5py.File(files[0], "r") as f:
            raw = f["METADATA/creationDate"][0]
        text = raw.decode() if isinstance(raw, bytes) else str(raw)
        return dt.datetime.strptime(text[:15], "%Y%m%dT%H%M%S").replace(tzinfo=dt.UTC).isoformat(sep=" ")
    except (OSError, KeyError, IndexError, ValueError):
        return ""


def _reasons(counts: dict[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in counts.items() if v and k != "kept")


def euxfel_summary(cfg: BeamtimeConfig, run: str) -> dict:
    """A DSSC run's platform columns, from raw_run, framemask, scan_variable and binned_cube."""
    from .euxfel.framemask import read_framemask
    from .scan import read_scan_bins

    row: dict = {"start": "", "trains": None, "frames": None, "modules": None, "kept fraction": None,
                 "rejected": "", "scan points": None, "scan range": "", "mean pulse energy (uJ)": None,
                 "checks": "", "output": ""}
    raw, fm_path = cfg.output_path(run, "raw_run"), cfg.output_path(run, "framemask")
    scan_path, cube = cfg.output_path(run, "scan_variable"), cfg.output_path(run, "binned_cube")
    raw_a, fm_a, cube_a = read_attrs(raw), read_attrs(fm_path), read_attrs(cube)
    if raw.exists():
        with h5py.File(raw, "r") as f:
            fpt = f["frames_per_train"][()]
            row.update(trains=int(f["train_id"].shape[0]), modules=int(f["module"].shape[0]),
                       frames=int(fpt.max(axis=0).sum()) if fpt.size else 0)
        row["start"] = _raw_start(raw_a.get("input_files"))
    if fm_path.exists():
        fm = read_framemask(fm_path)
        row["kept fraction"] = round(float(fm.mask.mean()), 4) if fm.mask.size else 0.0
        row["rejected"] = _reasons(fm.reason_counts())
        energy = _first(fm_a, "mean_pulse_energy_uj")
        row["mean pulse energy (uJ)"] = None if energy is None else round(float(energy), 3)
    if scan_path.exists():
        bins, units = read_scan_bins(scan_path)
        row["scan points"] = len(bins.centres)
        row["scan range"] = f"{bins.centres.min():.4g} to {bins.centres.max():.4g} {units}" if len(bins.centres) else ""
    row["checks"] = _checks(raw_a, fm_a, cube_a)
    row["output"] = str(cube) if cube.exists() else ""
    return row


def events_summary(cfg: BeamtimeConfig, run: str) -> dict:
    """A run of event files' platform columns, from event_smalldata and event_cube."""
    import xarray as xr

    from .events.pipeline import CUBE_FILE, SMALLDATA_FILE, output_path
    from .readers.events import run_files

    row: dict = {"files written": "", "events": None, "kept fraction": None, "rejected": "", "timestamp join": "",
                 "scan points": None, "scan range": "", "mean I0": None, "checks": "", "output": ""}
    sd, cube = output_path(cfg, run, SMALLDATA_FILE), output_path(cfg, run, CUBE_FILE)
    files = run_files(cfg.require_events(), run)
    if files:  # the facility's shot timestamps are its timing system's counts, not a clock: the files' times
        last = max(p.stat().st_mtime for p in files)
        row["files written"] = dt.datetime.fromtimestamp(last, dt.UTC).isoformat(sep=" ", timespec="seconds")
    if sd.exists():
        with xr.open_dataset(sd, engine="h5netcdf") as ds:
            n, kept = int(_first(ds.attrs, "events")), int(_first(ds.attrs, "kept"))
            points = ds["scan_point_value"].values
            units = ds["scan_point_value"].attrs.get("units", "")
            row.update(events=n, **{"kept fraction": round(kept / n, 4) if n else 0.0,
                                    "mean I0": round(float(np.nanmean(ds["i0"].values)), 4) if n else None,
                                    "rejected": _reasons(json.loads(str(_first(ds.attrs, "rejected_by_rule", "{}")))),
                                    "timestamp join": str(ds.attrs.get("timestamp_join", "")),
                                    "scan points": len(points),
                                    "scan range": f"{points.min():.4g} to {points.max():.4g} {units}" if len(points) else ""})
    row["checks"] = _checks(read_attrs(sd), read_attrs(cube))
    row["output"] = str(cube) if cube.exists() else ""
    return row


def insitu_summary(cfg: BeamtimeConfig, key: str) -> dict:
    """An in-situ measurement's platform columns, from insitu_frames and roi_series."""
    from .insitu import layout
    from .insitu.pipeline import FRAMES_FILE, ROI_SERIES_FILE

    sample, measurement = layout.split_measurement_key(key)
    row: dict = {"sample": sample, "start": "", "end": "", "frames": None, "exposure (s)": None,
                 "transmissions": "", "checks": "", "output": ""}
    frames, series = layout.measurement_output(cfg, key, FRAMES_FILE), layout.measurement_output(cfg, key, ROI_SERIES_FILE)
    if frames.exists():
        with h5py.File(frames, "r") as f:
            t, exposure, tr = f["time"][()], f["exposure_s"][()], f["transmission"][()]
        tz = ZoneInfo(cfg.require_insitu().timezone)  # the beamline's clock, as the headers have it
        stamp = lambda s: dt.datetime.fromtimestamp(float(s), tz).isoformat(sep=" ", timespec="seconds")  # noqa: E731
        row.update(start=stamp(t.min()), end=stamp(t.max()), frames=len(t),
                   **{"exposure (s)": float(np.median(exposure)),
                      "transmissions": ", ".join(f"{v:g}" for v in sorted(set(tr[np.isfinite(tr)].tolist())))})
    row["checks"] = _checks(read_attrs(frames), read_attrs(series))
    row["output"] = str(series) if series.exists() else ""
    return row


@dataclass(frozen=True)
class Table:
    """One workflow's run table: its asset, the runs' key column, the platform assets it reads, its summary."""

    name: str
    workflow: str
    key_column: str
    reads: tuple[str, ...]
    summary: Callable[[BeamtimeConfig, str], dict]
    preview: Callable[[BeamtimeConfig, str], Path | None]
    order: tuple[str, ...] = ()  # the columns the rows are sorted by (default: the runs' order)


def _euxfel_preview(cfg: BeamtimeConfig, run: str) -> Path:
    return cfg.output_path(run, "binned_cube").with_suffix(".png")


def _events_preview(cfg: BeamtimeConfig, run: str) -> Path:
    from .events.pipeline import CUBE_FILE, output_path

    return output_path(cfg, run, CUBE_FILE).with_suffix(".png")


def _insitu_preview(cfg: BeamtimeConfig, key: str) -> Path:
    from .insitu import layout
    from .insitu.pipeline import ROI_SERIES_FILE

    return layout.measurement_output(cfg, key, ROI_SERIES_FILE).with_suffix(".png")


TABLES = [
    Table("run_table", "euxfel", "run", ("raw_run", "scan_variable", "framemask", "binned_cube"), euxfel_summary,
          _euxfel_preview),
    Table("event_run_table", "events", "run", ("event_smalldata", "event_cube"), events_summary, _events_preview),
    Table("insitu_run_table", "insitu", "measurement", ("insitu_frames", "roi_series"), insitu_summary,
          _insitu_preview, order=("sample", "start")),
]


def output_path(cfg: BeamtimeConfig, table: str) -> Path:
    """``<processed root>/run_table/<table>.parquet`` (the .csv, .xlsx and .html beside it)."""
    return cfg.processed_root / "run_table" / f"{table}.parquet"


def _cell(value) -> object:
    """A variable's value as a table cell: scalars as they are, arrays and figures by their shape."""
    if value.kind in ("number", "string", "bool"):
        return value.value
    if value.kind == "figure":
        return "(figure)"
    if value.kind == "array" or value.kind == "xarray":
        data = np.asarray(value.value)
        if data.ndim == 1 and data.size <= 12 and np.issubdtype(data.dtype, np.number):
            return " ".join(f"{x:.3g}" for x in data)  # a short curve: its values
    if value.kind == "dataset":
        return f"(dataset: {', '.join(map(str, value.value.data_vars))})"
    return f"({value.kind} {'x'.join(map(str, np.shape(value.value)))})"


#: A variable and where its value for a run is: the run table's user columns.
Column = tuple[Variable, Callable[[str], Path]]


def table_frame(cfg: BeamtimeConfig, table: Table, keys: list[str],
                columns: list[Column]) -> tuple[pd.DataFrame, dict, dict]:
    """(the table, {(key, column): PNG path} of its thumbnails, {column: units}) of these runs now."""
    notes = read_notes(cfg)
    rows, thumbs, units = [], {}, {}
    for key in keys:
        row = {table.key_column: key, **table.summary(cfg, key)}
        preview = table.preview(cfg, key)
        if preview is not None and preview.exists():
            thumbs[(key, "preview")] = preview
            row["preview"] = str(preview)
        else:
            row["preview"] = ""
        for v, value_path in columns:
            col = f"{v.title} ({v.units})" if v.units else v.title
            units[col] = v.units
            path = value_path(key)
            cell: object = None
            if path.exists():
                val = read_value(path)
                if val.skipped is not None:
                    cell = f"skipped: {val.skipped}"
                else:
                    cell = _cell(val)
                    if val.kind == "figure":
                        thumbs[(key, col)] = path.with_suffix(".png")
            row[col] = cell
        row["notes"] = " | ".join(f"{n.text}" + (f" [{', '.join(n.tags)}]" if n.tags else "") for n in notes.get(key, []))
        row["tags"] = ", ".join(sorted({t for n in notes.get(key, []) for t in n.tags}))
        rows.append(row)
    df = pd.DataFrame(rows)
    if table.order and len(df):
        df = df.sort_values(list(table.order), kind="stable").reset_index(drop=True)
    for col in df.columns:  # mixed columns (a value, a skip reason) as text: Parquet holds one type per column
        if df[col].dtype == object and len({type(x) for x in df[col] if x is not None}) > 1:
            df[col] = df[col].map(lambda x: None if x is None else str(x))
    return df, thumbs, units


_HTML_SCRIPT = """
const table = document.getElementById('runs'), body = table.tBodies[0], heads = [...table.tHead.rows[0].cells];
let sortCol = -1, sortAsc = true;
function cellValue(row, i) { const c = row.cells[i]; return c.dataset.v !== undefined ? c.dataset.v : c.textContent; }
function compare(a, b) { const x = parseFloat(a), y = parseFloat(b);
  if (!isNaN(x) && !isNaN(y) && String(x) === a.trim() && String(y) === b.trim()) return x - y;
  return a.localeCompare(b, undefined, {numeric: true}); }
heads.forEach((h, i) => h.querySelector('.name').addEventListener('click', () => {
  sortAsc = sortCol === i ? !sortAsc : true; sortCol = i;
  const rows = [...body.rows].sort((r, s) => (sortAsc ? 1 : -1) * compare(cellValue(r, i), cellValue(s, i)));
  rows.forEach(r => body.appendChild(r));
  heads.forEach(g => g.classList.remove('asc', 'desc')); h.classList.add(sortAsc ? 'asc' : 'desc'); }));
function filter() {
  const fs = heads.map(h => h.querySelector('input').value.toLowerCase());
  let shown = 0;
  for (const r of body.rows) { const ok = fs.every((f, i) => !f || cellValue(r, i).toLowerCase().includes(f));
    r.style.display = ok ? '' : 'none'; shown += ok; }
  document.getElementById('count').textContent = shown + ' of ' + body.rows.length + ' rows'; }
heads.forEach(h => h.querySelector('input').addEventListener('input', filter));
document.querySelectorAll('#columns input').forEach(box => box.addEventListener('change', () => {
  const i = +box.dataset.col;
  for (const r of table.rows) r.cells[i].style.display = box.checked ? '' : 'none'; }));
filter();
"""

_HTML_STYLE = """
body { font-family: sans-serif; font-size: 13px; margin: 1em; }
table { border-collapse: collapse; } th, td { border: 1px solid #ccc; padding: 3px 6px; vertical-align: top; }
th { background: #eef; position: sticky; top: 0; } th .name { cursor: pointer; display: block; }
th.asc .name::after { content: ' \\25B2'; } th.desc .name::after { content: ' \\25BC'; }
th input { width: 7em; font-size: 11px; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
td img { height: {thumb}px; } #columns label { margin-right: .8em; }
.error { color: #a00; border: 1px solid #a00; padding: .5em; }
""".replace("{thumb}", str(THUMB_PX))


def html_page(df: pd.DataFrame, thumbs: dict, title: str, key_column: str, error: str | None) -> str:
    """The run table as one self-contained HTML page (thumbnails embedded as data URIs)."""
    cols = list(df.columns)
    esc = html.escape
    head = "".join(f'<th><span class="name">{esc(c)}</span><input placeholder="filter" aria-label="filter {esc(c)}"></th>' for c in cols)
    body = []
    for _, row in df.iterrows():
        cells = []
        for c in cols:
            v = row[c]
            png = thumbs.get((row[key_column], c))
            if png is not None and Path(png).exists():
                data = base64.b64encode(Path(png).read_bytes()).decode()
                cells.append(f'<td data-v="{esc(str(png))}"><a href="file://{esc(str(png))}">'
                             f'<img alt="{esc(c)} of {esc(str(row[key_column]))}" src="data:image/png;base64,{data}"></a></td>')
                continue
            if c == "output" and v:
                cells.append(f'<td data-v="{esc(str(v))}"><a href="file://{esc(str(v))}" title="{esc(str(v))}">'
                             f"{esc(Path(str(v)).name)}</a></td>")
                continue
            missing = v is None or (isinstance(v, float) and np.isnan(v))
            text = "" if missing else (f"{v:.6g}" if isinstance(v, float) else str(v))
            num = isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool) and not missing
            cells.append(f'<td{" class=num" if num else ""}>{esc(text)}</td>')
        body.append("<tr>" + "".join(cells) + "</tr>")
    boxes = "".join(f'<label><input type="checkbox" checked data-col="{i}">{esc(c)}</label>' for i, c in enumerate(cols))
    err = f'<p class="error">variables file: {esc(error)}</p>' if error else ""
    made = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    return (f'<!DOCTYPE html><html><head><meta charset="utf-8"><title>{esc(title)}</title>'
            f"<style>{_HTML_STYLE}</style></head><body><h1>{esc(title)}</h1>{err}"
            f'<p>Made {made} UTC. <span id="count"></span>. Click a column name to sort; type in a filter box to '
            f'keep the rows that contain the text.</p><p id="columns">Columns: {boxes}</p>'
            f'<table id="runs"><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table>'
            f"<script>{_HTML_SCRIPT}</script></body></html>")


def make_run_table(cfg: BeamtimeConfig, table: Table, keys: list[str], columns: list[Column],
                   error: str | None) -> dict:
    """Write one workflow's run table as Parquet, CSV, Excel and HTML; returns its paths and its last rows.

    ``error``: the variables file's load error, shown at the top of the page.
    """
    t0 = time.perf_counter()
    vers = versions.made_from(cfg, table.name, None)
    df, thumbs, units = table_frame(cfg, table, keys, columns)
    path = output_path(cfg, table.name)
    attrs = {"software": "xfel-assets", "created_utc": dt.datetime.now(dt.UTC).isoformat(),
             "units": units, "variables_error": error or "", **vers}
    page = html_page(df, thumbs, f"{cfg.name}: {table.name}", table.key_column, error)
    # The four files together: all new, or (disk full, killed) all as they were.
    with atomic_files([path.with_suffix(".xlsx"), path.with_suffix(".html")]) as (xlsx, html_tmp):
        with pd.ExcelWriter(xlsx, engine="openpyxl") as xl:
            df.to_excel(xl, sheet_name=table.workflow, index=False)
            ws = xl.sheets[table.workflow]
            ws.freeze_panes = "B2"
            ws.auto_filter.ref = ws.dimensions
        html_tmp.write_text(page)
        write_table(df, path, attrs)
    return done_info(path, t0, rows=len(df), columns=len(df.columns), html=str(path.with_suffix(".html")),
                     csv_path=str(path.with_suffix(".csv")), xlsx=str(path.with_suffix(".xlsx")),
                     latest=df.drop(columns=["preview", "output"], errors="ignore").tail(LATEST_ROWS), variables_error=error or "",
                     **vers)


def read_table(cfg: BeamtimeConfig, table: str) -> pd.DataFrame:
    """A run table as last written (attributes in ``.attrs``)."""
    from .exceptions import MissingInputError

    path = output_path(cfg, table)
    if not path.exists():
        raise MissingInputError(f"{path} does not exist: materialize {table} first (xfel-assets materialize)")
    df = pd.read_parquet(path)
    df.attrs.update(read_attrs(path))
    return df
