"""Paths in configs are relative to the config file's folder; output files are written whole."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

from invkit.errors import StorageError, unwritable_output

TEMPORARY_SUFFIX = ".invkit-tmp"


def resolve_path(value: str, base_dir: Path) -> str:
    """``value`` as an absolute path, a relative one taken from ``base_dir`` (``~`` expanded).

    Loaders whose spec is a path set ``resolve_spec = resolve_path`` so that a study resolves
    it against the config's folder; parameters annotated ``pathlib.Path`` are resolved so too.
    """
    path = Path(value).expanduser()
    return str(path if path.is_absolute() else (base_dir / path).resolve())


def check_writable(directory: Path) -> None:
    """Fail now, naming the directory and the cause, if a file cannot be written in it."""
    probe = directory / ".invkit-write-test"
    try:
        probe.write_text("ok")
        probe.unlink()
    except OSError as error:
        raise unwritable_output(directory, error) from None


@contextmanager
def replacing(path: Path) -> Iterator[Path]:
    """A temporary path beside ``path`` to write to; when the block ends it replaces ``path``
    in one rename, so a killed or failed write leaves the previous file whole. A file-system
    failure (disk full, read-only, folder gone) is a ``StorageError`` naming ``path``."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}{TEMPORARY_SUFFIX}")
    try:
        yield temporary
        os.replace(temporary, path)
    except OSError as error:
        with suppress(OSError):  # the folder itself may be gone; the error below says so
            temporary.unlink(missing_ok=True)
        raise StorageError(
            f"cannot write {str(path)!r} ({error.strerror or error}); the results store is "
            "unharmed: fix the disk or folder, then `invkit report` rewrites the report"
        ) from None
