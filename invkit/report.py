"""Tables (CSV, Markdown), plots and the analyses' JSON, written from the results store.

Everything here reads the store, never the models: ``invkit report DIR`` re-renders a study's
report (and re-runs its analyses) without a single forward pass. An analysis result is
rendered by what it offers, whoever wrote it: ``to_dict()`` goes to analyses.json, its
``to_markdown()`` (else its ``str()``) to report.md, its optional ``tables()`` to CSV files and
its optional ``figures()`` to plots/.
"""

from __future__ import annotations

import csv
import hashlib
import json
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from invkit.analysis_render import format_value, markdown_table
from invkit.errors import NAMES_SHOWN, InvkitError, unwritable_output
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


def _write_csv(path: Path, columns: list[str], rows: list[dict[str, Any]]) -> None:
    with replacing(path) as temporary, temporary.open("w", newline="", encoding="utf-8") as out:
        writer = csv.DictWriter(out, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


def _write_text(path: Path, text: str) -> None:
    with replacing(path) as temporary:
        temporary.write_text(text, encoding="utf-8")


@dataclass
class Section:
    """What report.md shows for one analysis: its text and its figures' links."""

    label: str
    component: str
    markdown: str
    plots: list[tuple[str, str]] = field(default_factory=list)  # (title, relative path)


def _save_figure(figure: Any, path: Path) -> None:
    try:
        with replacing(path) as temporary:
            figure.savefig(temporary, format="png")
    finally:
        pyplot = sys.modules.get("matplotlib.pyplot")
        if pyplot is not None:
            pyplot.close(figure)  # a figure made with pyplot stays open until closed


def _analysis_json(label: str, result: Any) -> Any:
    value = result.to_dict()
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError) as error:
        raise InvkitError(
            f"analysis {label!r} returned a to_dict() that is not strict JSON ({error}); "
            "return numbers, strings, lists and dicts, with None for NaN"
        ) from None
    return value


def render_analyses(
    results: list[tuple[str, str, Any]], plots_dir: Path
) -> tuple[list[Section], dict[str, tuple[list[str], list[dict[str, Any]]]], dict[str, Any]]:
    """Report sections, merged CSV tables and analyses.json content from analysis results
    ``(label, component, result)``, by what each result offers; its figures are saved."""
    sections, tables, as_json = [], {}, {}
    for label, component, result in results:
        as_json[label] = _analysis_json(label, result)
        to_markdown = getattr(result, "to_markdown", None)
        text = to_markdown() if to_markdown is not None else f"```text\n{result}\n```"
        section = Section(label, component, text)
        for title, figure in getattr(result, "figures", list)():
            file_name = plot_name(f"{label}-{title}")
            _save_figure(figure, plots_dir / file_name)
            section.plots.append((title, f"plots/{file_name}"))
        for name, (columns, rows) in getattr(result, "tables", dict)().items():
            merged_columns, merged_rows = tables.setdefault(name, (["analysis"], []))
            merged_columns += [c for c in columns if c not in merged_columns]
            merged_rows += [{"analysis": label, **row} for row in rows]
        sections.append(section)
    return sections, tables, as_json


def markdown_report(
    config: Mapping[str, Any],
    table: list[dict[str, Any]],
    sections: list[Section],
    csv_names: list[str],
    failures: list[dict[str, Any]],
    skipped: Mapping[tuple[str, str], list[str]],
) -> str:
    lines = ["# invkit study report", ""]
    n_models, n_datasets = len(config["models"]), len(config["datasets"])
    files = ", ".join(f"`{name}`" for name in ["results.csv", *csv_names, "analyses.json"])
    lines.append(
        f"{n_models} model(s) × {n_datasets} dataset(s) × "
        f"{len(config['transforms'])} transform(s) × "
        f"{len(config['measures'])} measure(s): {len(table)} cell(s) in `{STORE_NAME}`. "
        f"Full tables: {files}."
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
                    format_value(present[0]["accuracy"]),
                    present[0]["matching"],
                    *(format_value(c["value"]) if c else "" for c in cells),
                ]
            )
        if rows:
            lines += ["", f"## {dataset}", "", *markdown_table(header, rows)]
    for section in sections:
        lines += ["", f"## Analysis `{section.label}` ({section.component})", "", section.markdown]
        lines += [f"\n![{section.label} {title}]({path})" for title, path in section.plots]
    if skipped:
        lines += ["", "## Skipped images", ""]
        for (model, dataset), errors in skipped.items():
            lines.append(f"- {model} × {dataset}: {len(errors)} unreadable image(s)")
            lines += [f"  - {error}" for error in errors[:NAMES_SHOWN]]
            if len(errors) > NAMES_SHOWN:
                lines.append(f"  - … and {len(errors) - NAMES_SHOWN} more (`bad_images` table)")
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
    components = {a["name"]: a["component"] for a in config["analyses"]}
    results = [
        (label, components.get(label, label), analysis(rows))
        for label, analysis in analyses.items()
    ]
    plots_dir = out_dir / "plots"
    try:
        plots_dir.mkdir(exist_ok=True)
    except OSError as error:
        raise unwritable_output(plots_dir, error) from None
    sections, tables, as_json = render_analyses(results, plots_dir)
    paths = {"results": out_dir / "results.csv"}
    _write_csv(paths["results"], RESULT_COLUMNS, table)
    for name, (columns, table_rows) in tables.items():
        paths[name] = out_dir / f"{_slug(name)}.csv"
        _write_csv(paths[name], columns, table_rows)
    paths["analyses"] = out_dir / "analyses.json"
    _write_text(paths["analyses"], json.dumps(as_json, indent=2, allow_nan=False))
    csv_names = [paths[name].name for name in tables]
    paths["report"] = out_dir / "report.md"
    failures = store.failures()
    text = markdown_report(config, table, sections, csv_names, failures, store.bad_images())
    _write_text(paths["report"], text)
    linked = {Path(path).name for section in sections for _, path in section.plots}
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
