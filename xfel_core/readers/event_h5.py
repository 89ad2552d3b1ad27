"""Event files of the generic layout: one HDF5 file per run, its dataset paths from the config.

Every per-event dataset must have as many entries as there are images (``events.generic``).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from ..config import EventsConfig
from ..exceptions import RunDataError
from .event_run import EventRun, ImageBlock, open_file, require_dataset

_RUN_RE_CACHE: dict[str, re.Pattern] = {}


def run_file(ev: EventsConfig, number: int) -> Path:
    return ev.raw_root / ev.generic.file.format(run=number)


def run_files(ev: EventsConfig, number: int) -> list[Path]:
    """The run's file, if it is there."""
    path = run_file(ev, number)
    return [path] if path.is_file() else []


def run_numbers(ev: EventsConfig) -> set[int]:
    """The run numbers of the files in the raw root that match ``events.generic.file``."""
    pattern = _RUN_RE_CACHE.setdefault(ev.generic.file, _file_pattern(ev.generic.file))
    return {int(m.group(1)) for p in ev.raw_root.rglob("*")
            if (m := pattern.match(str(p.relative_to(ev.raw_root)))) and p.is_file()}


def _file_pattern(template: str) -> re.Pattern:
    """A regex matching ``template`` with its ``{run...}`` field as the run number."""
    head, _, rest = template.partition("{run")
    _, _, tail = rest.partition("}")
    return re.compile("^" + re.escape(head) + r"(\d+)" + re.escape(tail) + "$")


def read_run(ev: EventsConfig, run: str) -> EventRun:
    """The events of run ``run`` (``r0039``) from its file."""
    g = ev.generic
    path = run_file(ev, int(run[1:]))
    if not path.is_file():
        raise RunDataError(f"run {run}: no file {path} (events.generic.file {g.file!r})")
    with open_file(path) as f:
        images = require_dataset(f, g.images, path)
        if images.ndim != 3:
            raise RunDataError(f"{path}: {g.images} has shape {images.shape}; expected (events, y, x)")
        n = images.shape[0]

        def per_event(name: str, dtype) -> np.ndarray:
            d = require_dataset(f, name, path)
            values = d[()]
            if values.ndim > 1 and values.shape[1:] == (1,) * (values.ndim - 1):
                values = values.reshape(len(values))
            if values.shape != (n,):
                raise RunDataError(f"{path}: {name} has shape {values.shape} but {g.images} has {n} events; "
                                   "every per-event dataset needs one value per image")
            return values.astype(dtype)

        ts = per_event(g.timestamps, np.int64) if g.timestamps else np.arange(n, dtype=np.int64)
        i0 = per_event(g.i0, np.float64)
        scan = per_event(g.scan, np.float64)
        laser = per_event(g.laser, bool) if g.laser else np.ones(n, bool)
        tt = per_event(g.timing_tool, np.float64) if g.timing_tool else None
        shape = images.shape[1:]
    return EventRun(run=run, files=[path], timestamp=ts, i0=i0, scan=scan, laser=laser, timing_tool=tt,
                    blocks=[ImageBlock(path, g.images, np.arange(n), np.arange(n))], shape=tuple(shape), scan_name=g.scan)
