"""`xfel-assets runs` (the run tables in the terminal) and `xfel-assets note` (a note on a run)."""

from __future__ import annotations

import json
import sys

import numpy as np
import pandas as pd

from xfel_core import runtable
from xfel_core.config import RUN_KEY_RE, BeamtimeConfig
from xfel_core.exceptions import ConfigError
from xfel_core.lineage import model
from xfel_core.notes import add_note, read_notes
from xfel_core.workflows import variables as declared

FORMATS = ("table", "csv", "json", "markdown")


def current_tables(cfg: BeamtimeConfig, workflow: str | None = None) -> list[tuple[runtable.Table, pd.DataFrame]]:
    """Each run table of the beamtime (of one workflow) as its runs' outputs, variables and notes are now."""
    model.load_files(cfg)
    out = []
    for t in runtable.TABLES:
        if (workflow is None or t.workflow == workflow) and model.asset(t.name).enabled(cfg):
            columns = [(v, lambda key, v=v: declared.output_path(cfg, v, key))
                       for v in declared.variables() if v.workflow == t.workflow]
            df, _, _ = runtable.table_frame(cfg, t, declared.run_keys(cfg, t.workflow), columns)
            out.append((t, df))
    return out


def pick_columns(df: pd.DataFrame, spec: str | None, key_column: str) -> pd.DataFrame:
    """The columns named in 'a,b' (a name, else the start of one in any case), after the key column; all without spec."""
    if not spec:
        return df.drop(columns=[c for c in ("preview",) if c in df.columns])
    chosen = [key_column]
    for want in (w.strip() for w in spec.split(",") if w.strip()):
        found = ([c for c in df.columns if c == want] or [c for c in df.columns if c.lower() == want.lower()]
                 or [c for c in df.columns if c.lower().startswith(want.lower())])
        if len(found) != 1:
            what = "matches no column" if not found else f"matches {len(found)} columns ({', '.join(found)})"
            raise ConfigError(f"--columns {want!r} {what}; the columns are: {', '.join(df.columns)}")
        chosen += [c for c in found if c not in chosen]
    return df[chosen]


def _text(v) -> str:
    if v is None or (isinstance(v, float) and np.isnan(v)):
        return ""
    return f"{v:.6g}" if isinstance(v, float) else str(v)


def render(df: pd.DataFrame, fmt: str) -> str:
    """A table as text: aligned columns, CSV, JSON records or Markdown."""
    if fmt == "csv":
        return df.to_csv(index=False).rstrip("\n")
    if fmt == "json":
        return json.dumps([{c: (None if _text(v) == "" else v.item() if hasattr(v, "item") else v)
                            for c, v in zip(df.columns, row)} for row in df.itertuples(index=False)], indent=1)
    cells = [[_text(v) for v in row] for row in df.itertuples(index=False)]
    if fmt == "markdown":
        esc = lambda s: s.replace("|", "\\|")  # noqa: E731
        return "\n".join(["| " + " | ".join(map(esc, df.columns)) + " |", "|" + "---|" * len(df.columns)]
                         + ["| " + " | ".join(map(esc, r)) + " |" for r in cells])
    widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(df.columns)]
    line = lambda r: "  ".join(s.ljust(w) for s, w in zip(r, widths)).rstrip()  # noqa: E731
    return "\n".join([line(list(df.columns)), "  ".join("-" * w for w in widths)] + [line(r) for r in cells])


def cmd_runs(args, cfg: BeamtimeConfig) -> int:
    tables = current_tables(cfg, args.workflow)
    if declared.load_error():
        print(f"xfel-assets: the variables file does not load, its columns are left out: {declared.load_error()}",
              file=sys.stderr)
    if not tables:
        print("no run table: the beamtime has no workflow" + (f" {args.workflow}" if args.workflow else ""),
              file=sys.stderr)
        return 1
    for i, (t, df) in enumerate(tables):
        df = pick_columns(df, args.columns, t.key_column)
        if len(tables) > 1 and args.format in ("table", "markdown"):
            print(("\n" if i else "") + f"{t.name} ({t.workflow}, {len(df)} rows)")
        print(render(df, args.format))
    return 0


def known_keys(cfg: BeamtimeConfig) -> set[str]:
    """Every run, event run, in-situ measurement and sample the beamtime has on disk now."""
    model.load_files(cfg)
    keys: set[str] = set()
    for spec in model.assets():
        if spec.partitioning is not model.BEAMTIME and not spec.partitioning.dims and spec.enabled(cfg):
            keys.update(spec.partitioning.keys(cfg, model.Scope()))
    return keys


def cmd_note(args, cfg: BeamtimeConfig) -> int:
    key = args.key
    if not (RUN_KEY_RE.match(key) or key in known_keys(cfg)):
        raise ConfigError(f"{key!r} is neither a run (r0042) nor an in-situ sample or measurement of this beamtime")
    if args.text is None:
        for n in read_notes(cfg).get(key, []):
            print(f"{n.time}  {n.user}: {n.text}" + (f"  [{', '.join(n.tags)}]" if n.tags else ""))
        return 0
    note = add_note(cfg, key, args.text, args.tag or [])
    print(f"note on {key} saved ({note.time}); {len(read_notes(cfg)[key])} notes on it")
    return 0
