"""How the built-in analyses' results present themselves: Markdown tables, CSV rows and
figures. The report asks any analysis result for these (``to_markdown``, ``tables``,
``figures``) and never reads a result's internals, so a third-party analysis is rendered by
the same rules as the built-ins.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from invkit.analysis import AnalysisResult, GroupResult

CORRELATION_COLUMNS = [
    "analysis",
    "kind",
    "model",
    "dataset",
    "transform",
    "measure",
    "n",
    "pearson_r",
    "pearson_r_low",
    "pearson_r_high",
    "pearson_p",
    "spearman_rho",
    "spearman_rho_low",
    "spearman_rho_high",
    "spearman_p",
    "kendall_tau",
    "kendall_p",
    "r_squared",
    "fit",
    "slope",
    "slope_low",
    "slope_high",
    "intercept",
    "intercept_low",
    "intercept_high",
    "loo_mae",
    "message",
]


PREDICTION_COLUMNS = [
    "model",
    "dataset",
    "transform",
    "measure",
    "point",
    "invariance",
    "accuracy",
    "low",
    "high",
]


def format_value(value: Any, digits: int = 4) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def tables(result: AnalysisResult) -> dict[str, tuple[list[str], list[dict[str, Any]]]]:
    """``correlations`` (one row per group) and ``predictions`` (one per predicted point)."""
    correlations = []
    for group in result.groups:
        row: dict[str, Any] = {"kind": result.analysis, **group.group, "n": group.n}
        row.update(group.statistics)
        for statistic, (low, high) in group.intervals.items():
            row[f"{statistic}_low"], row[f"{statistic}_high"] = low, high
        if group.fit:
            row.update(
                fit=group.fit["method"], slope=group.fit["slope"], intercept=group.fit["intercept"]
            )
        row["message"] = group.message or ""
        correlations.append(row)
    predictions = [
        {**group.group, **prediction} for group in result.groups for prediction in group.predictions
    ]
    return {
        "correlations": (CORRELATION_COLUMNS[1:], correlations),
        "predictions": (PREDICTION_COLUMNS, predictions),
    }


def markdown_table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines.extend("| " + " | ".join(row) + " |" for row in rows)
    return lines


def _interval(group: GroupResult, statistic: str) -> str:
    value = group.statistics.get(statistic)
    if value is None:
        return ""
    text = f"{value:.3f}"
    if statistic in group.intervals:
        low, high = group.intervals[statistic]
        text += f" [{low:.3f}, {high:.3f}]"
    return text


def to_markdown(result: AnalysisResult) -> str:
    """The groups' statistics as a table; for predictions, the predicted accuracies."""
    if result.predicts:
        rows = [
            [
                " / ".join(group.group.values()),
                p["point"],
                format_value(p["invariance"]),
                format_value(p["accuracy"]),
                f"[{p['low']:.4f}, {p['high']:.4f}]",
                format_value(group.statistics.get("loo_mae")),
            ]
            for group in result.groups
            for p in group.predictions
        ]
        header = ["group", "predicted for", "invariance", "predicted accuracy",
                  "95% prediction interval", "LOO MAE"]  # fmt: skip
        if not rows:
            return "No unlabeled point to predict."
        return "\n".join(markdown_table(header, rows))
    rows = [
        [
            " / ".join(group.group.values()),
            str(group.n),
            _interval(group, "pearson_r"),
            _interval(group, "spearman_rho"),
            _interval(group, "kendall_tau"),
            _interval(group, "r_squared"),
            group.message or "",
        ]
        for group in result.groups
    ]
    header = ["group", "n", "Pearson r [95% CI]", "Spearman ρ [95% CI]", "Kendall τ", "R²", "note"]
    return "\n".join(markdown_table(header, rows))


def figures(result: AnalysisResult) -> Iterator[tuple[str, Figure]]:
    """One scatter plot per group with points (correlation analyses), named by the group."""
    if result.predicts:
        return
    for group in result.groups:
        if group.n:
            yield "-".join(group.group.values()), group_figure(group, result)


def group_figure(group: GroupResult, result: AnalysisResult) -> Figure:
    """Accuracy against invariance: labelled points, the fitted line, its bootstrap band."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(6, 4.5), dpi=110)
    axes = figure.subplots()
    axes.scatter(group.x, group.y, s=22, color="tab:blue", zorder=3)
    for x, y, label in zip(group.x, group.y, group.points, strict=True):
        axes.annotate(label, (x, y), fontsize=7, xytext=(3, 3), textcoords="offset points")
    if group.band:
        axes.fill_between(
            group.band["x"],
            group.band["low"],
            group.band["high"],
            color="tab:orange",
            alpha=0.25,
            label="95% bootstrap band",
        )
    if group.fit and group.x:
        xs = group.band["x"] if group.band else sorted(group.x)
        ys = [group.fit["intercept"] + group.fit["slope"] * x for x in xs]
        stats = group.statistics
        label = f"{group.fit['method']} fit: r = {stats['pearson_r']:.3f}"
        if "pearson_r" in group.intervals:
            low, high = group.intervals["pearson_r"]
            label += f" [{low:.3f}, {high:.3f}]"
        label += f", ρ = {stats['spearman_rho']:.3f}"
        axes.plot(xs, ys, color="tab:orange", label=label)
        axes.legend(fontsize=8, loc="best")
    params = result.params
    x_scale = (
        f" ({params['scale_invariance']})"
        if params.get("scale_invariance", "none") != "none"
        else ""
    )
    y_scale = (
        f" ({params['scale_accuracy']})" if params.get("scale_accuracy", "none") != "none" else ""
    )
    axes.set_xlabel(
        f"invariance: {group.group.get('transform', '')} {group.group.get('measure', '')}{x_scale}"
    )
    axes.set_ylabel(f"accuracy{y_scale}")
    title = ", ".join(
        f"{k} {v}" for k, v in group.group.items() if k not in ("transform", "measure")
    )
    axes.set_title(
        f"{result.analysis}: {title}" + ("" if not group.message else f"\n{group.message}"),
        fontsize=9,
    )
    axes.grid(alpha=0.3)
    figure.tight_layout()
    return figure
