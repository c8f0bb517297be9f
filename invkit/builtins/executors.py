"""Built-in executors: ``local`` runs passes one after the other in this process; ``processes``
runs them in a pool of worker processes (one GPU each, round robin, when there are GPUs);
``ray`` (``invkit.builtins.ray_executor``) runs them as Ray tasks.

An executor receives the study's ``PassSpec``s and yields one ``JobOutcome`` per pass, in any
order; it never raises for a failed pass. Only the study writes results to the store.
"""

from __future__ import annotations

import dataclasses
import multiprocessing
import os
import pickle
import signal
import traceback
from collections.abc import Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait

from invkit.errors import InvkitError
from invkit.plugin.hookspecs import hookimpl
from invkit.plugin.passes import JobOutcome, PassSpec


def run_one(index: int, spec: PassSpec) -> JobOutcome:
    """Run one pass and wrap what happens in a ``JobOutcome`` (a user's ``sys.exit()`` fails
    its pass only; Ctrl-C and SIGTERM still stop the study)."""
    from invkit.api import run_pass

    try:
        return JobOutcome(index, result=run_pass(spec))
    except (Exception, SystemExit) as error:
        return JobOutcome(index, error=error, traceback=traceback.format_exc())


class LocalExecutor:
    """Run passes one after the other in this process; a failing pass does not stop the others."""

    name = "local"

    def __call__(self, specs: Sequence[PassSpec]) -> Iterator[JobOutcome]:
        for index, spec in enumerate(specs):
            yield run_one(index, spec)

    def __repr__(self) -> str:
        return "LocalExecutor()"


_worker_device: str | None = None


def _start_worker(slots: multiprocessing.Queue, threads: int) -> None:
    """Each worker takes a slot number: with CUDA, it runs on GPU ``slot mod count``. Workers
    ignore Ctrl-C: the study, in the driver, stops them."""
    global _worker_device
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    import torch

    torch.set_num_threads(threads)
    slot = slots.get()
    if torch.cuda.is_available():
        _worker_device = f"cuda:{slot % torch.cuda.device_count()}"


def _run_in_worker(index: int, spec: PassSpec) -> JobOutcome:
    if _worker_device is not None and spec.run.device in ("auto", "cuda"):
        spec = dataclasses.replace(spec, run=dataclasses.replace(spec.run, device=_worker_device))
    outcome = run_one(index, dataclasses.replace(spec, progress=False))
    try:
        pickle.dumps(outcome.error)
    except Exception:  # an exception that cannot cross processes arrives as its message
        outcome.error = InvkitError(f"{type(outcome.error).__name__}: {outcome.error}")
    return outcome


class ProcessesExecutor:
    """Run passes in a pool of ``workers`` processes (with CUDA, one GPU each, round robin).

    Worker i uses GPU i mod the GPU count, so ``workers`` = 2 × GPUs puts two passes on each.
    """

    name = "processes"

    def __init__(self, workers: int = 2):
        if workers < 1:
            raise InvkitError(f"processes executor: workers must be at least 1; got {workers}")
        self.workers = workers

    def __call__(self, specs: Sequence[PassSpec]) -> Iterator[JobOutcome]:
        if not specs:
            return
        context = multiprocessing.get_context("spawn")  # safe with CUDA and torch's threads
        slots = context.Queue()
        for slot in range(self.workers):
            slots.put(slot)
        threads = max(1, (os.cpu_count() or 1) // self.workers)
        pool = ProcessPoolExecutor(
            self.workers, mp_context=context, initializer=_start_worker, initargs=(slots, threads)
        )
        pending: dict[Future, int] = {
            pool.submit(_run_in_worker, index, spec): index for index, spec in enumerate(specs)
        }
        try:
            while pending:
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                for future in done:
                    index = pending.pop(future)
                    try:
                        yield future.result()
                    except Exception as error:  # the worker died (killed, out of memory)
                        yield JobOutcome(
                            index,
                            error=InvkitError(f"the worker process running it died: {error}"),
                            traceback=traceback.format_exc(),
                        )
        finally:
            for process in list(getattr(pool, "_processes", {}).values()):
                if pending:  # stopped early (Ctrl-C, SIGTERM, a storage error): stop them now
                    process.terminate()
            pool.shutdown(wait=True, cancel_futures=True)

    def __repr__(self) -> str:
        return f"ProcessesExecutor(workers={self.workers})"


@hookimpl
def register_executors(register):
    from invkit.builtins.ray_executor import RayExecutor  # Ray itself loads when it runs

    register(LocalExecutor)
    register(ProcessesExecutor)
    register(RayExecutor)
