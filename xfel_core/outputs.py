"""Writing outputs safely: a temporary file in the target folder, renamed into place when complete.

A step that fails or is killed half-way leaves the previous output (if any) intact and no
partial file under the output's name.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import h5py

from . import __version__
from .exceptions import OutputBusyError


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _temporary_name(path: Path) -> Path:
    # Host and pid: on a shared file system writers on other nodes (SLURM jobs) must be told apart.
    return path.with_name(f".{path.name}.tmp-{socket.gethostname()}-{os.getpid()}")


def remove_abandoned_temporaries(path: Path) -> list[Path]:
    """Delete temporary files of ``path`` left by writers on this host that were killed (their process is gone)."""
    removed = []
    host = socket.gethostname()
    for tmp in path.parent.glob(f".{path.name}.tmp-*"):
        writer, _, pid = tmp.name.split(".tmp-", 1)[1].rpartition("-")
        if writer in ("", host) and pid.isdigit() and not _pid_alive(int(pid)):
            tmp.unlink(missing_ok=True)
            removed.append(tmp)
    return removed


#: Another host's temporary of an output younger than this is taken as a writer at work (its process cannot be seen).
FOREIGN_WRITER_S = 3600.0


def other_writers(path: Path, ours: Path) -> list[str]:
    """The other writers of ``path`` at work now (``host pid``): their temporaries beside it, from live processes."""
    host, out = socket.gethostname(), []
    for tmp in path.parent.glob(f".{path.name}.tmp-*"):
        if tmp == ours:
            continue
        writer, _, pid = tmp.name.split(".tmp-", 1)[1].rpartition("-")
        try:
            age = time.time() - tmp.stat().st_mtime
        except FileNotFoundError:
            continue
        alive = _pid_alive(int(pid)) if writer == host and pid.isdigit() else age < FOREIGN_WRITER_S
        if alive:
            out.append(f"{writer} pid {pid}")
    return out


@contextmanager
def atomic_files(paths: list[Path]) -> Iterator[list[Path]]:
    """Temporaries beside ``paths``, renamed to them together only if the block succeeds.

    One output in several files (a table as Parquet, CSV, Excel and HTML) is then all new or all as
    before. A second process writing one of them at the same time is an error (:class:`OutputBusyError`)
    for the one that comes later, and an OSError while writing names the file.
    """
    paths = [Path(p) for p in paths]
    temps = []
    try:
        for path in paths:
            path.parent.mkdir(parents=True, exist_ok=True)
            remove_abandoned_temporaries(path)
            tmp = _temporary_name(path)
            tmp.touch()  # seen by a writer that starts later, before it writes
            temps.append(tmp)
            others = other_writers(path, tmp)
            if others:
                raise OutputBusyError(f"{path} is being written by another process now ({', '.join(others)}): two "
                                      "runs make the same output at once (a sensor's run and a backfill?); this one "
                                      "stops, the other's result stands")
        try:
            yield temps
        except OSError as e:
            if e.filename is None:
                raise OSError(e.errno, f"{e.strerror or e}: writing {' / '.join(map(str, paths))}") from e
            raise
        for tmp, path in zip(temps, paths):
            os.replace(tmp, path)
    finally:
        for tmp in temps:
            tmp.unlink(missing_ok=True)


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it to ``path`` if the block succeeds (see :func:`atomic_files`)."""
    with atomic_files([path]) as (tmp,):
        yield tmp


@contextmanager
def atomic_h5(path: Path) -> Iterator[h5py.File]:
    """An h5py file opened for writing that appears at ``path`` only when closed successfully."""
    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w") as f:
            yield f


def write_png(path: Path, png: bytes) -> Path:
    """Write PNG bytes to ``path`` atomically; returns the path."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(png)
    return path


def provenance(config_yaml: str, inputs: list[str], code_version: str | None = None, **extra) -> dict:
    """Attributes every output carries: what made it, from what, when."""
    attrs = {
        "software": "xfel-assets",
        "code_version": code_version or __version__,
        "created_utc": _dt.datetime.now(_dt.UTC).isoformat(timespec="milliseconds"),
        "config_yaml": config_yaml,
        "input_files": json.dumps(sorted(str(p) for p in inputs)),
    }
    attrs.update({k: v for k, v in extra.items() if v is not None})
    return attrs


#: Key of the output attributes in a Parquet file's schema metadata (a JSON object).
PARQUET_ATTRS_KEY = b"xfel_assets"


def write_table(df, path: Path, attrs: dict) -> tuple[Path, Path]:
    """Write a pandas table as Parquet (with ``attrs`` in its schema metadata) and CSV beside it, atomically."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pandas(df, preserve_index=False)
    meta = dict(table.schema.metadata or {})
    meta[PARQUET_ATTRS_KEY] = json.dumps(attrs, default=str).encode()
    table = table.replace_schema_metadata(meta)
    path = Path(path)
    csv = path.with_suffix(".csv")
    with atomic_files([csv, path]) as (csv_tmp, tmp):
        df.to_csv(csv_tmp, index=False)
        pq.write_table(table, tmp)
    return path, csv


def read_attrs(path: Path) -> dict:
    """The attributes of an output file (versions, checks, provenance); {} if it does not exist or is unreadable."""
    if Path(path).suffix == ".parquet":
        import pyarrow.parquet as pq

        try:
            meta = pq.read_schema(path).metadata or {}
            return json.loads(meta.get(PARQUET_ATTRS_KEY, b"{}"))
        except (FileNotFoundError, OSError, ValueError):
            return {}
    try:
        with h5py.File(path, "r") as f:
            return dict(f.attrs)
    except (FileNotFoundError, OSError):
        return {}


def done_info(path: Path, t0: float, **info) -> dict:
    """A step's result dict: what it found, and its output's path and size and the seconds since t0."""
    info.update(path=path, size_bytes=path.stat().st_size, seconds=time.perf_counter() - t0)
    return info
