"""Fingerprints: digests of everything that determines a cell's value.

A cell is recomputed exactly when its fingerprint changes: the model spec, its parameters and
the bytes of its weights file; the dataset spec, options and the listing of its files (or,
with a dataset's ``verify = "content"``, their bytes); the
transform's and measure's parameters; the versions of invkit and of the plugins involved, and
the code of every component (``invkit.inputs.codeprint``).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

_HASHES: dict[tuple[str, int, int, int, int], str] = {}


def file_sha256(path: str | Path) -> str:
    """SHA-256 of a file's bytes, cached for this process per path, inode, size, modification
    and status-change time (a write changes the last, which no ``touch`` can restore)."""
    path = Path(path).resolve()
    stat = path.stat()
    key = (str(path), stat.st_ino, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns)
    if key not in _HASHES:
        hashed = hashlib.sha256()
        with path.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                hashed.update(block)
        _HASHES[key] = hashed.hexdigest()
    return _HASHES[key]


def digest(value: Any) -> str:
    """SHA-256 of a JSON rendering with sorted keys (tuples and lists read the same)."""
    text = json.dumps(value, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def path_digest(path: str | Path, content: bool = False) -> str | None:
    """A file's content hash; a folder's listing hash (every file's name, size and
    modification time), or with ``content`` the hash of every file's name and bytes; else
    ``None``. The listing is read in milliseconds but misses a same-size file replaced with its
    time restored; the content hash misses nothing and reads every byte."""
    path = Path(path)
    if path.is_file():
        return file_sha256(path)
    if path.is_dir():
        entries = []
        for item in sorted(path.rglob("*")):
            if item.is_file():
                name = str(item.relative_to(path))
                if content:
                    entries.append((name, file_sha256(item)))
                else:
                    stat = item.stat()
                    entries.append((name, stat.st_size, stat.st_mtime_ns))
        return digest(entries)
    return None
