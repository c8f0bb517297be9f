"""From per-view measure values to one number per dataset: mean over views, then over samples."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from invkit.errors import InvkitError

BOOTSTRAP_ELEMENTS_PER_CHUNK = 4_000_000  # bounds memory of the resampling index arrays


def view_values(
    measure: Any,
    original: torch.Tensor,
    views: Sequence[torch.Tensor],
    labels: torch.Tensor | None = None,
) -> torch.Tensor:
    """A measure's values on each of a transform's views, ``(V, B)``: one row per view."""
    if not views:
        raise InvkitError("a transform produced no views; there is nothing to measure")
    if getattr(measure, "needs_labels", False) and labels is None:
        raise InvkitError(f"measure {measure!r} needs labels, and this dataset has none")
    return torch.stack([measure(original, view, labels) for view in views])


def view_average(
    measure: Any,
    original: torch.Tensor,
    views: Sequence[torch.Tensor],
    labels: torch.Tensor | None = None,
) -> torch.Tensor:
    """A measure's ``(B,)`` values averaged over a transform's views (rotation EI: 3 views)."""
    return view_values(measure, original, views, labels).mean(dim=0)


def view_labels(transform: Any) -> list[str]:
    """A transform's view names (``view_names``), or their positions when it gives none or
    gives the same name twice."""
    names = [str(name) for name in getattr(transform, "view_names", [])]
    count = getattr(transform, "num_views", 1)
    return names if len(set(names)) == len(names) == count else [str(i) for i in range(count)]


def views_of(transform: Any) -> list[tuple[str, float | None]]:
    """Each view of a transform: its name (``view_labels``) and magnitude (``magnitudes``,
    when the transform declares them)."""
    names = view_labels(transform)
    magnitudes = getattr(transform, "magnitudes", None)
    if magnitudes is not None and len(magnitudes) != len(names):
        raise InvkitError(
            f"transform {transform!r} declares {len(magnitudes)} magnitudes for "
            f"{len(names)} views; give one magnitude per view, or none"
        )
    return [
        (name, None if magnitudes is None else float(magnitudes[i])) for i, name in enumerate(names)
    ]


@dataclass(frozen=True)
class Summary:
    """A dataset's value of a measure: the mean over samples, and optionally a 95% interval."""

    mean: float
    n: int
    low: float | None = None
    high: float | None = None
    confidence: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in vars(self).items() if v is not None}


def bootstrap_means(values: np.ndarray, n_resamples: int, seed: int) -> np.ndarray:
    """Means of ``n_resamples`` resamples (with replacement) of ``values``, seeded."""
    rng = np.random.default_rng(seed)
    n = len(values)
    chunk = max(1, BOOTSTRAP_ELEMENTS_PER_CHUNK // max(n, 1))
    means = np.empty(n_resamples)
    for start in range(0, n_resamples, chunk):
        stop = min(start + chunk, n_resamples)
        idx = rng.integers(0, n, size=(stop - start, n))
        means[start:stop] = values[idx].mean(axis=1)
    return means


def summarize(
    values: Any,
    bootstrap: bool = False,
    n_resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> Summary:
    """Mean of per-sample values; with ``bootstrap``, a seeded percentile interval for it."""
    array = np.asarray(
        values.detach().cpu().double() if isinstance(values, torch.Tensor) else values,
        dtype=np.float64,
    ).ravel()
    if array.size == 0:
        raise InvkitError("cannot summarize an empty set of values (the dataset has no images?)")
    mean = float(array.mean())
    if not bootstrap:
        return Summary(mean, int(array.size))
    if not 0 < confidence < 1:
        raise InvkitError(f"confidence must be between 0 and 1; got {confidence}")
    means = bootstrap_means(array, n_resamples, seed)
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(means, [tail, 100 - tail])
    return Summary(mean, int(array.size), float(low), float(high), confidence)
