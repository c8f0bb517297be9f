"""A line fit of accuracy against a dataset score, on the probit scale: the estimator that
invariance's own estimates use (``estimate_accuracy``) and that the built-in score estimators
(nuclear norm, mean energy, MDE) specialise (docs/estimators.md)."""

from __future__ import annotations

from typing import Any

import numpy as np

from invkit.errors import EstimatorNeeds, InvkitError
from invkit.plugin.components import Estimate, Estimator

PROBIT_CLIP = 1e-6  # accuracies and agreements of exactly 0 or 1 have no probit


def probit(values: Any) -> np.ndarray:
    """Φ⁻¹ of values clipped to [1e-6, 1 − 1e-6]."""
    from scipy.stats import norm

    return norm.ppf(np.clip(np.asarray(values, dtype=np.float64), PROBIT_CLIP, 1 - PROBIT_CLIP))


def cdf(values: Any) -> Any:
    """Φ, the standard normal's distribution function."""
    from scipy.stats import norm

    return norm.cdf(values)


class LineFit(Estimator):
    """Accuracy fitted on the probit scale (``probit_scale``; else accuracy itself) against a
    dataset score across the model's labeled test sets (source included, target left out),
    read off at the target's score. The estimate says how many sets the fit used, and is
    flagged "extrapolated" where the target's score lies outside the fitted range."""

    reads = "the model's accuracies and scores on the labeled test sets, the target's score"
    probit_scale = True

    def __init__(self, score: Any):
        self.score = score

    @property
    def label(self) -> str:
        return self.score if isinstance(self.score, str) else "·".join(self.score)

    def dataset_score(self, model: str, dataset: str, study: Any) -> float | None:
        """The model's score on a dataset: here an invariance cell's value (``score`` is a
        (transform, measure) pair); a subclass reads its own score from the kept outputs."""
        return study.scores.get(tuple(self.score), {}).get((model, dataset))

    def kept_score(self, model: str, dataset: str, study: Any) -> float | None:
        """``dataset_score``, computed once per study: every target's fit reads the same sets."""
        key = (self, model, dataset)
        if key not in study.memo:
            study.memo[key] = self.dataset_score(model, dataset, study)
        return study.memo[key]

    def __call__(self, model, target, study):
        labeled = study.labeled_sets(model, leave_out=target)
        points = [(self.kept_score(model, d, study), study.accuracy(model, d)) for d in labeled]
        points = [(x, y) for x, y in points if x is not None]
        if len(points) < 2:
            raise EstimatorNeeds(
                f"the {self.label} line fit needs {model!r}'s score on at least 2 labeled test "
                f"sets besides {target!r}; it has {len(points)}"
            )
        if len({x for x, _ in points}) < 2:
            raise EstimatorNeeds(
                f"the {self.label} line fit of {model!r} has no slope: its score is "
                f"{points[0][0]:.6g} on each of the {len(points)} labeled test sets besides "
                f"{target!r}, so it cannot tell their accuracies apart"
            )
        at = self.kept_score(model, target, study)
        if at is None:
            raise InvkitError(f"no {self.label} score of {model!r} on {target!r}")
        xs, ys = zip(*points, strict=True)
        ys_fitted = probit(ys) if self.probit_scale else np.asarray(ys, dtype=np.float64)
        slope, intercept = np.polyfit(xs, ys_fitted, 1)
        value = intercept + slope * at
        low, high = min(xs), max(xs)
        flag = ""
        if not low <= at <= high:
            flag = (
                f"extrapolated: {model!r}'s score {at:.6g} on {target!r} lies outside the "
                f"{low:.6g} to {high:.6g} it was fitted on"
            )
        return Estimate(
            float(cdf(value)) if self.probit_scale else float(value),
            flag=flag,
            fit_sets=len(points),
            detail=f"fit on {len(points)} labeled sets, scores {low:.6g} to {high:.6g}",
        )
