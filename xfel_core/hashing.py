"""Short content hashes: of strings, and of files by name, size and modification time."""

from __future__ import annotations

import hashlib
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
