"""A third-party executor: passes last to first, through invkit's public run_pass."""

import traceback

from invkit import JobOutcome, hookimpl, run_pass


class Reversed:
    """Run passes last to first."""

    name = "reversed"

    def __call__(self, specs):
        for index in reversed(range(len(specs))):
            try:
                yield JobOutcome(index, result=run_pass(specs[index]))
            except (Exception, SystemExit) as error:
                yield JobOutcome(index, error=error, traceback=traceback.format_exc())


@hookimpl
def register_executors(register):
    register(Reversed)
