"""The ``ray`` executor: each pass a Ray task, on a laptop, one GPU node or a cluster.

Specs go out (kilobytes), ``PassResult``s come back (per-sample scalars); the driver alone
writes the store as each task finishes, so an interrupted distributed study resumes like a
local one. Paths in specs must resolve on the workers: a shared file system (docs/scale-out.md).
"""

from __future__ import annotations

import os
import signal
import socket
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from invkit.errors import Interrupted, InvkitError, described
from invkit.plugin.passes import JobOutcome, PassSpec
from invkit.run.reaper import reap_when_gone

MISSING = 'the ray executor needs Ray: pip install "invkit[ray]"'


def _import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise InvkitError(MISSING) from None
    return ray


def _run_remote(spec: PassSpec) -> Any:
    from invkit.api import run_pass

    return run_pass(spec)


CONNECT_TIMEOUT_S = 10  # how long a cluster's address may take to answer before we say so


def _check_reachable(address: str, timeout: float = CONNECT_TIMEOUT_S) -> None:
    """Fail in seconds, naming the address, when nothing answers at ``host:port`` (Ray itself
    retries for minutes without a word). ``auto``, ``local`` and other forms go to Ray as
    they are."""
    host, sep, port = address.removeprefix("ray://").rpartition(":")
    if not sep or not port.isdigit() or not host:
        return
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError as error:
        why = error.strerror or str(error) or type(error).__name__
        raise InvkitError(
            f"no Ray cluster answers at {address!r} within {timeout:g} s ({why}); start it "
            "(ray start --head), fix --ray-address / RAY_ADDRESS, or leave both unset to run on "
            "a local Ray instance"
        ) from None


def _unwrapped(error: BaseException) -> BaseException:
    """Ray's Cython wait can turn a signal raised in it into ``SystemError: … returned a result
    with an exception set``: the signal's own exception is the one to raise."""
    cause = error.__cause__ or error.__context__
    if isinstance(error, SystemError) and isinstance(cause, Interrupted | KeyboardInterrupt):
        return cause
    return error


@contextmanager
def _signals_kept() -> Iterator[None]:
    """``ray.init`` replaces this process's SIGTERM handler (with a ``sys.exit`` and a C stack
    dump): the study's own handlers are put back, so SIGTERM ends it like Ctrl-C, exit 143."""
    kept = {number: signal.getsignal(number) for number in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        if threading.current_thread() is threading.main_thread():
            for number, handler in kept.items():
                if handler is not None:
                    signal.signal(number, handler)


def _largest_node(ray: Any) -> dict[str, float]:
    nodes = [node.get("Resources", {}) for node in ray.nodes() if node.get("Alive")]
    return max(nodes, key=lambda r: (r.get("GPU", 0), r.get("CPU", 0)), default={})


class RayExecutor:
    """Run each pass as a Ray task on an existing cluster, or on a local one it starts.

    ``address`` (or ``RAY_ADDRESS``) names the cluster; without either, a local Ray instance is
    started and stopped (without the dashboard; its processes end with the study, even when
    the study is killed). Each task takes ``num_gpus`` (default: 1 when the cluster has GPUs,
    else 0) and ``num_cpus`` (default 1): a task that no node of the cluster could ever run is
    refused before any is submitted. A task that raises, or whose worker dies, is retried
    ``max_retries`` times, then recorded as a failed pass.
    """

    name = "ray"

    def __init__(
        self,
        address: str | None = None,
        num_gpus: float | None = None,
        num_cpus: float = 1,
        max_retries: int = 1,
    ):
        if max_retries < 0:
            raise InvkitError(f"ray executor: max_retries must be >= 0; got {max_retries}")
        for key, value in (("num_cpus", num_cpus), ("num_gpus", num_gpus)):
            if value is not None and value < 0:
                raise InvkitError(f"ray executor: {key} must be >= 0; got {value}")
        if address is not None and not address.strip():
            raise InvkitError(
                "ray executor: address is empty; name the cluster (host:port, ray://host:port "
                "or auto), or leave it out to run on a local Ray instance"
            )
        self.ray = _import_ray()  # now, so that a missing Ray stops the study before it starts
        self.address = address
        self.num_gpus = num_gpus
        self.num_cpus = num_cpus
        self.max_retries = max_retries

    def _connect(self, ray: Any) -> tuple[bool, bool]:
        """Connect (or start a local instance): whether this executor connected, and whether
        it started the instance. A process already connected (``ray.init`` by the caller) is
        used as it is."""
        if ray.is_initialized():
            return False, False
        address = self.address or os.environ.get("RAY_ADDRESS") or None
        if address is not None:
            _check_reachable(address)
        try:
            with _signals_kept():
                ray.init(address=address, include_dashboard=False, log_to_driver=False)
        except (ConnectionError, ValueError, RuntimeError, TimeoutError) as error:
            where = f"the Ray cluster at {address!r}" if address else "a local Ray instance"
            raise InvkitError(
                f"cannot connect to {where}: {described(error).splitlines()[0]}"
            ) from None
        return True, address is None

    def _check_resources(self, ray: Any, gpus: float) -> None:
        """Refuse a task no live node could schedule: Ray would wait for it forever."""
        largest = _largest_node(ray)
        short = [
            f"{want:g} {name}"
            for name, key, want in (("CPU(s)", "CPU", self.num_cpus), ("GPU(s)", "GPU", gpus))
            if want > largest.get(key, 0)
        ]
        if short:
            offered = f"{largest.get('CPU', 0):g} CPU(s) and {largest.get('GPU', 0):g} GPU(s)"
            raise InvkitError(
                f"ray executor: each pass asks for {' and '.join(short)}, but the largest node "
                f"of the cluster has {offered}, so no pass could ever start; lower "
                "executor_params.num_cpus / num_gpus, or add a node that has them"
            )

    def __call__(self, specs: Sequence[PassSpec]) -> Iterator[JobOutcome]:
        if not specs:
            return
        ray = self.ray
        connected, started = self._connect(ray)
        reaper = reap_when_gone(os.getpid()) if started else None
        pending: dict[Any, int] = {}
        progress = None
        try:
            gpus = self.num_gpus
            if gpus is None:
                gpus = 1 if ray.cluster_resources().get("GPU", 0) > 0 else 0
            self._check_resources(ray, gpus)
            task = ray.remote(
                num_cpus=self.num_cpus,
                num_gpus=gpus,
                max_retries=self.max_retries,
                retry_exceptions=True,
            )(_run_remote)
            pending = {task.remote(spec): index for index, spec in enumerate(specs)}
            progress = _Progress(len(specs))
            while pending:
                try:
                    [done], _ = ray.wait(list(pending), num_returns=1)
                except SystemError as error:
                    raise _unwrapped(error) from None
                index = pending.pop(done)
                try:
                    outcome = JobOutcome(index, result=ray.get(done))
                except SystemError as error:
                    raise _unwrapped(error) from None
                except Exception as error:  # the task's error, after its retries
                    cause = getattr(error, "cause", None) or error
                    outcome = JobOutcome(index, error=cause, traceback=str(error))
                progress.update(outcome, running=len(pending))
                yield outcome
        finally:
            if progress is not None:
                progress.close()
            if pending and not connected:  # stopped early on the caller's connection
                for ref in pending:
                    ray.cancel(ref, force=True)
            if started or (pending and connected):
                # Stopped early (Ctrl-C, SIGTERM, a storage error) on our own connection:
                # disconnecting ends this job, and the cluster stops its tasks. Cancelling
                # them one by one instead can race a task's reply and abort Ray's core worker
                # ("Tried to complete task that was not pending").
                ray.shutdown()
            if reaper is not None:
                reaper.stop()

    def __repr__(self) -> str:
        return f"RayExecutor(address={self.address!r}, max_retries={self.max_retries})"


class _Progress:
    """One line across the cluster: passes done, running and failed, and images per second."""

    def __init__(self, total: int):
        from tqdm.auto import tqdm

        self.bar = tqdm(total=total, desc="ray", unit="pass", disable=None, leave=False)
        self.started = time.perf_counter()
        self.images = 0
        self.failed = 0

    def update(self, outcome: JobOutcome, running: int) -> None:
        if outcome.ok:
            self.images += outcome.result.images
        else:
            self.failed += 1
        rate = self.images / max(time.perf_counter() - self.started, 1e-9)
        self.bar.set_postfix(running=running, failed=self.failed, img_s=f"{rate:,.0f}")
        self.bar.update(1)

    def close(self) -> None:
        self.bar.close()
