"""Paths in configs are relative to the config file's folder; output files are written whole,
and never through a symbolic link: invkit writes and removes only real files of its own inside
the output folder."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

from invkit.errors import InvkitError, StorageError, unwritable_output

TEMPORARY_SUFFIX = ".invkit-tmp"
PROBE_NAME = ".invkit-write-test"


def resolve_path(value: str, base_dir: Path) -> str:
    """``value`` as an absolute path, a relative one taken from ``base_dir`` (``~`` expanded).

    Loaders whose spec is a path set ``resolve_spec = resolve_path`` so that a study resolves
    it against the config's folder; parameters annotated ``pathlib.Path`` are resolved so too.
    """
    path = Path(value).expanduser()
    return str(path if path.is_absolute() else (base_dir / path).resolve())


def cache_root() -> Path:
    """invkit's own cache, outside any study: ``$INVKIT_CACHE_DIR``, else ``~/.cache/invkit``."""
    return Path(os.environ.get("INVKIT_CACHE_DIR") or Path.home() / ".cache" / "invkit")


def link_error(paths: list[Path]) -> InvkitError:
    """The one message for symbolic links where invkit writes its own files."""
    shown = "; ".join(f"{str(path)!r} -> {os.readlink(path)!r}" for path in paths)
    return InvkitError(
        f"{shown}: a symbolic link where invkit writes its own files. invkit never writes, "
        "reads or deletes through a link in its output folder, which could reach files outside "
        "it: remove the link (or copy the real file in its place), or choose another --out"
    )


def refuse_links(directory: Path, names: list[str] | tuple[str, ...]) -> None:
    """Fail, naming every one, if any of ``names`` in ``directory`` is a symbolic link
    (dangling or not)."""
    links = [directory / name for name in names if (directory / name).is_symlink()]
    if links:
        raise link_error(links)


def create_own(path: Path, flags: int = 0) -> int:
    """A file descriptor of ``path``, opened read-write and created if missing, never through
    a symbolic link (``O_NOFOLLOW``): a link there is refused with ``link_error``."""
    try:
        return os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | flags, 0o644)
    except OSError as error:
        if path.is_symlink():
            raise link_error([path]) from None
        raise unwritable_output(path.parent, error) from None


def is_own(path: Path, recorded: str) -> bool:
    """``path`` is a regular file (not a link) whose bytes are the ones invkit recorded writing
    (their SHA-256): the only kind of file invkit removes."""
    from invkit.fingerprint import file_sha256

    return path.is_file() and not path.is_symlink() and file_sha256(path) == recorded


def check_writable(directory: Path) -> None:
    """Fail now, naming the directory and the cause, if a file cannot be written in it."""
    probe = directory / PROBE_NAME
    refuse_links(directory, [PROBE_NAME])
    try:
        probe.unlink(missing_ok=True)  # a probe a killed run left behind
        descriptor = create_own(probe, os.O_EXCL)
        os.write(descriptor, b"ok")
        os.close(descriptor)
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
        temporary.unlink(missing_ok=True)  # a name of ours, left by a killed run: never followed
        yield temporary
        os.replace(temporary, path)
    except OSError as error:
        with suppress(OSError):  # the folder itself may be gone; the error below says so
            temporary.unlink(missing_ok=True)
        raise StorageError(
            f"cannot write {str(path)!r} ({error.strerror or error}); the results store is "
            "unharmed: fix the disk or folder, then `invkit report` rewrites the report"
        ) from None
