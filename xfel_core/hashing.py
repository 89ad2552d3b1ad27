"""Short content hashes: of strings, of files by name, size and modification time, and of a file's bytes."""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path


def digest(*parts: str, n: int = 16) -> str:
    """A short sha256 hex digest of strings."""
    h = hashlib.sha256()
    for p in parts:
        h.update(p.encode())
        h.update(b"\0")
    return h.hexdigest()[:n]


def files_fingerprint(files: list[Path]) -> str:
    """A hash of file names, sizes and modification times: changes when a file is rewritten or added."""
    parts = []
    for p in sorted(files):
        st = p.stat()
        parts.append(f"{p.name}:{st.st_size}:{st.st_mtime_ns}")
    return digest(*parts)


def file_states(files: list[Path]) -> dict[str, list[int]]:
    """{file name: [size in bytes, modification time in ns]}: what a run's files were when a step took them."""
    out = {}
    for p in sorted(files, key=lambda p: p.name):
        try:
            st = Path(p).stat()
        except FileNotFoundError:
            continue
        out[p.name] = [st.st_size, st.st_mtime_ns]
    return out


def state_changes(before: dict[str, list[int]], after: dict[str, list[int]]) -> list[str]:
    """What differs between two :func:`file_states`, file by file, in words ("RAW-…-S00001.h5 deleted")."""
    out = [f"{n} deleted" for n in sorted(before.keys() - after.keys())]
    out += [f"{n} added" for n in sorted(after.keys() - before.keys())]
    out += [f"{n} rewritten ({before[n][0]} -> {after[n][0]} bytes)" for n in sorted(before.keys() & after.keys())
            if list(before[n]) != list(after[n])]
    return out


@contextmanager
def files_unchanged(what: str, files: Callable[[], list[Path]], at_start: dict[str, list[int]]) -> Iterator[None]:
    """Fail the block with RawFileChangedError naming the files if ``files()`` changed from ``at_start`` while it ran.

    Checked when the block ends and when it fails: a file truncated under a reader fails it with a bare
    KeyError or OSError from HDF5; the change, named, is the error to report."""
    from .exceptions import RawFileChangedError

    def changed() -> str:
        return "; ".join(state_changes(at_start, file_states(files())))

    try:
        yield
    except Exception as e:
        why = changed()
        if why:
            raise RawFileChangedError(f"{what}: its raw files changed while they were read ({why}): nothing was "
                                      f"written ({type(e).__name__}: {e})") from e
        raise
    why = changed()
    if why:
        raise RawFileChangedError(f"{what}: its raw files changed while they were read ({why}): nothing was written")


def content_hash(path) -> str:
    """sha256 of a file's bytes ("" for no file; "unreadable": the error naming it comes where it is read).

    Kept per process by name, size and modification time: the config is read often (every sensor tick).
    """
    if not path:
        return ""
    try:
        st = Path(path).stat()
    except OSError:
        return "unreadable"
    return _content_hash(str(path), st.st_mtime_ns, st.st_size)


@functools.lru_cache(maxsize=64)
def _content_hash(path: str, mtime_ns: int, size: int) -> str:
    try:
        return hashlib.sha256(Path(path).read_bytes()).hexdigest()
    except OSError:
        return "unreadable"
