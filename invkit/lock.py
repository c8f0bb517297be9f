"""One study process per output directory: an exclusive lock held while the study runs."""

from __future__ import annotations

import fcntl
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from invkit.errors import InvkitError
from invkit.paths import create_own

LOCK_NAME = ".invkit.lock"
POLL_SECONDS = 0.1


def _locked(handle: Any, wait: float) -> bool:
    deadline = time.monotonic() + wait
    while True:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if time.monotonic() >= deadline:
                return False
            time.sleep(POLL_SECONDS)


@contextmanager
def exclusive(directory: Path, what: str = "invkit study", wait: float = 0) -> Iterator[None]:
    """Hold the directory's lock, waiting at most ``wait`` seconds for it; else fail naming
    the process that holds it (``what`` is how this process describes itself there).

    The lock is an ``flock`` on a file in the directory: the operating system releases it when
    the holder exits, even after ``kill -9``, so a stale lock file never blocks a rerun. The
    file is never opened through a symbolic link.
    """
    handle = os.fdopen(create_own(directory / LOCK_NAME), "r+")
    if not _locked(handle, wait):
        handle.seek(0)
        holder = handle.read().strip() or "invkit process"
        handle.close()
        waited = f" (waited {wait:g} s)" if wait else ""
        raise InvkitError(
            f"another {holder} is writing to {directory}{waited}; wait for it to finish, or give "
            "this one another --out"
        ) from None
    try:
        handle.seek(0)
        handle.truncate()
        handle.write(f"{what} (pid {os.getpid()})")
        handle.flush()
        yield
    finally:
        handle.close()  # closing releases the lock
