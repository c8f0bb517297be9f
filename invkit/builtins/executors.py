"""Built-in executors: ``local`` runs passes one after the other in this process; ``processes``
runs them in a pool of worker processes (one GPU each, round robin, when there are GPUs);
``ray`` (``invkit.builtins.ray_executor``) runs them as Ray tasks.

An executor receives the study's ``PassSpec``s and yields one ``JobOutcome`` per pass, in any
order; it never raises for a failed pass. Only the study writes results to the store.
"""

from __future__ import annotations

import dataclasses
import gc
import multiprocessing
import os
import pickle
import signal
import tempfile
import traceback
import warnings
from collections import Counter
from collections.abc import Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from contextlib import suppress

from invkit.errors import InvkitError, InvkitWarning, described
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


def _die_with(parent: int) -> None:
    """End this worker when the driver ``parent`` dies, even by ``kill -9``: at once where
    Linux offers it (``PR_SET_PDEATHSIG``), else within a second (a thread polling)."""
    import ctypes
    import threading
    import time

    with suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    if os.getppid() != parent:  # the driver died while this worker started
        os._exit(1)

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1)
        os._exit(1)

    threading.Thread(target=watch, name="invkit-watch-driver", daemon=True).start()


def _take_slot(folder: str, workers: int) -> int:
    """The lowest slot (0 .. workers-1) no other worker of this pool took: a file created
    exclusively, so no semaphore outlives an interrupted study."""
    for slot in range(workers):
        try:
            os.close(os.open(os.path.join(folder, f"slot-{slot}"), os.O_CREAT | os.O_EXCL))
        except FileExistsError:
            continue
        return slot
    return os.getpid() % workers  # every slot taken (not with one pool per folder): any GPU


def _start_worker(parent: int, folder: str, workers: int, threads: int) -> None:
    """Each worker takes a slot: with CUDA, it runs on GPU ``slot mod count``. Workers ignore
    Ctrl-C (the study, in the driver, stops them) and end when the driver dies."""
    global _worker_device
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _die_with(parent)
    import threading

    import torch
    from tqdm import tqdm

    # tqdm's default lock is a multiprocessing one: a worker stopped mid-pass would leave it
    # to the resource tracker, which warns of "leaked semaphore objects". Workers show no bars.
    tqdm.set_lock(threading.RLock())

    torch.set_num_threads(threads)
    slot = _take_slot(folder, workers)
    if torch.cuda.is_available():
        _worker_device = f"cuda:{slot % torch.cuda.device_count()}"


def _running_marker(folder: str, index: int) -> str:
    return os.path.join(folder, f"running-{index}")


def _run_in_worker(index: int, spec: PassSpec, folder: str) -> JobOutcome:
    """Run one pass, with a marker file saying so while it runs: when a worker dies, the
    driver knows which pass it was running (and the others are not blamed)."""
    if _worker_device is not None and spec.run.device in ("auto", "cuda"):
        spec = dataclasses.replace(spec, run=dataclasses.replace(spec.run, device=_worker_device))
    marker = _running_marker(folder, index)
    with open(marker, "w") as handle:
        handle.write(str(os.getpid()))
    outcome = run_one(index, dataclasses.replace(spec, progress=False))
    os.unlink(marker)
    try:
        pickle.dumps(outcome.error)
    except Exception:  # an exception that cannot cross processes arrives as its message
        outcome.error = InvkitError(f"{type(outcome.error).__name__}: {outcome.error}")
    return outcome


class ProcessesExecutor:
    """Run passes in a pool of ``workers`` processes (with CUDA, one GPU each, round robin).

    Worker i uses GPU i mod the GPU count, so ``workers`` = 2 × GPUs puts two passes on each.
    A worker that dies (killed, out of memory) is replaced with a new pool: the pass it was
    running is retried up to ``max_retries`` times, the passes waiting behind it run as if
    nothing happened. Workers end with the driver, even when it is killed with ``kill -9``.
    """

    name = "processes"

    def __init__(self, workers: int = 2, max_retries: int = 1):
        if workers < 1:
            raise InvkitError(f"processes executor: workers must be at least 1; got {workers}")
        if max_retries < 0:
            raise InvkitError(f"processes executor: max_retries must be >= 0; got {max_retries}")
        self.workers = workers
        self.max_retries = max_retries

    def __call__(self, specs: Sequence[PassSpec]) -> Iterator[JobOutcome]:
        if not specs:
            return
        deaths: Counter[int] = Counter()
        waiting = list(range(len(specs)))
        with tempfile.TemporaryDirectory(prefix="invkit-workers-") as folder:
            generation = 0
            while waiting:
                pool_folder = os.path.join(folder, str(generation))
                os.mkdir(pool_folder)
                lost: list[int] = []
                yield from self._run_pool(specs, waiting, pool_folder, lost)
                waiting = []
                for index in lost:
                    if os.path.exists(_running_marker(pool_folder, index)):
                        deaths[index] += 1
                        if deaths[index] <= self.max_retries:
                            warnings.warn(
                                f"the worker process running {specs[index].label} died; a new "
                                f"pool runs it again (retry {deaths[index]} of "
                                f"{self.max_retries})",
                                InvkitWarning,
                                stacklevel=2,
                            )
                    if deaths[index] > self.max_retries:
                        yield JobOutcome(
                            index,
                            error=InvkitError(
                                f"the worker process running it died {deaths[index]} time(s) "
                                "(killed, or out of memory)"
                            ),
                        )
                    else:
                        waiting.append(index)
                generation += 1

    def _run_pool(
        self, specs: Sequence[PassSpec], indices: list[int], folder: str, lost: list[int]
    ) -> Iterator[JobOutcome]:
        """Run ``indices`` in one pool; those it could not finish because a worker died are
        put in ``lost``."""
        context = multiprocessing.get_context("spawn")  # safe with CUDA and torch's threads
        threads = max(1, (os.cpu_count() or 1) // self.workers)
        pool: ProcessPoolExecutor | None = ProcessPoolExecutor(
            self.workers,
            mp_context=context,
            initializer=_start_worker,
            initargs=(os.getpid(), folder, self.workers, threads),
        )
        pending: dict[Future, int] = {
            pool.submit(_run_in_worker, index, specs[index], folder): index for index in indices
        }
        try:
            while pending:
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                for future in done:
                    index = pending.pop(future)
                    try:
                        outcome = future.result()
                    except BrokenProcessPool:
                        lost.append(index)
                        continue
                    except Exception as error:  # a result that could not cross
                        outcome = JobOutcome(
                            index, error=InvkitError(described(error)), traceback=str(error)
                        )
                    yield outcome
        finally:
            if pending:  # stopped early (Ctrl-C, SIGTERM, a storage error): stop them now
                for process in list(getattr(pool, "_processes", {}).values()):
                    process.terminate()
            pool.shutdown(wait=True, cancel_futures=True)
            pool = pending = None  # type: ignore[assignment]
            gc.collect()  # the pool's queues now, not at exit ("leaked semaphore" warnings)

    def __repr__(self) -> str:
        return f"ProcessesExecutor(workers={self.workers}, max_retries={self.max_retries})"


@hookimpl
def register_executors(register):
    from invkit.builtins.ray_executor import RayExecutor  # Ray itself loads when it runs

    register(LocalExecutor)
    register(ProcessesExecutor)
    register(RayExecutor)
