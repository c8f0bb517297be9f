"""Correlation analyses over a results table: accuracy against invariance, per group of points.

A row is one (model, dataset, transform, measure) with its ``invariance`` value and its
``accuracy`` (``None`` or NaN when the dataset is unlabeled). Model-centric analyses take the
models as points (one group per dataset, transform and measure); dataset-centric analyses take
the datasets as points (one group per model, transform and measure).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import numpy as np

from invkit.analysis import stats
from invkit.analysis.render import Presented
from invkit.errors import InvkitError

ROW_KEYS = ("model", "dataset", "transform", "measure", "invariance", "accuracy")
# optional: the accuracy of a dataset whose labels were held out of the analyses, shown beside
# its prediction (a dataset's held_out option)
TRUE_ACCURACY = "true_accuracy"
POINT_KINDS = ("model", "dataset")
MIN_POINTS = 3

MAX_RESAMPLES = 100_000  # an analysis's bootstrap: resamples × points held in memory


@dataclass
class GroupResult:
    """The analysis of one group: its points, statistics, intervals and fitted line.

    ``x`` and ``y`` are invariance and accuracy on the analysis' scaled axes. When the group
    cannot be analysed (too few points, constant values), ``message`` says why and the
    statistics are empty.
    """

    group: dict[str, str]
    points: list[str]
    x: list[float]
    y: list[float]
    statistics: dict[str, float] = field(default_factory=dict)
    intervals: dict[str, list[float]] = field(default_factory=dict)
    fit: dict[str, Any] = field(default_factory=dict)
    band: dict[str, list[float]] = field(default_factory=dict)
    predictions: list[dict[str, Any]] = field(default_factory=list)
    message: str | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def n(self) -> int:
        return len(self.points)

    @property
    def label(self) -> str:
        return " / ".join(f"{k}={v}" for k, v in self.group.items())


@dataclass
class AnalysisResult(Presented):
    """What an analysis returns: one ``GroupResult`` per group, and the parameters used; it
    presents itself (Markdown, summary, tables, figures) through ``invkit.analysis.render``."""

    analysis: str
    params: dict[str, Any]
    groups: list[GroupResult]
    predicts: bool = False  # accuracy predictions (predict_accuracy), not correlations
    points: str = "model"  # what a group's points are: models (model-centric) or datasets
    directions: dict[str, bool | None] = field(default_factory=dict)  # measure → higher is inv.

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dictionary (NaN and infinities become ``None``)."""
        return _json_ready(
            {
                "analysis": self.analysis,
                "params": self.params,
                "points": self.points,
                "predicts": self.predicts,
                "directions": self.directions,
                "groups": [asdict(g) | {"n": g.n} for g in self.groups],
            }
        )

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> AnalysisResult:
        """The result back from ``to_dict()`` (analyses.json), to draw its figures again: a
        statistic JSON wrote as ``null`` comes back as NaN."""
        names = {f.name for f in fields(GroupResult)}
        groups = [
            GroupResult(**{k: _nan_for_none(v) if k == "statistics" else v
                           for k, v in g.items() if k in names})
            for g in data["groups"]
        ]  # fmt: skip
        return cls(
            analysis=data["analysis"],
            params=data["params"],
            groups=groups,
            predicts=data.get("predicts", False),
            points=data.get("points", "model"),
            directions=data.get("directions", {}),
        )

    def __str__(self) -> str:
        lines = [f"{self.analysis} ({_format_params(self.params)})"]
        for g in self.groups:
            lines.append(f"  {g.label}: n={g.n}")
            if g.message:
                lines.append(f"    not analysed: {g.message}")
            for name in ("pearson_r", "spearman_rho", "kendall_tau", "r_squared"):
                if name in g.statistics:
                    interval = g.intervals.get(name)
                    ci = f"  95% CI [{interval[0]:.3f}, {interval[1]:.3f}]" if interval else ""
                    p_name = name.split("_")[0] + "_p"
                    p = g.statistics.get(p_name)
                    p_text = f"  p={p:.3g}" if p is not None else ""
                    lines.append(f"    {name:<13}{g.statistics[name]:+.3f}{p_text}{ci}")
            if g.fit:
                lines.append(
                    f"    fit ({g.fit['method']}): accuracy = {g.fit['slope']:.4f} × invariance"
                    f" {g.fit['intercept']:+.4f}"
                )
            if "loo_mae" in g.statistics:
                lines.append(f"    leave-one-out MAE {g.statistics['loo_mae']:.4f}")
            for p in g.predictions:
                lines.append(
                    f"    predicted {p['point']}: {p['accuracy']:.4f} "
                    f"[{p['low']:.4f}, {p['high']:.4f}]"
                )
            lines.extend(f"    note: {note}" for note in g.notes)
        return "\n".join(lines)


def _nan_for_none(statistics: Mapping[str, Any]) -> dict[str, float]:
    return {k: math.nan if v is None else v for k, v in statistics.items()}


def _format_params(params: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in params.items())


def _json_ready(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _json_ready(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_ready(v) for v in value]
    if isinstance(value, float | np.floating):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    return value


def _number(value: Any) -> float:
    if value is None:
        return math.nan
    try:
        return float(value)
    except (TypeError, ValueError):
        raise InvkitError(
            f"expected a number or None in the results table, got {value!r}"
        ) from None


def _direction(value: Any) -> bool | None:
    """A row's ``higher_is_invariant`` (a bool, or its CSV text) as True, False or None."""
    if value in (True, "True", "true", "1", 1):
        return True
    if value in (False, "False", "false", "0", 0):
        return False
    return None


def directions(table: Iterable[Mapping[str, Any]]) -> dict[str, bool | None]:
    """Each measure's direction from the rows' optional ``higher_is_invariant``."""
    return {str(row["measure"]): _direction(row.get("higher_is_invariant")) for row in table}


def read_rows(table: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Check and normalize a results table (an iterable of mappings with ``ROW_KEYS``)."""
    rows = []
    for i, row in enumerate(table):
        missing = [k for k in ROW_KEYS if k not in row]
        if missing:
            raise InvkitError(
                f"row {i} of the results table lacks {', '.join(missing)}; each row needs "
                f"{', '.join(ROW_KEYS)} (accuracy None for an unlabeled dataset)"
            )
        rows.append(
            {k: str(row[k]) for k in ROW_KEYS[:4]}
            | {"invariance": _number(row["invariance"]), "accuracy": _number(row["accuracy"])}
            | {TRUE_ACCURACY: _number(row.get(TRUE_ACCURACY))}
        )
    return rows


def group_rows(
    rows: list[dict[str, Any]], point: str
) -> dict[tuple[tuple[str, str], ...], list[dict[str, Any]]]:
    """Rows grouped by every label key but ``point``; one row per point in each group."""
    if point not in POINT_KINDS:
        raise InvkitError(f"points must be one of {', '.join(POINT_KINDS)}; got {point!r}")
    keys = [k for k in ROW_KEYS[:4] if k != point]
    groups: dict[tuple[tuple[str, str], ...], list[dict[str, Any]]] = {}
    for row in rows:
        key = tuple((k, row[k]) for k in keys)
        members = groups.setdefault(key, [])
        if any(m[point] == row[point] for m in members):
            raise InvkitError(
                f"the results table holds two rows for {point} {row[point]!r} in group "
                f"{dict(key)}; give one value per {', '.join(ROW_KEYS[:4])}"
            )
        members.append(row)
    return groups


def _split_valid(
    members: list[dict[str, Any]], point: str, need_accuracy: bool
) -> tuple[list[dict[str, Any]], list[str]]:
    """Members with finite values, and notes on the ones left out."""
    kept, notes = [], []
    for m in members:
        if not math.isfinite(m["invariance"]):
            notes.append(f"{point} {m[point]!r} left out: invariance is {m['invariance']}")
        elif need_accuracy and not math.isfinite(m["accuracy"]):
            notes.append(f"{point} {m[point]!r} left out: no accuracy (unlabeled dataset?)")
        else:
            kept.append(m)
    return kept, notes


def degenerate(x: np.ndarray, y: np.ndarray) -> str | None:
    """Why a set of points cannot be correlated, or ``None`` if it can."""
    if len(x) < MIN_POINTS:
        return f"{len(x)} point(s); correlations need at least {MIN_POINTS}"
    if np.ptp(x) == 0:
        return f"invariance is the same ({x[0]:.6g}) for every point"
    if np.ptp(y) == 0:
        return f"accuracy is the same ({y[0]:.6g}) for every point"
    return None


class _AxesAnalysis:
    """What every analysis shares: the confidence level and the scaling of both axes."""

    name = ""

    def __init__(
        self, confidence: float = 0.95, scale_accuracy: str = "none", scale_invariance: str = "none"
    ):
        if not 0 < confidence < 1:
            raise InvkitError(f"confidence must be between 0 and 1; got {confidence}")
        self.confidence = float(confidence)
        self.scale_accuracy = stats.check_scale(scale_accuracy)
        self.scale_invariance = stats.check_scale(scale_invariance)

    @property
    def params(self) -> dict[str, Any]:
        return dict(vars(self))

    def _group(
        self,
        key: tuple[tuple[str, str], ...],
        members: list[dict[str, Any]],
        point: str,
        notes: list[str],
    ) -> tuple[GroupResult, np.ndarray, np.ndarray]:
        """A group's result on the scaled axes, with a message if it cannot be analysed."""
        x = stats.scale(np.array([m["invariance"] for m in members]), self.scale_invariance)
        y = stats.scale(np.array([m["accuracy"] for m in members]), self.scale_accuracy)
        result = GroupResult(
            group=dict(key), points=[m[point] for m in members], x=x.tolist(), y=y.tolist(),
            notes=notes, message=degenerate(x, y),
        )  # fmt: skip
        return result, x, y


class CorrelationAnalysis(_AxesAnalysis):
    """Accuracy against invariance: Pearson, Spearman, Kendall, R², a robust line, bootstrap CIs."""

    points_kind = "model"

    def __init__(
        self,
        n_bootstrap: int = 1000,
        confidence: float = 0.95,
        seed: int = 0,
        fit: str = "theil_sen",
        scale_accuracy: str = "none",
        scale_invariance: str = "none",
    ):
        super().__init__(confidence, scale_accuracy, scale_invariance)
        if fit not in stats.FITS:
            raise InvkitError(f"unknown fit {fit!r}; choose one of {', '.join(stats.FITS)}")
        if not 0 <= n_bootstrap <= MAX_RESAMPLES:
            raise InvkitError(
                f"n_bootstrap must be between 0 and {MAX_RESAMPLES:,}; got {n_bootstrap:,} (the "
                "resamples of every test set are held in memory at once; 1,000 is the paper's)"
            )
        self.n_bootstrap = int(n_bootstrap)
        self.seed = int(seed)
        self.fit = fit

    def __call__(self, table: Iterable[Mapping[str, Any]]) -> AnalysisResult:
        table = list(table)
        rows = read_rows(table)
        groups = []
        for key, members in group_rows(rows, self.points_kind).items():
            kept, notes = _split_valid(members, self.points_kind, need_accuracy=True)
            result, x, y = self._group(key, kept, self.points_kind, notes)
            if result.message is None:
                self._analyse(result, x, y)
            groups.append(result)
        return AnalysisResult(
            self.name, self.params, groups, points=self.points_kind, directions=directions(table)
        )

    def _analyse(self, result: GroupResult, x: np.ndarray, y: np.ndarray) -> None:
        result.statistics = stats.correlations(x, y)
        line = stats.fit_line(x, y, self.fit)
        least_squares = stats.fit_line(x, y, "least_squares")
        result.fit = {
            "method": self.fit,
            "slope": line.slope,
            "intercept": line.intercept,
            "least_squares_slope": least_squares.slope,
            "least_squares_intercept": least_squares.intercept,
        }
        if not self.n_bootstrap:
            return
        try:
            boot = stats.bootstrap(x, y, self.fit, self.n_bootstrap, self.confidence, self.seed)
        except InvkitError as error:
            result.notes.append(f"no bootstrap intervals: {error}")
            return
        result.intervals = {
            "pearson_r": list(boot.pearson_r),
            "spearman_rho": list(boot.spearman_rho),
            "slope": list(boot.slope),
            "intercept": list(boot.intercept),
        }
        result.band = {
            "x": boot.band_x.tolist(),
            "low": boot.band_low.tolist(),
            "high": boot.band_high.tolist(),
        }
        if boot.n_valid < self.n_bootstrap:
            result.notes.append(
                f"{self.n_bootstrap - boot.n_valid} of {self.n_bootstrap} bootstrap resamples "
                "had constant values and were left out"
            )


class ModelCentric(CorrelationAnalysis):
    """Across models, per test set: does the more invariant model have higher accuracy?

    Points are models; one group per (dataset, transform, measure). Reports Pearson r, Spearman
    ρ, Kendall τ with p-values, R² of the least-squares line, a Theil–Sen robust line, and
    seeded bootstrap intervals for r, ρ and the line.
    """

    name = "model_centric"
    points_kind = "model"


class DatasetCentric(CorrelationAnalysis):
    """Across test sets, per model: is a test set with higher invariance one of higher accuracy?

    Points are datasets; one group per (model, transform, measure). Same statistics as
    ``model_centric``.
    """

    name = "dataset_centric"
    points_kind = "dataset"


class PredictAccuracy(_AxesAnalysis):
    """Predict accuracy on unlabeled test sets from invariance alone, with 95% prediction intervals.

    Per group, a least-squares line is fitted to the labeled points (accuracy known) and
    evaluated at the unlabeled ones (accuracy None/NaN). ``points="dataset"`` (default) fits
    across a model's test sets; ``points="model"`` fits across models on one test set (label-free
    model selection). The leave-one-out mean absolute error on the labeled points says how far
    to trust the predictions.

    Accuracy is fitted on the probit scale by default, so that predictions and their intervals
    stay inside (0, 1); with ``scale_accuracy="none"`` they are clipped to [0, 1] and marked.
    A prediction at an invariance outside the fitted range is marked as an extrapolation.
    """

    name = "predict_accuracy"

    def __init__(
        self,
        points: str = "dataset",
        confidence: float = 0.95,
        scale_accuracy: str = "probit",
        scale_invariance: str = "none",
    ):
        super().__init__(confidence, scale_accuracy, scale_invariance)
        if points not in POINT_KINDS:
            raise InvkitError(f"points must be one of {', '.join(POINT_KINDS)}; got {points!r}")
        self.points = points

    def __call__(self, table: Iterable[Mapping[str, Any]]) -> AnalysisResult:
        table = list(table)
        rows = read_rows(table)
        groups = []
        for key, members in group_rows(rows, self.points).items():
            kept, notes = _split_valid(members, self.points, need_accuracy=False)
            labeled = [m for m in kept if math.isfinite(m["accuracy"])]
            unlabeled = [m for m in kept if not math.isfinite(m["accuracy"])]
            result, x, y = self._group(key, labeled, self.points, notes)
            if result.message is None:
                self._predict(result, x, y, labeled, unlabeled)
            elif unlabeled:
                result.notes.append(
                    "no prediction for " + ", ".join(m[self.points] for m in unlabeled)
                )
            groups.append(result)
        return AnalysisResult(
            self.name,
            self.params,
            groups,
            predicts=True,
            points=self.points,
            directions=directions(table),
        )

    def _predict(
        self,
        result: GroupResult,
        x: np.ndarray,
        y: np.ndarray,
        labeled: list[dict[str, Any]],
        unlabeled: list[dict[str, Any]],
    ) -> None:
        line = stats.fit_line(x, y, "least_squares")
        result.fit = {"method": "least_squares", "slope": line.slope, "intercept": line.intercept}
        result.statistics = {"loo_mae": self._leave_one_out_mae(x, y, labeled)}
        if not unlabeled:
            return
        x_new = stats.scale(np.array([m["invariance"] for m in unlabeled]), self.scale_invariance)
        center, low, high = stats.prediction_interval(x, y, x_new, self.confidence)
        for m, xn, c, lo, hi in zip(unlabeled, x_new, center, low, high, strict=True):
            values = [float(stats.unscale(v, self.scale_accuracy)) for v in (c, lo, hi)]
            clipped = [min(max(v, 0.0), 1.0) for v in values]
            true = m[TRUE_ACCURACY]
            result.predictions.append(
                {
                    "point": m[self.points],
                    "invariance": m["invariance"],
                    "accuracy": clipped[0],
                    "low": clipped[1],
                    "high": clipped[2],
                    "clipped": clipped != values,
                    "extrapolated": not (x.min() <= xn <= x.max()),
                    "true_accuracy": true if math.isfinite(true) else None,
                }
            )

    def _leave_one_out_mae(
        self, x: np.ndarray, y: np.ndarray, labeled: list[dict[str, Any]]
    ) -> float:
        """Mean |predicted − true accuracy| with each labeled point predicted from the others."""
        errors = []
        for i in range(len(x)):
            others = np.arange(len(x)) != i
            if np.ptp(x[others]) == 0:
                continue  # the others alone cannot define a line
            line = stats.fit_line(x[others], y[others], "least_squares")
            predicted = stats.unscale(line(x[i]), self.scale_accuracy)
            errors.append(abs(float(predicted) - labeled[i]["accuracy"]))
        return float(np.mean(errors)) if errors else math.nan
