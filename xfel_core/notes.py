"""Notes on runs (``xfel-assets note r0042 "sample B"``): an append-only store that no reprocessing touches.

The store is one JSON-lines file, ``<processed root>/notes/notes.jsonl``, outside every asset's
output: a backfill, a reset or a new release never rewrites it. Each note is appended as one line
(one ``write`` under an exclusive lock), so the history of every run's notes is kept; the run
tables show every note of a run, oldest first.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import getpass
import json
import os
from dataclasses import dataclass
from pathlib import Path

from .config import BeamtimeConfig
from .exceptions import ConfigError
from .hashing import digest


@dataclass(frozen=True)
class Note:
    """One note on a run (or an in-situ measurement or sample)."""

    key: str
    text: str
    tags: tuple[str, ...]
    time: str  # UTC, ISO 8601
    user: str


def store_path(cfg: BeamtimeConfig) -> Path:
    return cfg.processed_root / "notes" / "notes.jsonl"


def add_note(cfg: BeamtimeConfig, key: str, text: str, tags: list[str] | tuple[str, ...] = ()) -> Note:
    """Append a note on ``key`` (a run ``r0042``, a measurement ``GaN01/GaN01_growth01`` or a sample)."""
    if not text.strip():
        raise ConfigError("a note needs a text")
    note = Note(key, text, tuple(tags), dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
                getpass.getuser())
    line = json.dumps({"key": note.key, "text": note.text, "tags": list(note.tags), "time": note.time,
                       "user": note.user}) + "\n"
    path = store_path(cfg)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o664)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.write(fd, line.encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    return note


def read_notes(cfg: BeamtimeConfig) -> dict[str, list[Note]]:
    """Every note, by key, oldest first (a line that is not a note, as a half-written last line, is passed over)."""
    out: dict[str, list[Note]] = {}
    try:
        text = store_path(cfg).read_text()
    except FileNotFoundError:
        return out
    for line in text.splitlines():
        try:
            d = json.loads(line)
            note = Note(str(d["key"]), str(d["text"]), tuple(d.get("tags", ())), str(d["time"]), str(d.get("user", "")))
        except (ValueError, KeyError, TypeError):
            continue
        out.setdefault(note.key, []).append(note)
    return out


def notes_version(cfg: BeamtimeConfig, key: None = None) -> str:
    """Source version of the notes: a hash of the store's content."""
    try:
        return digest(store_path(cfg).read_bytes().decode(errors="replace"), n=12)
    except FileNotFoundError:
        return "no-notes"
