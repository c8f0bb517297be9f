"""Built-in executor: run a study's jobs one after the other, in this process."""

from __future__ import annotations

import traceback
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from invkit.plugin.components import JobOutcome
from invkit.plugin.hookspecs import hookimpl


class LocalExecutor:
    """Run jobs one after the other in this process; a failing job (even one whose code calls
    ``sys.exit``) does not stop the others."""

    name = "local"

    def __call__(self, jobs: Sequence[Callable[[], Any]]) -> Iterator[JobOutcome]:
        for index, job in enumerate(jobs):
            try:
                result = job()
            except (Exception, SystemExit) as error:  # a user's sys.exit() fails its job only
                yield JobOutcome(index, error=error, traceback=traceback.format_exc())
            else:
                yield JobOutcome(index, result=result)

    def __repr__(self) -> str:
        return "LocalExecutor()"


@hookimpl
def register_executors(register):
    register(LocalExecutor)
