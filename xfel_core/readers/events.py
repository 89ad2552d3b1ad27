"""Event files, in the configured layout: the runs of the raw root, their files and their events.

One module per layout (:mod:`.pal` for PAL-XFEL, :mod:`.event_h5` for the generic one), each with
``run_files``, ``run_numbers`` and ``read_run``; a new layout is a new module and a line here.
"""

from __future__ import annotations

from pathlib import Path

from ..config import EventsConfig, run_key
from . import event_h5, pal
from .event_run import EventRun, ImageBlock

__all__ = ["EventRun", "ImageBlock", "LAYOUTS", "event_runs", "read_run", "run_files"]

LAYOUTS = {"pal": pal, "generic": event_h5}


def run_files(ev: EventsConfig, run: str) -> list[Path]:
    """The raw files of a run (pal: its scan-point files in scan order; generic: its file)."""
    return LAYOUTS[ev.layout].run_files(ev, int(run[1:]))


def event_runs(ev: EventsConfig) -> list[str]:
    """Run keys (``r0039``) found in the raw root, the dark run and ignored runs left out."""
    if not ev.raw_root.is_dir():
        return []
    numbers = LAYOUTS[ev.layout].run_numbers(ev)
    skip = set(ev.ignore_runs) | ({ev.dark_run} if ev.dark_run is not None else set())
    return [run_key(n) for n in sorted(numbers - skip) if n <= 9999]


def read_run(ev: EventsConfig, run: str) -> EventRun:
    """The events of a run in the configured layout."""
    return LAYOUTS[ev.layout].read_run(ev, run)
