"""The ``ray`` executor: each pass a Ray task, on a laptop, one GPU node or a cluster.

Specs go out (kilobytes), ``PassResult``s come back (per-sample scalars); the driver alone
writes the store as each task finishes, so an interrupted distributed study resumes like a
local one. Paths in specs must resolve on the workers: a shared file system (docs/scale-out.md).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator, Sequence
from typing import Any

from invkit.errors import InvkitError
from invkit.plugin.passes import JobOutcome, PassSpec

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


class RayExecutor:
    """Run each pass as a Ray task on an existing cluster, or on a local one it starts.

    ``address`` (or ``RAY_ADDRESS``) names the cluster; without either, a local Ray instance is
    started and stopped. Each task takes ``num_gpus`` (default: 1 when the cluster has GPUs,
    else 0) and ``num_cpus`` (default 1); a task that raises, or whose worker dies, is retried
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
        self.ray = _import_ray()  # now, so that a missing Ray stops the study before it starts
        self.address = address
        self.num_gpus = num_gpus
        self.num_cpus = num_cpus
        self.max_retries = max_retries

    def _connect(self, ray: Any) -> bool:
        """Connect (or start a local instance); True when this executor started it."""
        if ray.is_initialized():
            return False
        address = self.address or os.environ.get("RAY_ADDRESS") or None
        ray.init(address=address, include_dashboard=False, log_to_driver=False)
        return address is None

    def __call__(self, specs: Sequence[PassSpec]) -> Iterator[JobOutcome]:
        if not specs:
            return
        ray = self.ray
        started = self._connect(ray)
        gpus = self.num_gpus
        if gpus is None:
            gpus = 1 if ray.cluster_resources().get("GPU", 0) > 0 else 0
        task = ray.remote(
            num_cpus=self.num_cpus,
            num_gpus=gpus,
            max_retries=self.max_retries,
            retry_exceptions=True,
        )(_run_remote)
        pending = {task.remote(spec): index for index, spec in enumerate(specs)}
        progress = _Progress(len(specs))
        try:
            while pending:
                [done], _ = ray.wait(list(pending), num_returns=1)
                index = pending.pop(done)
                try:
                    outcome = JobOutcome(index, result=ray.get(done))
                except Exception as error:  # the task's error, after its retries
                    cause = getattr(error, "cause", None) or error
                    outcome = JobOutcome(index, error=cause, traceback=str(error))
                progress.update(outcome, running=len(pending))
                yield outcome
        finally:
            for ref in pending:  # stopped early (Ctrl-C, SIGTERM, a storage error)
                ray.cancel(ref, force=True)
            progress.close()
            if started:
                ray.shutdown()

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
