"""Label-free accuracy estimation: every estimator (the field's and invariance's line fits) for
every model × target test set, side by side, ranked where the truth is known.

``StudyData`` is what an estimator reads: kept outputs, the source set, the labeled sets'
accuracies, the invariance scores. ``EstimateAccuracy`` is the analysis that runs them all;
``docs/estimators.md`` gives each estimator's formula and paper.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from invkit.errors import EstimatorNeeds, InvkitError
from invkit.markup import md
from invkit.results.outputs import Outputs

ESTIMATE_COLUMNS = ["model", "dataset", "estimator", "estimate", "accuracy", "abs_error", "note"]


class StudyData:
    """What a study offers an estimator of one model's accuracy on an unlabeled target.

    ``accuracy(model, dataset)`` is known only for labeled test sets that are not held out;
    ``truth`` (held-out and labeled sets) is never given to estimators, only to the scoring."""

    def __init__(
        self, rows: Iterable[Mapping[str, Any]], outputs: Mapping[tuple[str, str], Outputs]
    ):
        self.rows = [dict(row) for row in rows]
        self.kept = outputs
        self.models = list(dict.fromkeys(row["model"] for row in self.rows))
        self.datasets = list(dict.fromkeys(row["dataset"] for row in self.rows))
        sources = {row["dataset"] for row in self.rows if row.get("source")}
        self.source: str | None = next(iter(sources), None)
        self._accuracy = {
            (row["model"], row["dataset"]): _finite(row.get("accuracy")) for row in self.rows
        }
        self.scores = {  # (transform, measure) → (model, dataset) → invariance
            (row["transform"], row["measure"]): {} for row in self.rows
        }
        for row in self.rows:
            value = _finite(row.get("invariance"))
            if value is not None:
                self.scores[row["transform"], row["measure"]][row["model"], row["dataset"]] = value
        self.memo: dict[Any, Any] = {}  # estimators that fit once for every model may keep it here
        self.target: str | None = None  # the set being estimated: its accuracy is never given

    def accuracy(self, model: str, dataset: str) -> float | None:
        """The accuracy of ``model`` on a labeled test set that is not held out (and is not the
        target being estimated), else None."""
        return None if dataset == self.target else self._accuracy.get((model, dataset))

    def outputs(self, model: str, dataset: str, name: str) -> Outputs:
        """Kept outputs, or ``EstimatorNeeds`` naming the estimator ``name``."""
        try:
            return self.kept[model, dataset]
        except KeyError:
            raise EstimatorNeeds(
                f"{name} reads the kept outputs of {model!r} × {dataset!r}, and the study kept "
                "none (run.outputs = 'none'?)"
            ) from None

    def need_source(self, name: str, model: str) -> tuple[Outputs, float]:
        """The source set's kept outputs and accuracy for ``model``."""
        if self.source is None:
            raise EstimatorNeeds(
                f"{name} needs a source set: mark one labeled dataset as the source "
                "(source = true in its [[datasets]] entry)"
            )
        accuracy = self.accuracy(model, self.source)
        if accuracy is None:
            raise EstimatorNeeds(f"{name} needs the source set {self.source!r} to be labeled")
        return self.outputs(model, self.source, name), accuracy

    def labeled_sets(self, model: str, leave_out: str) -> list[str]:
        """The labeled, not held-out test sets of ``model``, other than ``leave_out``."""
        return [d for d in self.datasets if d != leave_out and self.accuracy(model, d) is not None]


def _finite(value: Any) -> float | None:
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


@dataclass
class EstimationResult:
    """Every estimate, its truth where known, and the leaderboard over the scored pairs."""

    estimates: list[dict[str, Any]]
    scored_on: str  # "held-out" or "labeled": which pairs rank the estimators
    params: dict[str, Any] = field(default_factory=dict)

    def leaderboard(self) -> list[dict[str, Any]]:
        """Per estimator, best first: mean and largest absolute error over the scored pairs,
        and on how many pairs it was the best."""
        scored = [e for e in self.estimates if e["abs_error"] is not None and e["scored"]]
        by_pair: dict[tuple[str, str], list[dict[str, Any]]] = {}
        for estimate in scored:
            by_pair.setdefault((estimate["model"], estimate["dataset"]), []).append(estimate)
        wins: dict[str, int] = {}
        for members in by_pair.values():
            best = min(m["abs_error"] for m in members)
            for m in members:
                if m["abs_error"] == best:
                    wins[m["estimator"]] = wins.get(m["estimator"], 0) + 1
        board = []
        for name in dict.fromkeys(e["estimator"] for e in self.estimates):
            errors = [e["abs_error"] for e in scored if e["estimator"] == name]
            refused = [e for e in self.estimates if e["estimator"] == name and e["note"]]
            board.append(
                {
                    "estimator": name,
                    "mae": float(np.mean(errors)) if errors else None,
                    "max_error": float(np.max(errors)) if errors else None,
                    "best": wins.get(name, 0),
                    "pairs": len(errors),
                    "note": refused[0]["note"] if refused and not errors else "",
                }
            )
        return sorted(board, key=lambda b: (b["mae"] is None, b["mae"] or 0.0, b["estimator"]))

    def to_dict(self) -> dict[str, Any]:
        return {
            "params": self.params,
            "scored_on": self.scored_on,
            "leaderboard": self.leaderboard(),
            "estimates": [{k: e[k] for k in ESTIMATE_COLUMNS} for e in self.estimates],
        }

    def __str__(self) -> str:
        lines = [f"estimate_accuracy: estimators ranked on the {self.scored_on} pairs"]
        for b in self.leaderboard():
            mae = "—" if b["mae"] is None else f"MAE {b['mae']:.4f}, max {b['max_error']:.4f}"
            lines.append(f"  {b['estimator']}: {mae}, best on {b['best']} {b['note']}".rstrip())
        return "\n".join(lines)

    def to_markdown(self) -> str:
        return self.summary() or str(self)

    def summary(self) -> str | None:
        """The leaderboard, best first, for the report's Summary."""
        board = self.leaderboard()
        if not any(b["mae"] is not None for b in board):
            return None
        pairs = max(b["pairs"] for b in board)
        lines = [
            f"**Label-free accuracy estimates**, ranked by their mean absolute error over the "
            f"{pairs} {self.scored_on} model × test set pairs (lower is better):",
            "",
            "| estimator | MAE | largest error | best on |",
            "|---|---|---|---|",
        ]
        for b in board:
            if b["mae"] is None:
                lines.append(f"| {md(b['estimator'])} | — | — | {md(b['note'] or 'no pair')} |")
            else:
                lines.append(
                    f"| {md(b['estimator'])} | {b['mae']:.4f} | {b['max_error']:.4f} | "
                    f"{b['best']} of {b['pairs']} |"
                )
        return "\n".join(lines)

    def tables(self) -> dict[str, tuple[list[str], list[dict[str, Any]]]]:
        rows = [{k: e[k] for k in ESTIMATE_COLUMNS} for e in self.estimates]
        return {"estimates": (ESTIMATE_COLUMNS, rows)}

    def figures(self) -> Iterator[tuple[str, Any]]:
        """Estimated against true accuracy, one panel per estimator, with the diagonal."""
        known = [e for e in self.estimates if e["abs_error"] is not None]
        names = list(dict.fromkeys(e["estimator"] for e in known))
        if not names:
            return
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        columns = min(4, len(names))
        rows = math.ceil(len(names) / columns)
        with plt.rc_context({"text.parse_math": False}):
            figure, axes = plt.subplots(
                rows, columns, figsize=(3 * columns, 3 * rows), squeeze=False, sharex=True,
                sharey=True,
            )  # fmt: skip
            for axis, name in zip(axes.flat, names, strict=False):
                mine = [e for e in known if e["estimator"] == name]
                scored = [e for e in mine if e["scored"]]
                axis.plot([0, 1], [0, 1], color="0.6", linewidth=1)
                axis.scatter([e["accuracy"] for e in mine], [e["estimate"] for e in mine],
                             s=10, color="0.7")  # fmt: skip
                axis.scatter([e["accuracy"] for e in scored], [e["estimate"] for e in scored],
                             s=14, color="C3")  # fmt: skip
                axis.set_title(name, fontsize=9)
                axis.set_xlim(0, 1)
                axis.set_ylim(0, 1)
            for axis in axes.flat[len(names) :]:
                axis.set_visible(False)
            figure.supxlabel("true accuracy")
            figure.supylabel("estimated accuracy")
            figure.tight_layout()
        yield "estimated vs true accuracy", figure


def _estimator_entry(item: str | Mapping[str, Any]) -> tuple[str, str, dict[str, Any]]:
    """An estimator as a name, or as a table ``{name, component, params}`` → (label, component,
    params); anything else is refused, naming the form to use."""
    if isinstance(item, str):
        return item, item, {}
    form = 'a name or a table { name = "atc_mc_ts", component = "atc_mc", params = {...} }'
    if not isinstance(item, Mapping):
        raise InvkitError(f"estimate_accuracy: estimator {item!r} must be {form}")
    unknown = sorted(set(item) - {"name", "component", "params"})
    if unknown or not isinstance(item.get("name"), str) or not item.get("name"):
        extra = f" (unknown keys: {', '.join(unknown)})" if unknown else ""
        raise InvkitError(f"estimate_accuracy: estimator {dict(item)!r} must be {form}{extra}")
    component = item.get("component", item["name"])
    params = item.get("params", {})
    if not isinstance(component, str) or not isinstance(params, Mapping):
        raise InvkitError(f"estimate_accuracy: estimator {dict(item)!r} must be {form}")
    return item["name"], component, dict(params)


class EstimateAccuracy:
    """Every label-free accuracy estimator for every model × target test set (all but the
    source), beside the true accuracy where it is known, ranked on the held-out pairs."""

    name = "estimate_accuracy"
    reads_outputs = True

    def __init__(
        self,
        estimators: Sequence[str | Mapping[str, Any]] | None = None,
        invariance: bool = True,
    ):
        """``estimators``: the registered estimators to run (default: every one), each a name or
        a table ``{name, component, params}`` (one estimator twice, with other parameters);
        ``invariance``: also a line fit per invariance cell (transform × measure)."""
        from invkit.lookup import get_component, list_components

        if estimators is None:
            estimators = [c.name for c in list_components("estimator")]
        entries = [_estimator_entry(item) for item in estimators]
        labels = [label for label, _, _ in entries]
        twice = sorted({label for label in labels if labels.count(label) > 1})
        if twice:
            raise InvkitError(
                f"estimate_accuracy: estimator name(s) {', '.join(map(repr, twice))} given twice; "
                "give each table its own name"
            )
        self.estimators = {
            label: get_component("estimator", component).create(**params)
            for label, component, params in entries
        }
        self.invariance = invariance
        self.params = {"estimators": [list(entry) for entry in entries], "invariance": invariance}
        self.uses = [("estimator", component) for _, component, _ in entries]

    def __call__(
        self, rows: Iterable[Mapping[str, Any]], outputs: Mapping[tuple[str, str], Outputs]
    ) -> EstimationResult:
        from invkit.analysis.linefit import LineFit

        rows = list(rows)
        study = StudyData(rows, outputs)
        estimators = dict(self.estimators)
        if self.invariance:
            for transform, measure in study.scores:
                estimators[f"{transform}·{measure}"] = LineFit((transform, measure))
        truth = _truth(rows)
        held_out = {row["dataset"] for row in rows if "true_accuracy" in row}
        scored_on = "held-out" if held_out else "labeled"
        estimates = []
        for model in study.models:
            for target in study.datasets:
                if target == study.source:
                    continue
                true = truth.get((model, target))
                for name, estimator in estimators.items():
                    estimate, note = _estimate(estimator, name, model, target, study)
                    error = None if estimate is None or true is None else abs(estimate - true)
                    estimates.append(
                        {
                            "model": model,
                            "dataset": target,
                            "estimator": name,
                            "estimate": estimate,
                            "accuracy": true,
                            "abs_error": error,
                            "note": note,
                            "scored": (target in held_out) if held_out else true is not None,
                        }
                    )
        return EstimationResult(estimates, scored_on, self.params)


def _estimate(
    estimator: Any, name: str, model: str, target: str, study: StudyData
) -> tuple[float | None, str]:
    """An estimate in [0, 1], or None and why (needs unmet: the estimator's own message)."""
    study.target = target
    try:
        value = float(estimator(model, target, study))
    except EstimatorNeeds as error:
        return None, str(error)
    except InvkitError as error:
        return None, f"{name}: {error}"
    if not math.isfinite(value):
        return None, f"{name} gave {value}"
    return min(1.0, max(0.0, value)), ""


def _truth(rows: Iterable[Mapping[str, Any]]) -> dict[tuple[str, str], float]:
    truth = {}
    for row in rows:
        value = _finite(row.get("true_accuracy", row.get("accuracy")))
        if value is not None:
            truth[row["model"], row["dataset"]] = value
    return truth
