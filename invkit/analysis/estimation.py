"""Label-free accuracy estimation: every estimator (the field's and invariance's line fits) for
every model × target test set, side by side, ranked where the truth is known.

``StudyData`` is what an estimator reads: kept outputs, the source set, the labeled sets'
accuracies, the invariance scores. ``EstimateAccuracy`` is the analysis that runs them all;
``docs/estimators.md`` gives each estimator's formula and paper.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from invkit.errors import EstimatorNeeds, InvkitError
from invkit.markup import md
from invkit.plugin.components import Estimate
from invkit.results.outputs import Outputs

ESTIMATE_COLUMNS = [
    "model", "dataset", "estimator", "estimate", "accuracy", "abs_error", "flag", "fit_sets",
    "detail", "note",
]  # fmt: skip
TARGET_COLUMNS = [
    "estimator", "dataset", "mae", "max_error", "pairs", "flagged", "flagged_mae",
    "accuracy_min", "accuracy_max",
]  # fmt: skip


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
        self.meta_sets = list(dict.fromkeys(r["dataset"] for r in self.rows if r.get("meta_set")))
        self.groups = {row["model"]: row["group"] for row in self.rows if row.get("group")}
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

    def targets(self) -> list[str]:
        """The test sets estimated: all but the source and the meta-sets (fit sets only)."""
        return [d for d in self.datasets if d != self.source and d not in self.meta_sets]

    def labeled_sets(self, model: str, leave_out: str) -> list[str]:
        """The labeled, not held-out test sets of ``model``, other than ``leave_out``."""
        return [d for d in self.datasets if d != leave_out and self.accuracy(model, d) is not None]


def _finite(value: Any) -> float | None:
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _span(counts: list[int]) -> str:
    """'8' where every fit used 8 labeled sets, '3–8' where they differ, '' for no fit."""
    if not counts:
        return ""
    low, high = min(counts), max(counts)
    return str(low) if low == high else f"{low}–{high}"


def _errors_summary(estimates: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean and largest absolute error of estimates, trusted and flagged apart."""
    trusted = [e["abs_error"] for e in estimates if not e["flag"]]
    flagged = [e["abs_error"] for e in estimates if e["flag"]]
    return {
        "mae": float(np.mean(trusted)) if trusted else None,
        "max_error": float(np.max(trusted)) if trusted else None,
        "pairs": len(trusted),
        "flagged": len(flagged),
        "flagged_mae": float(np.mean(flagged)) if flagged else None,
    }


@dataclass
class EstimationResult:
    """Every estimate, its truth where known, and the leaderboard over the scored pairs.

    Flagged estimates (premise failed, extrapolated) are ranked apart: an estimator's MAE is
    over its trusted estimates, and its flagged ones are counted and averaged beside it."""

    estimates: list[dict[str, Any]]
    scored_on: str  # "held-out" or "labeled": which pairs rank the estimators
    params: dict[str, Any] = field(default_factory=dict)
    meta_sets: list[str] = field(default_factory=list)  # labeled fit sets, never targets

    def _scored(self) -> list[dict[str, Any]]:
        return [e for e in self.estimates if e["abs_error"] is not None and e["scored"]]

    def leaderboard(self) -> list[dict[str, Any]]:
        """Per estimator, best first: mean and largest absolute error over the trusted scored
        pairs, its flagged pairs apart, and on how many pairs it was the best."""
        scored = self._scored()
        by_pair: dict[tuple[str, str], list[dict[str, Any]]] = {}
        for estimate in scored:
            if not estimate["flag"]:
                by_pair.setdefault((estimate["model"], estimate["dataset"]), []).append(estimate)
        wins: dict[str, int] = {}
        for members in by_pair.values():
            best = min(m["abs_error"] for m in members)
            for m in members:
                if m["abs_error"] == best:
                    wins[m["estimator"]] = wins.get(m["estimator"], 0) + 1
        board = []
        for name in dict.fromkeys(e["estimator"] for e in self.estimates):
            mine = [e for e in scored if e["estimator"] == name]
            refused = [e for e in self.estimates if e["estimator"] == name and e["note"]]
            fit_sets = [e["fit_sets"] for e in mine if e["fit_sets"] is not None]
            board.append(
                {
                    "estimator": name,
                    **_errors_summary(mine),
                    "best": wins.get(name, 0),
                    "fit_sets": _span(fit_sets),
                    "note": refused[0]["note"] if refused and not mine else "",
                }
            )
        return sorted(board, key=lambda b: (b["mae"] is None, b["mae"] or 0.0, b["estimator"]))

    def by_target(self) -> list[dict[str, Any]]:
        """Per estimator and scored target set: its errors there (flagged apart) and the range
        of the true accuracies it was scored against, so mild and severe shifts read apart."""
        scored = self._scored()
        rows = []
        for name in [b["estimator"] for b in self.leaderboard()]:
            for target in dict.fromkeys(e["dataset"] for e in scored):
                mine = [e for e in scored if e["estimator"] == name and e["dataset"] == target]
                if mine:
                    truth = [e["accuracy"] for e in mine]
                    rows.append(
                        {
                            "estimator": name,
                            "dataset": target,
                            **_errors_summary(mine),
                            "accuracy_min": min(truth),
                            "accuracy_max": max(truth),
                        }
                    )
        return rows

    def to_dict(self) -> dict[str, Any]:
        return {
            "params": self.params,
            "scored_on": self.scored_on,
            "meta_sets": self.meta_sets,
            "leaderboard": self.leaderboard(),
            "by_target": self.by_target(),
            "estimates": [{k: e[k] for k in ESTIMATE_COLUMNS} for e in self.estimates],
        }

    def __str__(self) -> str:
        lines = [f"estimate_accuracy: estimators ranked on the {self.scored_on} pairs"]
        for b in self.leaderboard():
            mae = "—" if b["mae"] is None else f"MAE {b['mae']:.4f}, max {b['max_error']:.4f}"
            flagged = f", {b['flagged']} flagged" if b["flagged"] else ""
            line = f"  {b['estimator']}: {mae}, best on {b['best']}{flagged} {b['note']}"
            lines.append(line.rstrip())
        return "\n".join(lines)

    def to_markdown(self) -> str:
        return self.summary() or str(self)

    def summary(self) -> str | None:
        """The leaderboard, best first, then each estimator's MAE per target set beside the
        range of true accuracy there, for the report's Summary."""
        board = self.leaderboard()
        if not any(b["mae"] is not None or b["flagged"] for b in board):
            return None
        pairs = max(b["pairs"] + b["flagged"] for b in board)
        fits = (
            f" Line fits use the labeled sets, {len(self.meta_sets)} of them meta-sets "
            "(synthetic shifts of the source, never targets); *fit sets* says how many each used."
            if self.meta_sets
            else ""
        )
        lines = [
            f"**Label-free accuracy estimates**, ranked by their mean absolute error over the "
            f"{self.scored_on} model × test set pairs they can trust (lower is better; at most "
            f"{pairs} pairs). *Flagged* estimates (the estimator's premise failed on that target, "
            f"or a line fit read it outside its fitted range) are ranked apart.{fits}",
            "",
            "| estimator | MAE | largest error | best on | flagged (MAE) | fit sets |",
            "|---|---|---|---|---|---|",
        ]
        for b in board:
            flagged = f"{b['flagged']} ({b['flagged_mae']:.4f})" if b["flagged"] else "0"
            if b["mae"] is None:
                why = md(b["note"] or "no trusted pair")
                lines.append(f"| {md(b['estimator'])} | — | — | {why} | {flagged} | |")
            else:
                lines.append(
                    f"| {md(b['estimator'])} | {b['mae']:.4f} | {b['max_error']:.4f} | "
                    f"{b['best']} of {b['pairs']} | {flagged} | {b['fit_sets']} |"
                )
        lines += ["", *self._per_target_table()]
        return "\n".join(lines)

    def _per_target_table(self) -> list[str]:
        rows = self.by_target()
        targets = list(dict.fromkeys(r["dataset"] for r in rows))
        if not targets:
            return []
        cell = {(r["estimator"], r["dataset"]): r for r in rows}
        ranges = {}
        for r in rows:
            low, high = ranges.get(r["dataset"], (r["accuracy_min"], r["accuracy_max"]))
            ranges[r["dataset"]] = (min(low, r["accuracy_min"]), max(high, r["accuracy_max"]))
        lines = [
            "MAE per target set (flagged estimates apart, marked †: their MAE where no "
            "trusted one exists):",
            "",
            "| estimator | " + " | ".join(md(t) for t in targets) + " |",
            "|---" * (len(targets) + 1) + "|",
            "| *true accuracy* | "
            + " | ".join(f"{ranges[t][0]:.3f}–{ranges[t][1]:.3f}" for t in targets)
            + " |",
        ]
        for name in dict.fromkeys(r["estimator"] for r in rows):
            shown = []
            for target in targets:
                r = cell.get((name, target))
                if r is None:
                    shown.append("—")
                elif r["mae"] is not None:
                    extra = f" ({r['flagged']}†)" if r["flagged"] else ""
                    shown.append(f"{r['mae']:.4f}{extra}")
                else:
                    shown.append(f"{r['flagged_mae']:.4f}†")
            lines.append(f"| {md(name)} | " + " | ".join(shown) + " |")
        return lines

    def tables(self) -> dict[str, tuple[list[str], list[dict[str, Any]]]]:
        rows = [{k: e[k] for k in ESTIMATE_COLUMNS} for e in self.estimates]
        return {"estimates": (ESTIMATE_COLUMNS, rows), "estimates_by_target": (
            TARGET_COLUMNS, self.by_target())}  # fmt: skip

    def figures(self) -> Iterator[tuple[str, Any]]:
        """Estimated against true accuracy, one panel per estimator in leaderboard order, with
        the diagonal; scored pairs in red, flagged ones as orange crosses, the rest grey."""
        known = [e for e in self.estimates if e["abs_error"] is not None]
        present = {e["estimator"] for e in known}
        names = [b["estimator"] for b in self.leaderboard() if b["estimator"] in present]
        if not names:
            return
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        columns = min(4, len(names))
        rows = math.ceil(len(names) / columns)
        kinds = [
            ("not scored", lambda e: not e["scored"], {"s": 10, "color": "0.7"}),
            (f"scored ({self.scored_on})", lambda e: e["scored"] and not e["flag"],
             {"s": 14, "color": "C3"}),
            ("flagged", lambda e: e["flag"], {"s": 22, "color": "C1", "marker": "x"}),
        ]  # fmt: skip
        with plt.rc_context({"text.parse_math": False}):
            figure, axes = plt.subplots(
                rows, columns, figsize=(3 * columns, 3 * rows + 0.4), squeeze=False,
                sharex=True, sharey=True,
            )  # fmt: skip
            for rank, (axis, name) in enumerate(zip(axes.flat, names, strict=False), start=1):
                mine = [e for e in known if e["estimator"] == name]
                axis.plot([0, 1], [0, 1], color="0.6", linewidth=1)
                for label, chosen, style in kinds:
                    points = [e for e in mine if chosen(e)]
                    axis.scatter([e["accuracy"] for e in points],
                                 [e["estimate"] for e in points], label=label, **style)  # fmt: skip
                axis.set_title(f"{rank}. {name}", fontsize=9)
                axis.set_xlim(0, 1)
                axis.set_ylim(0, 1)
            for axis in axes.flat[len(names) :]:
                axis.set_visible(False)
            handles, labels = axes.flat[0].get_legend_handles_labels()
            figure.legend(handles, labels, loc="upper center", ncol=3, fontsize=8, frameon=False)
            figure.supxlabel("true accuracy")
            figure.supylabel("estimated accuracy")
            figure.tight_layout(rect=(0, 0, 1, 1 - 0.4 / (3 * rows + 0.4)))
        yield "estimated vs true accuracy, estimators ranked by MAE", figure


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
    source and the meta-sets), beside the true accuracy where it is known, ranked on the
    held-out pairs, flagged estimates apart."""

    name = "estimate_accuracy"
    reads_outputs = True
    reads_meta_sets = True  # labeled fit sets for every line fit

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
            for target in study.targets():
                true = truth.get((model, target))
                for name, estimator in estimators.items():
                    answer, note = _estimate(estimator, name, model, target, study)
                    value = None if answer is None else answer.value
                    error = None if value is None or true is None else abs(value - true)
                    estimates.append(
                        {
                            "model": model,
                            "dataset": target,
                            "estimator": name,
                            "estimate": value,
                            "accuracy": true,
                            "abs_error": error,
                            "flag": answer.flag if answer else "",
                            "fit_sets": answer.fit_sets if answer else None,
                            "detail": answer.detail if answer else "",
                            "note": note,
                            "scored": (target in held_out) if held_out else true is not None,
                        }
                    )
        return EstimationResult(estimates, scored_on, self.params, study.meta_sets)


def _estimate(
    estimator: Any, name: str, model: str, target: str, study: StudyData
) -> tuple[Estimate | None, str]:
    """An estimate clipped to [0, 1], or None and why (needs unmet: the estimator's own
    message)."""
    study.target = target
    try:
        answer = estimator(model, target, study)
    except EstimatorNeeds as error:
        return None, str(error)
    except InvkitError as error:
        return None, f"{name}: {error}"
    if not isinstance(answer, Estimate):
        answer = Estimate(float(answer))
    if not math.isfinite(answer.value):
        return None, f"{name} gave {answer.value}"
    return replace(answer, value=min(1.0, max(0.0, float(answer.value)))), ""


def _truth(rows: Iterable[Mapping[str, Any]]) -> dict[tuple[str, str], float]:
    truth = {}
    for row in rows:
        value = _finite(row.get("true_accuracy", row.get("accuracy")))
        if value is not None:
            truth[row["model"], row["dataset"]] = value
    return truth
