"""Tables (CSV, Markdown), plots and the analyses' JSON, written from the results store.

Everything here reads the store, never the models: ``invkit report DIR`` re-renders a study's
report (and re-runs its analyses) without a single forward pass. An analysis result is
rendered by what it offers, whoever wrote it: ``to_dict()`` goes to analyses.json, its
optional ``summary()`` to the report's opening Summary, its ``to_markdown()`` (else its
``str()``) to its own section of report.md, its optional ``tables()`` to CSV files and its
optional ``figures()`` to plots/ (PNG for the report, PDF for papers).
"""

from __future__ import annotations

import csv
import hashlib
import json
import re
import sys
import warnings
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from invkit.analysis.render import format_value, markdown_table
from invkit.errors import InvkitError, InvkitWarning, unwritable_output
from invkit.inputs.layers import layer_cell
from invkit.markup import code, csv_cell, fenced, md, terminal
from invkit.paths import TEMPORARY_SUFFIX, check_writable, is_own, refuse_links, replacing
from invkit.report.formats import report_html, summary_latex
from invkit.report.per_sample import configured, write_parquet
from invkit.results.reading import StudyOutputs
from invkit.results.store import STORE_NAME, Store, store_files
from invkit.version import __version__ as VERSION

CELL_RESULT_COLUMNS = [  # a cell's own fields in results.csv
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
RESULT_COLUMNS = [*CELL_RESULT_COLUMNS, "layer", "depth"]  # a layer cell's layer and its depth


PER_VIEW_COLUMNS = [
    "model", "dataset", "transform", "measure", "layer", "view", "magnitude", "value",
]  # fmt: skip


def results_table(store: Store, config: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One row per cell of the configured models × datasets × transforms × measures; ``views``
    holds the cell's value on each view (view, magnitude, value), in the transform's order."""
    names = configured(config)
    cells = store.cells()
    views = store.view_values()
    layers = measured_layers(store, config)
    layer_measures = [entry["name"] for entry in config.get("layer_measures", [])]
    rows = []
    for model in names["model"]:
        for dataset in names["dataset"]:
            for transform in names["transform"]:
                keys = [(measure, "", None) for measure in names["measure"]]
                keys += [(m, layer, depth) for layer, depth in layers.get(model, [])
                         for m in layer_measures]  # fmt: skip
                for measure, layer, depth in keys:
                    label = layer_cell(measure, layer) if layer else measure
                    cell = cells.get((model, dataset, transform, label))
                    if cell is not None:
                        row = {column: getattr(cell, column) for column in CELL_RESULT_COLUMNS}
                        row.update(measure=measure, layer=layer or None, depth=depth)
                        row["views"] = [
                            {"view": view, "magnitude": magnitude, "value": value}
                            for view, magnitude, value in views.get(cell.key, [])
                        ]
                        rows.append(row)
    return rows


def measured_layers(store: Store, config: Mapping[str, Any]) -> dict[str, list[tuple[str, float]]]:
    """Per model, the layers the config measures, shallowest first, with their relative depth
    as the model's last pass recorded it (``"stages"``: every layer it recorded)."""
    recorded = store.model_inputs()
    chosen = {}
    for entry in config["models"]:
        named = entry.get("layers") or config.get("run", {}).get("layers") or []
        depths = recorded.get(entry["name"], {}).get("layer_depths", {})
        keep = [(layer, depth) for layer, depth in depths.items()
                if "stages" in named or layer in named]  # fmt: skip
        chosen[entry["name"]] = sorted(keep, key=lambda item: item[1])
    return chosen


def per_view_table(table: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per cell and view (per_view.csv): the cell's value on that view."""
    return [
        {**{k: row[k] for k in PER_VIEW_COLUMNS[:5]}, **view}
        for row in table
        for view in row["views"]
    ]


def analysis_rows(table: list[dict[str, Any]], config: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The rows the analyses see: each cell's value as ``invariance``; a held-out dataset's
    accuracy moved to ``true_accuracy``, so analyses treat it as unlabeled and predictions
    can be checked against it; ``source`` marks the source set's rows, ``meta_set`` a
    meta-set's, ``group`` names the model's recipe group."""
    held_out = {d["name"] for d in config["datasets"] if d.get("held_out")}
    sources = {d["name"] for d in config["datasets"] if d.get("source")}
    meta = {d["name"] for d in config["datasets"] if d.get("meta_set")}
    groups = {m["name"]: m["group"] for m in config["models"] if m.get("group")}
    rows = []
    for row in table:
        row = {**row, "invariance": row["value"], "source": row["dataset"] in sources,
               "meta_set": row["dataset"] in meta, "group": groups.get(row["model"])}  # fmt: skip
        if row.get("layer"):  # a layer measure at a layer: a measure of its own to analyses
            row["measure"] = layer_cell(row["measure"], row["layer"])
        if row["dataset"] in held_out:
            row["true_accuracy"], row["accuracy"] = row["accuracy"], None
        rows.append(row)
    return rows


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_]+", "-", text).strip("-")[:120]  # no dots, so no ".."


def plot_name(text: str) -> str:
    """A file name for a plot: a readable slug, and a short hash of the full text so that
    labels the slug makes equal (``net/a`` and ``net a``) never share a file."""
    return f"{_slug(text)}-{hashlib.sha256(text.encode()).hexdigest()[:8]}.png"


def _write_csv(path: Path, columns: list[str], rows: list[dict[str, Any]]) -> None:
    with replacing(path) as temporary, temporary.open("w", newline="", encoding="utf-8") as out:
        csv.writer(out).writerow([csv_cell(column) for column in columns])
        writer = csv.DictWriter(out, fieldnames=columns, extrasaction="ignore")
        writer.writerows({key: csv_cell(value) for key, value in row.items()} for row in rows)


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
    summary: str | None = None


FIGURE_FORMATS = ("png", "pdf")  # PNG for report.md, PDF (vector) for papers


def _save_figure(figure: Any, path: Path) -> None:
    try:
        for form in FIGURE_FORMATS:
            with replacing(path.with_suffix(f".{form}")) as temporary:
                figure.savefig(temporary, format=form, bbox_inches="tight")
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


@contextmanager
def _names_as_text() -> Iterator[None]:
    """Figures drawn with matplotlib's mathtext off, so that a model named ``$\\foo$`` is
    drawn as its text and not parsed (and failed) as TeX; a figure that wants mathtext sets
    ``parse_math=True`` on its own text."""
    import matplotlib

    with matplotlib.rc_context({"text.parse_math": False}):
        yield


@dataclass
class Rendered:
    """What one analysis contributes to the report, as plain data (so it can be cached)."""

    section: Section
    tables: dict[str, tuple[list[str], list[dict[str, Any]]]]
    as_json: Any


def render_analysis(label: str, component: str, result: Any, plots_dir: Path) -> Rendered:
    """A result rendered by what it offers: JSON, Markdown, summary, tables, saved figures."""
    as_json = _analysis_json(label, result)
    to_markdown = getattr(result, "to_markdown", None)
    text = to_markdown() if to_markdown is not None else fenced(str(result))
    summary = getattr(result, "summary", None)
    section = Section(label, component, text, summary=summary() if summary else None)
    with _names_as_text():
        for title, figure in getattr(result, "figures", list)():
            file_name = plot_name(f"{label}-{title}")
            _save_figure(figure, plots_dir / file_name)
            section.plots.append((title, f"plots/{file_name}"))
    return Rendered(section, dict(getattr(result, "tables", dict)()), as_json)


class ReportCache:
    """What each analysis rendered, keyed by everything it depends on (its component, plugin
    version and parameters, and the rows it read): ``invkit report`` re-runs an analysis, its
    bootstraps and its figures only when one of them changed, or a figure file is gone.

    Each entry carries a SHA-256 of its key and content, verified before it is used: an entry
    edited by hand, or of a shape this version does not write, is recomputed (with a warning),
    never shown; so is a file that is not JSON at all."""

    NAME = ".invkit-report-cache.json"

    def __init__(self, out_dir: Path):
        self.path = out_dir / self.NAME
        self.entries: dict[str, Any] = {}
        self.kept: dict[str, Any] = {}
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return
        except (OSError, UnicodeDecodeError) as error:
            self._warn(f"cannot be read ({error})")
            return
        try:
            entries = json.loads(text)
        except ValueError:
            entries = None
        if not isinstance(entries, dict):
            self._warn("is not a JSON object of entries")
            return
        self.entries = entries

    def _warn(self, problem: str) -> None:
        warnings.warn(
            f"the report cache {str(self.path)!r} {problem}; the analyses it held are run "
            "again and the cache rewritten",
            ReportCacheWarning,
            stacklevel=3,
        )

    @staticmethod
    def _checksum(key: str, content: Any) -> str:
        from invkit.fingerprint import digest

        return digest([key, content])

    def get(self, label: str, key: str, out_dir: Path) -> Rendered | None:
        entry = self.entries.get(label)
        if entry is None:
            return None
        try:
            if entry["key"] != key:
                return None
            if entry["checksum"] != self._checksum(key, entry["content"]):
                raise ValueError("checksum")
            content = entry["content"]
            raw_section = content["section"]
            section = Section(
                label=str(raw_section["label"]),
                component=str(raw_section["component"]),
                markdown=str(raw_section["markdown"]),
                plots=[(str(title), str(path)) for title, path in raw_section["plots"]],
                summary=None if raw_section["summary"] is None else str(raw_section["summary"]),
            )
            tables = {
                str(name): (list(columns), [dict(row) for row in rows])
                for name, (columns, rows) in content["tables"].items()
            }
            as_json = content["as_json"]
        except (KeyError, TypeError, ValueError, AttributeError):
            self._warn(f"holds an entry for {label!r} that fails its check")
            return None
        files = [out_dir / path for _, path in section.plots]
        if not all(f.is_file() and f.with_suffix(".pdf").is_file() for f in files):
            return None
        return Rendered(section, tables, as_json)

    def put(self, label: str, key: str, rendered: Rendered) -> None:
        content = {
            "section": asdict(rendered.section),
            "tables": rendered.tables,
            "as_json": rendered.as_json,
        }
        # as stored: the checksum is over the JSON form the next run reads back
        content = json.loads(json.dumps(content, default=str))
        self.kept[label] = {
            "key": key,
            "content": content,
            "checksum": self._checksum(key, content),
        }

    def save(self) -> None:
        _write_text(self.path, json.dumps(self.kept, default=str))  # NaN allowed: ours alone


class ReportCacheWarning(InvkitWarning):
    """The report cache was unreadable or held an entry that failed its check."""


def render_analyses(
    analyses: Mapping[str, Any],
    entries: Mapping[str, Mapping[str, Any]],
    rows: list[dict[str, Any]],
    out_dir: Path,
    outputs: StudyOutputs | None = None,
    progress: bool = False,
) -> tuple[
    list[Section], dict[str, tuple[list[str], list[dict[str, Any]]]], dict[str, Any], set[str]
]:
    """Report sections, merged CSV tables, analyses.json content and the plots written now,
    each analysis run (or taken from the cache when nothing it depends on changed) and
    rendered by what it offers. An analysis that declares ``reads_outputs`` is also given
    the study's kept outputs, which are then part of its cache key; only an analysis that
    declares ``reads_meta_sets`` is given the meta-sets' rows. ``progress``: a bar over
    the analyses, naming the one that runs (on a terminal)."""
    from tqdm.auto import tqdm

    from invkit.fingerprint import digest
    from invkit.inputs.codeprint import component_version

    cache = ReportCache(out_dir)
    sections, tables, as_json = [], {}, {}
    written: set[str] = set()  # PNG plots rendered by this run (not taken from the cache)
    plain = [row for row in rows if not row.get("meta_set")]  # meta-sets: fit sets only
    digests = {True: digest(rows), False: digest(plain)}
    bar = tqdm(
        analyses.items(), desc="analyses", unit="analysis", leave=False,
        disable=None if progress else True,
    )  # fmt: skip
    for label, analysis in bar:
        bar.set_postfix_str(terminal(label), refresh=True)
        entry = entries.get(label, {"component": label, "params": {}})
        component = entry["component"]
        try:
            version = component_version("analysis", component)
        except InvkitError:  # an analysis handed in directly, not by name
            version = repr(analysis)
        reads_outputs = bool(getattr(analysis, "reads_outputs", False))
        reads_meta = bool(getattr(analysis, "reads_meta_sets", False))
        given = rows if reads_meta else plain
        kept = outputs if outputs is not None else StudyOutputs(out_dir, {})
        depends = [digests[reads_meta], kept.digest() if reads_outputs else None]
        depends.append([component_version(*used) for used in getattr(analysis, "uses", ())])
        key = digest([VERSION, component, version, entry.get("params", {}), depends])
        rendered = cache.get(label, key, out_dir)
        if rendered is None:
            result = analysis(given, outputs=kept) if reads_outputs else analysis(given)
            rendered = render_analysis(label, component, result, out_dir / "plots")
            written.update(Path(path).name for _, path in rendered.section.plots)
        cache.put(label, key, rendered)
        as_json[label] = rendered.as_json
        for name, (columns, table_rows) in rendered.tables.items():
            merged_columns, merged_rows = tables.setdefault(name, (["analysis"], []))
            merged_columns += [c for c in columns if c not in merged_columns]
            merged_rows += [{"analysis": label, **row} for row in table_rows]
        sections.append(rendered.section)
    cache.save()
    return sections, tables, as_json, written


def markdown_report(
    config: Mapping[str, Any],
    table: list[dict[str, Any]],
    sections: list[Section],
    csv_names: list[str],
    failures: list[dict[str, Any]],
    skipped: Mapping[tuple[str, str], list[str]],
    models: Sequence[dict[str, Any]] = (),
) -> str:
    lines = ["# invkit study report", ""]
    n_models, n_datasets = len(config["models"]), len(config["datasets"])
    names = [
        "results.csv",
        "per_view.csv",
        *csv_names,
        *(["models.csv"] if models else []),
        "analyses.json",
    ]
    files = ", ".join(f"`{name}`" for name in names)
    lines.append(
        f"{n_models} model(s) × {n_datasets} dataset(s) × "
        f"{len(config['transforms'])} transform(s) × "
        f"{len(config['measures'])} measure(s): {len(table)} cell(s) in `{STORE_NAME}`. "
        f"Full tables: {files}."
    )
    summaries = [s for s in sections if s.summary]
    warnings = caveats(table, models, subset_datasets(config))
    if summaries or warnings:
        lines += ["", "## Summary"]
        lines += [part for line in warnings for part in ("", f"**Warning:** {md(line)}")]
        for section in summaries:  # findings, the first figure, then the tables behind them
            findings, tables = _findings_and_tables(section.summary or "")
            lines += ["", findings]
            lines += [_figure_line(section, *plot) for plot in section.plots[:1]]
            lines += ["", tables] if tables else []
        figures = [(s, title, path) for s in summaries for title, path in s.plots[1:]]
        lines += [_figure_line(s, title, path) for s, title, path in figures]
    for section in sections:
        heading = f"## Analysis {code(section.label)} ({md(section.component)})"
        lines += ["", heading, "", section.markdown]
        if not section.summary:
            lines += [_figure_line(section, title, path) for title, path in section.plots]
    lines += ["", "## Results per test set", "", _results_note(table)]
    lines += _dataset_tables(config, table)
    lines += _models_section(models)
    if skipped:
        lines += ["", "## Skipped images", ""]
        for (model, dataset), errors in skipped.items():
            lines.append(f"- {md(model)} × {md(dataset)}: {len(errors)} unreadable image(s)")
            lines += [f"  - {md(error)}" for error in errors[:SKIPPED_SHOWN]]
            if len(errors) > SKIPPED_SHOWN:
                lines.append(f"  - … and {len(errors) - SKIPPED_SHOWN} more (`bad_images` table)")
    if failures:
        lines += ["", "## Failures", ""]
        lines += [f"- {md(f['model'])} × {md(f['dataset'])}: {md(f['error'])}" for f in failures]
    return "\n".join(lines) + "\n"


MODEL_COLUMNS = [
    "model", "spec", "channels", "input_size", "interpolation", "crop_pct", "mean", "std",
    "num_classes", "random_weights",
]  # fmt: skip


CHANCE_P = 0.001  # a model is at chance on a set unless a binomial test rejects it at this level
CHANCE_SHOWN = 4  # test sets named per model at chance; past it, a count


def subset_datasets(config: Mapping[str, Any]) -> set[str]:
    """The datasets whose model outputs are restricted to a class subset: there a model's
    chance level is not 1 / its outputs, so no chance warning is given."""
    return {d["name"] for d in config["datasets"] if d.get("class_subset")}


def at_chance(accuracy: float, labeled: int, classes: int) -> bool:
    """An accuracy a model guessing among its ``classes`` outputs would reach: the one-sided
    binomial test of "better than 1/classes" does not reject at ``CHANCE_P``."""
    from scipy.stats import binomtest

    hits = round(accuracy * labeled)
    return binomtest(hits, labeled, 1 / classes, alternative="greater").pvalue > CHANCE_P


def _chance_lines(
    table: Sequence[Mapping[str, Any]], models: Sequence[Mapping[str, Any]], skip: set[str]
) -> list[str]:
    """Models at chance on some test sets, and test sets where every model is."""
    classes = {m["model"]: m.get("num_classes") for m in models if not m.get("random_weights")}
    pairs = {
        (row["model"], row["dataset"]): (row["accuracy"], row["labeled"])
        for row in table
        if row.get("accuracy") is not None and row["labeled"] and row["dataset"] not in skip
        and (classes.get(row["model"]) or 0) > 1
    }  # fmt: skip
    chance = {
        pair for pair, (accuracy, labeled) in pairs.items()
        if at_chance(accuracy, labeled, classes[pair[0]])
    }  # fmt: skip
    lines = []
    datasets = list(dict.fromkeys(dataset for _, dataset in pairs))
    everyone = [
        d for d in datasets
        if all((m, d) in chance for m, dd in pairs if dd == d) and len({m for m, _ in pairs}) > 1
    ]  # fmt: skip
    for dataset in everyone:
        lines.append(
            f"every model is at chance on {dataset}: its accuracies and correlations there are "
            "noise; check its labels and class matching, or leave it out"
        )
    for model in dict.fromkeys(m for m, _ in pairs):
        sets = [d for d in datasets if (model, d) in chance and d not in everyone]
        if sets:
            named = ", ".join(f"{d} ({pairs[model, d][0]:.3f})" for d in sets[:CHANCE_SHOWN])
            more = f" and {len(sets) - CHANCE_SHOWN} more" if len(sets) > CHANCE_SHOWN else ""
            lines.append(
                f"{model} is at chance (1/{classes[model]} = {1 / classes[model]:.3f}, binomial "
                f"test p > {CHANCE_P}) on {len(sets)} test set(s): {named}{more}; its invariance "
                "there is that of a model that has learned nothing"
            )
    return lines


def caveats(
    table: Sequence[Mapping[str, Any]],
    models: Sequence[Mapping[str, Any]],
    subsets: set[str] = frozenset(),
) -> list[str]:
    """What makes the numbers meaningless, said before them: models with random weights, test
    sets on which every model has the same accuracy (no correlation can be read there), and
    models at chance (``subsets``: datasets with a class subset, where chance is unknown)."""
    lines = []
    random = [m["model"] for m in models if m.get("random_weights")]
    if random:
        lines.append(
            f"{len(random)} model(s) use random weights ({', '.join(random)}): their accuracy is "
            "chance, and so is any correlation with it; load pretrained weights "
            '(pretrained = true, or weights = "FILE")'
        )
    names = {row["model"] for row in table}
    for dataset in dict.fromkeys(row["dataset"] for row in table):
        accuracies = {
            row["model"]: row["accuracy"]
            for row in table
            if row["dataset"] == dataset and row.get("accuracy") is not None
        }
        if len(names) > 1 and len(accuracies) == len(names) and len(set(accuracies.values())) == 1:
            value = next(iter(accuracies.values()))
            lines.append(
                f"every model has the same accuracy ({value:.4f}) on {dataset}: the models "
                "cannot be told apart by accuracy there, and its correlations are undefined"
            )
    return lines + _chance_lines(table, models, subsets)


def model_rows(config: Mapping[str, Any], inputs: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The preprocessing each model actually used (as its passes recorded it), for models.csv
    and the report: what a reader needs to reproduce the numbers."""
    rows = []
    for entry in config["models"]:
        recorded = inputs.get(entry["name"])
        if recorded is not None:
            rows.append({"model": entry["name"], "spec": entry["spec"], **recorded})
    return rows


def _models_section(rows: Sequence[dict[str, Any]]) -> list[str]:
    if not rows:
        return []
    header = ["model", "spec", "input", "interpolation", "crop", "mean", "std", "outputs"]
    table = [
        [
            md(row["model"]),
            code(row["spec"]),
            "×".join(map(str, row["input_size"])),
            md(row["interpolation"]),
            f"{row['crop_pct']:g}",
            ", ".join(f"{v:.4g}" for v in row["mean"]),
            ", ".join(f"{v:.4g}" for v in row["std"]),
            str(row.get("num_classes") or ""),
        ]
        for row in rows
    ]
    return ["", "## Models", "", "What each model was given (`models.csv`).", "",
            *markdown_table(header, table)]  # fmt: skip


SKIPPED_SHOWN = 20  # skipped images the report names per pass (all are in the store)
TABLE_CELLS = 7  # transform × measure columns per table, beside model, accuracy and classes


def _findings_and_tables(summary: str) -> tuple[str, str]:
    """A summary split before its first table (and the paragraph that introduces it): the
    findings a reader acts on, and the numbers behind them."""
    blocks = summary.split("\n\n")
    split = next((i for i, b in enumerate(blocks) if b.lstrip().startswith("|")), len(blocks))
    if 1 < split < len(blocks):  # the paragraph introducing the first table goes with it
        split -= 1
    return "\n\n".join(blocks[:split]), "\n\n".join(blocks[split:])


def _figure_line(section: Section, title: str, path: str) -> str:
    """A figure and, on the line under it (a hard break, so it stays with its figure in every
    renderer), its caption with the link to its PDF."""
    pdf = str(Path(path).with_suffix(".pdf"))
    return f"\n![{md(section.label)} {md(title)}]({path})  \n*{md(title)}* ([PDF]({pdf}))"


def _results_note(table: list[dict[str, Any]]) -> str:
    directions = {r["measure"]: r["higher_is_invariant"] for r in table}
    marked = [f"{md(m)} {'↑' if d else '↓'}" for m, d in directions.items() if d is not None]
    return "Each cell: the measure averaged over the test set's images" + (
        f" ({', '.join(marked)}: ↑ higher, ↓ lower = more invariant)." if marked else "."
    )


def _dataset_tables(config: Mapping[str, Any], table: list[dict[str, Any]]) -> list[str]:
    """One table per test set (split so none is wider than about 10 columns): each model's
    accuracy, how its classes were matched, and its invariance values."""
    pairs = [(t["name"], m["name"]) for t in config["transforms"] for m in config["measures"]]
    by_key = {(r["model"], r["dataset"], r["transform"], r["measure"]): r for r in table}
    lines: list[str] = []
    for dataset in (d["name"] for d in config["datasets"]):
        present = {
            model: [c for t, m in pairs if (c := by_key.get((model, dataset, t, m)))]
            for model in (m["name"] for m in config["models"])
        }
        present = {model: cells for model, cells in present.items() if cells}
        if not present:
            continue
        lines += ["", f"### {md(dataset)}"]
        for start in range(0, len(pairs), TABLE_CELLS):
            chosen = pairs[start : start + TABLE_CELLS]
            header = ["model", "accuracy", "classes", *(md(f"{t} {m}") for t, m in chosen)]
            rows = [
                [
                    md(model),
                    format_value(cells[0]["accuracy"]),
                    md(cells[0]["matching"]),
                    *(
                        format_value((by_key.get((model, dataset, t, m)) or {}).get("value"))
                        for t, m in chosen
                    ),
                ]
                for model, cells in present.items()
            ]
            lines += ["", *markdown_table(header, rows)]
    return lines


REPORT_FILES_KEY = "report_files"  # store meta: the plots this report wrote, with their hashes
OWN_TEMPORARY = re.compile(rf"\.[A-Za-z0-9_-]+\.(png|pdf)\.\d+{re.escape(TEMPORARY_SUFFIX)}")


def output_names() -> list[str]:
    """What invkit reads, writes in or through in an output folder, besides the report's
    files it replaces whole: the store's files, the lock, the write probe, the report cache,
    ``plots/`` and ``outputs/``. None of them may be a symbolic link."""
    from invkit.lock import LOCK_NAME
    from invkit.paths import PROBE_NAME
    from invkit.results.outputs import FOLDER

    return [*store_files(), LOCK_NAME, PROBE_NAME, ReportCache.NAME, "plots", FOLDER]


def _recorded_plots(store: Store) -> dict[str, str]:
    """The plots the last report recorded writing: file name → SHA-256 of what it wrote."""
    return json.loads(store.get_meta(REPORT_FILES_KEY) or "{}")


def _with_pdfs(names: set[str]) -> set[str]:
    """Plot names and their PDF twins (every figure is written as PNG and PDF)."""
    return names | {str(Path(name).with_suffix(".pdf")) for name in names}


def remove_report_plots(out_dir: Path, store: Store, keep: set[str] = frozenset()) -> None:
    """Remove the plots an earlier report recorded writing, except ``keep``, and the temporary
    files a killed report left. A file whose bytes changed since (the user's now), a link,
    or anything invkit did not write, stays."""
    plots_dir = out_dir / "plots"
    for name, sha in _recorded_plots(store).items():
        path = plots_dir / Path(name).name
        if name not in keep and is_own(path, sha):
            path.unlink()
    if plots_dir.is_dir() and not plots_dir.is_symlink():
        for old in plots_dir.iterdir():
            if OWN_TEMPORARY.fullmatch(old.name) and old.is_file() and not old.is_symlink():
                old.unlink(missing_ok=True)


def _record_plots(store: Store, plots_dir: Path, linked: set[str], written: set[str]) -> None:
    """Record the linked plots as invkit's: those written now with their hashes now, those
    reused from an earlier report with the hash recorded when invkit wrote them (a plot the
    user edited since is not taken for invkit's). A linked plot never recorded (a folder from
    before invkit kept this record) is not recorded now either."""
    from invkit.fingerprint import file_sha256

    recorded = _recorded_plots(store)
    hashes = {
        name: file_sha256(plots_dir / name) if name in written else recorded[name]
        for name in linked
        if name in written or name in recorded
    }
    store.set_meta(REPORT_FILES_KEY, json.dumps(hashes, sort_keys=True))


def write_report(
    out_dir: Path,
    store: Store,
    config: Mapping[str, Any],
    analyses: Mapping[str, Any],
    progress: bool = False,
) -> dict[str, Path]:
    """Write every output file from the store; returns their paths by name.

    Each file is written under a temporary name and renamed into place, report.md last, and
    plots no longer linked are removed only after it, and only those an earlier report
    recorded writing: a report killed or failed half-way leaves the previous one whole, every
    link of it resolving, and a file the user put in plots/ is never removed.
    """
    refuse_links(out_dir, output_names())
    table = results_table(store, config)
    rows = analysis_rows(table, config)
    plots_dir = out_dir / "plots"
    try:
        plots_dir.mkdir(exist_ok=True)
    except OSError as error:
        raise unwritable_output(plots_dir, error) from None
    entries = {a["name"]: a for a in config["analyses"]}
    outputs = StudyOutputs(out_dir, store.outputs())
    sections, tables, as_json, written = render_analyses(
        analyses, entries, rows, out_dir, outputs, progress
    )
    paths = {"results": out_dir / "results.csv"}
    _write_csv(paths["results"], RESULT_COLUMNS, table)
    paths["per_view"] = out_dir / "per_view.csv"
    _write_csv(paths["per_view"], PER_VIEW_COLUMNS, per_view_table(table))
    for name, (columns, table_rows) in tables.items():
        paths[name] = out_dir / f"{_slug(name)}.csv"
        _write_csv(paths[name], columns, table_rows)
    paths["analyses"] = out_dir / "analyses.json"
    _write_text(paths["analyses"], json.dumps(as_json, indent=2, allow_nan=False))
    csv_names = [paths[name].name for name in tables]
    parquet = write_parquet(out_dir, store, config)
    if parquet is not None:
        paths["per_sample"] = parquet
        csv_names.append(parquet.name)
    models = model_rows(config, store.model_inputs())
    if models:
        paths["models"] = out_dir / "models.csv"
        _write_csv(paths["models"], MODEL_COLUMNS, models)
    paths["report"] = out_dir / "report.md"
    failures = store.failures()
    text = markdown_report(config, table, sections, csv_names, failures, store.bad_images(), models)
    summary = "\n\n".join(s.summary for s in sections if s.summary)
    if summary:
        paths["summary_tex"] = out_dir / "summary.tex"
        _write_text(paths["summary_tex"], summary_latex(summary))
    paths["html"] = out_dir / "report.html"
    _write_text(paths["html"], report_html(text, out_dir))
    _write_text(paths["report"], text)  # last: a report.md always comes with its other files
    linked = _with_pdfs({Path(path).name for section in sections for _, path in section.plots})
    remove_report_plots(out_dir, store, keep=linked)
    _record_plots(store, plots_dir, linked, _with_pdfs(written))
    return paths


REPORT_LOCK_WAIT = 120  # seconds ``invkit report`` waits for another report (or study) to end


def rerender(out_dir: str | Path) -> dict[str, Path]:
    """``invkit report DIR``: re-run the stored study's analyses and rewrite its report, under
    the folder's lock (a study or another report writing there is waited for, then named)."""
    from invkit.lock import exclusive
    from invkit.lookup import get_analysis

    out_dir = Path(out_dir)
    refuse_links(out_dir, output_names())
    if not (out_dir / STORE_NAME).is_file():
        raise InvkitError(
            f"{str(out_dir)!r} holds no {STORE_NAME}; run `invkit study` into it first"
        )
    with exclusive(out_dir, what="invkit report", wait=REPORT_LOCK_WAIT):
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
