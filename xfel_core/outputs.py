"""Writing outputs safely: a temporary file in the target folder, renamed into place when complete.

A step that fails or is killed half-way leaves the previous output (if any) intact and no
partial file under the output's name.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import h5py

from . import __version__


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_abandoned_temporaries(path: Path) -> list[Path]:
    """Delete temporary files of ``path`` left by writers that were killed (their process is gone)."""
    removed = []
    for tmp in path.parent.glob(f".{path.name}.tmp-*"):
        pid = tmp.name.rsplit("-", 1)[-1]
        if pid.isdigit() and not _pid_alive(int(pid)):
            tmp.unlink(missing_ok=True)
            removed.append(tmp)
    return removed


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it to ``path`` if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_abandoned_temporaries(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


@contextmanager
def atomic_h5(path: Path) -> Iterator[h5py.File]:
    """An h5py file opened for writing that appears at ``path`` only when closed successfully."""
    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w") as f:
            yield f


def provenance(config_yaml: str, inputs: list[str], code_version: str | None = None, **extra) -> dict:
    """Attributes every output carries: what made it, from what, when."""
    attrs = {
        "software": "xfel-assets",
        "code_version": code_version or __version__,
        "created_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "config_yaml": config_yaml,
        "input_files": json.dumps(sorted(str(p) for p in inputs)),
    }
    attrs.update({k: v for k, v in extra.items() if v is not None})
    return attrs


def read_attrs(path: Path) -> dict:
    """The attributes of an output file (versions, checks, provenance); {} if it does not exist or is unreadable."""
    try:
        with h5py.File(path, "r") as f:
            return dict(f.attrs)
    except (FileNotFoundError, OSError):
        return {}
