"""One study process per output directory: an exclusive lock held while the study runs."""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from invkit.errors import InvkitError, unwritable_output

LOCK_NAME = ".invkit.lock"


@contextmanager
def exclusive(directory: Path) -> Iterator[None]:
    """Hold the directory's lock, or fail at once naming the process that holds it.

    The lock is an ``flock`` on a file in the directory: the operating system releases it when
    the holder exits, even after ``kill -9``, so a stale lock file never blocks a rerun.
    """
    path = directory / LOCK_NAME
    try:
        handle = path.open("a+")
    except OSError as error:
        raise unwritable_output(directory, error) from None
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "another process"
        handle.close()
        raise InvkitError(
            f"another invkit study ({holder}) is writing to {directory}; wait for it to finish, "
            "or give this one another --out"
        ) from None
    try:
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()}")
        handle.flush()
        yield
    finally:
        handle.close()  # closing releases the lock
