"""Tables (CSV, Markdown), plots and the analyses' JSON, written from the results store.

Everything here reads the store, never the models: ``invkit report DIR`` re-renders a study's
report (and re-runs its analyses) without a single forward pass.
"""

from __future__ import annotations

import csv
import hashlib
import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from invkit.analysis import AnalysisResult, GroupResult
from invkit.errors import unwritable_output
from invkit.paths import TEMPORARY_SUFFIX, check_writable, replacing
from invkit.store import STORE_NAME, Store

RESULT_COLUMNS = [
    "model",
    "dataset",
    "transform",
    "measure",
    "value",
    "low",
    "high",
    "accuracy",
    "images",
    "labeled",
    "skipped",
    "higher_is_invariant",
    "matching",
]
STATISTICS = ("pearson_r", "spearman_rho", "kendall_tau", "r_squared")


def results_table(store: Store, config: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One row per cell of the configured models × datasets × transforms × measures."""
    names = {
        section: [e["name"] for e in config[section]]
        for section in ("models", "datasets", "transforms", "measures")
    }
    cells = store.cells()
    rows = []
    for model in names["models"]:
        for dataset in names["datasets"]:
            for transform in names["transforms"]:
                for measure in names["measures"]:
                    cell = cells.get((model, dataset, transform, measure))
                    if cell is not None:
                        rows.append({column: getattr(cell, column) for column in RESULT_COLUMNS})
    return rows


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_]+", "-", text).strip("-")[:120]  # no dots, so no ".."


def plot_name(text: str) -> str:
    """A file name for a plot: a readable slug, and a short hash of the full text so that
    labels the slug makes equal (``net/a`` and ``net a``) never share a file."""
    return f"{_slug(text)}-{hashlib.sha256(text.encode()).hexdigest()[:8]}.png"


def _format(value: Any, digits: int = 4) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _write_csv(path: Path, columns: list[str], rows: list[dict[str, Any]]) -> None:
    with replacing(path) as temporary, temporary.open("w", newline="", encoding="utf-8") as out:
        writer = csv.DictWriter(out, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


def _write_text(path: Path, text: str) -> None:
    with replacing(path) as temporary:
        temporary.write_text(text, encoding="utf-8")


def correlation_rows(results: list[tuple[str, AnalysisResult]]) -> list[dict[str, Any]]:
    rows = []
    for name, result in results:
        for group in result.groups:
            row: dict[str, Any] = {
                "analysis": name,
                "kind": result.analysis,
                **group.group,
                "n": group.n,
            }
            for statistic, value in group.statistics.items():
                row[statistic] = value
            for statistic, (low, high) in group.intervals.items():
                row[f"{statistic}_low"], row[f"{statistic}_high"] = low, high
            if group.fit:
                row.update(
                    fit=group.fit["method"],
                    slope=group.fit["slope"],
                    intercept=group.fit["intercept"],
                )
            row["message"] = group.message or ""
            rows.append(row)
    return rows


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


def prediction_rows(results: list[tuple[str, AnalysisResult]]) -> list[dict[str, Any]]:
    return [
        {"analysis": name, **group.group, **prediction}
        for name, result in results
        for group in result.groups
        for prediction in group.predictions
    ]


def plot_group(group: GroupResult, name: str, result: AnalysisResult, path: Path) -> None:
    """Accuracy against invariance: labelled points, the fitted line, its bootstrap band."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(6, 4.5), dpi=110)
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
        f"{name}: {title}" + ("" if not group.message else f"\n{group.message}"), fontsize=9
    )
    axes.grid(alpha=0.3)
    figure.tight_layout()
    try:
        with replacing(path) as temporary:
            figure.savefig(temporary, format="png")
    finally:
        plt.close(figure)


def _markdown_table(header: list[str], rows: list[list[str]]) -> list[str]:
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


def markdown_report(
    config: Mapping[str, Any],
    table: list[dict[str, Any]],
    results: list[tuple[str, AnalysisResult]],
    plots: dict[tuple[str, int], str],
    failures: list[dict[str, Any]],
) -> str:
    lines = ["# invkit study report", ""]
    n_models, n_datasets = len(config["models"]), len(config["datasets"])
    lines.append(
        f"{n_models} model(s) × {n_datasets} dataset(s) × "
        f"{len(config['transforms'])} transform(s) × "
        f"{len(config['measures'])} measure(s): {len(table)} cell(s) in `{STORE_NAME}`. "
        "Full tables: `results.csv`, `correlations.csv`, `predictions.csv`, `analyses.json`."
    )
    pairs = [(t["name"], m["name"]) for t in config["transforms"] for m in config["measures"]]
    by_key = {(r["model"], r["dataset"], r["transform"], r["measure"]): r for r in table}
    for dataset in (d["name"] for d in config["datasets"]):
        header = ["model", "accuracy", "classes", *(f"{t} {m}" for t, m in pairs)]
        rows = []
        for model in (m["name"] for m in config["models"]):
            cells = [by_key.get((model, dataset, t, m)) for t, m in pairs]
            present = [c for c in cells if c]
            if not present:
                continue
            rows.append(
                [
                    model,
                    _format(present[0]["accuracy"]),
                    present[0]["matching"],
                    *(_format(c["value"]) if c else "" for c in cells),
                ]
            )
        if rows:
            lines += ["", f"## {dataset}", "", *_markdown_table(header, rows)]
    for name, result in results:
        lines += ["", f"## Analysis `{name}` ({result.analysis})", ""]
        if result.analysis == "predict_accuracy":
            rows = [
                [
                    " / ".join(group.group.values()),
                    p["point"],
                    _format(p["invariance"]),
                    _format(p["accuracy"]),
                    f"[{p['low']:.4f}, {p['high']:.4f}]",
                    _format(group.statistics.get("loo_mae")),
                ]
                for group in result.groups
                for p in group.predictions
            ]
            lines += (
                _markdown_table(
                    [
                        "group",
                        "predicted for",
                        "invariance",
                        "predicted accuracy",
                        "95% prediction interval",
                        "LOO MAE",
                    ],
                    rows,
                )
                if rows
                else ["No unlabeled point to predict."]
            )
            continue
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
        lines += _markdown_table(
            ["group", "n", "Pearson r [95% CI]", "Spearman ρ [95% CI]", "Kendall τ", "R²", "note"],
            rows,
        )
        for index, group in enumerate(result.groups):
            if (name, index) in plots:
                lines += [
                    "",
                    f"![{name} {' / '.join(group.group.values())}]({plots[(name, index)]})",
                ]
    if failures:
        lines += ["", "## Failures", ""]
        lines += [f"- {f['model']} × {f['dataset']}: {f['error']}" for f in failures]
    return "\n".join(lines) + "\n"


def write_report(
    out_dir: Path, store: Store, config: Mapping[str, Any], analyses: Mapping[str, Any]
) -> dict[str, Path]:
    """Write every output file from the store; returns their paths by name.

    Each file is written under a temporary name and renamed into place, report.md last, and
    plots no longer linked are removed only after it: a report killed or failed half-way
    leaves the previous one whole, every link of it resolving.
    """
    table = results_table(store, config)
    rows = [{**row, "invariance": row["value"]} for row in table]
    results = [(name, analysis(rows)) for name, analysis in analyses.items()]
    plots_dir = out_dir / "plots"
    try:
        plots_dir.mkdir(exist_ok=True)
    except OSError as error:
        raise unwritable_output(plots_dir, error) from None
    plots: dict[tuple[str, int], str] = {}
    for name, result in results:
        if result.analysis == "predict_accuracy":
            continue
        for index, group in enumerate(result.groups):
            if group.n == 0:
                continue
            file_name = plot_name(f"{name}-{'-'.join(group.group.values())}")
            plot_group(group, name, result, plots_dir / file_name)
            plots[(name, index)] = f"plots/{file_name}"
    paths = {
        "results": out_dir / "results.csv",
        "correlations": out_dir / "correlations.csv",
        "predictions": out_dir / "predictions.csv",
        "analyses": out_dir / "analyses.json",
        "report": out_dir / "report.md",
    }
    _write_csv(paths["results"], RESULT_COLUMNS, table)
    _write_csv(paths["correlations"], CORRELATION_COLUMNS, correlation_rows(results))
    _write_csv(
        paths["predictions"],
        [
            "analysis",
            "model",
            "dataset",
            "transform",
            "measure",
            "point",
            "invariance",
            "accuracy",
            "low",
            "high",
        ],
        prediction_rows(results),
    )
    _write_text(
        paths["analyses"],
        json.dumps({name: result.to_dict() for name, result in results}, indent=2, allow_nan=False),
    )
    failures = store.failures()
    _write_text(paths["report"], markdown_report(config, table, results, plots, failures))
    linked = {Path(path).name for path in plots.values()}
    for old in plots_dir.iterdir():
        if old.name not in linked and (old.suffix == ".png" or TEMPORARY_SUFFIX in old.name):
            old.unlink(missing_ok=True)
    return paths


def rerender(out_dir: str | Path) -> dict[str, Path]:
    """``invkit report DIR``: re-run the stored study's analyses and rewrite its report."""
    from invkit.api import get_analysis
    from invkit.errors import InvkitError

    out_dir = Path(out_dir)
    if not (out_dir / STORE_NAME).is_file():
        raise InvkitError(
            f"{str(out_dir)!r} holds no {STORE_NAME}; run `invkit study` into it first"
        )
    check_writable(out_dir)
    store = Store(out_dir / STORE_NAME)
    try:
        config = store.config()
        if config is None:
            raise InvkitError(f"{out_dir / STORE_NAME} holds no study configuration")
        analyses = {
            a["name"]: get_analysis(a["component"], **a["params"]) for a in config["analyses"]
        }
        return write_report(out_dir, store, config, analyses)
    finally:
        store.close()
