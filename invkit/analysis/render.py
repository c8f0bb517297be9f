"""How the built-in analyses' results present themselves: Markdown tables, CSV rows and
figures. The report asks any analysis result for these (``to_markdown``, ``tables``,
``figures``) and never reads a result's internals, so a third-party analysis is rendered by
the same rules as the built-ins.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from invkit.markup import code, md, plain

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from invkit.analysis.analyses import AnalysisResult, GroupResult

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
    "higher_is_invariant",
    "signed_pearson_r",
    "signed_pearson_r_low",
    "signed_pearson_r_high",
    "signed_spearman_rho",
    "signed_spearman_rho_low",
    "signed_spearman_rho_high",
    "signed_kendall_tau",
    "message",
]
# The raw statistics (``pearson_r``: accuracy against the measure's value) and their signed
# twins (``signed_pearson_r``: positive when more invariant models are more accurate): what
# the report shows. They differ in sign only for a measure where lower is more invariant.
SIGNED = ("pearson_r", "spearman_rho", "kendall_tau")


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
    "clipped",
    "extrapolated",
    "true_accuracy",
]


SMALL = 0.01  # below this (and above 0), values are shown with significant digits


class Presented:
    """How the built-in results present themselves to the report: what a result offers
    (``docs/hooks.md``), drawn by this module's functions. The result classes inherit it, so
    the results import their rendering and never the other way round."""

    def to_markdown(self) -> str:
        """A Markdown table of the groups (the report shows it)."""
        return to_markdown(self)  # type: ignore[arg-type]

    def summary(self) -> str | None:
        """The findings, for the top of the report: model-centric r and ρ per transform ×
        measure and test set, the measure that tracks accuracy best per transform, and
        predictions beside the true accuracy where it is known."""
        return summary(self)  # type: ignore[arg-type]

    def tables(self) -> dict[str, tuple[list[str], list[dict[str, Any]]]]:
        """Rows for correlations.csv and predictions.csv: ``{name: (columns, rows)}``."""
        return tables(self)  # type: ignore[arg-type]

    def figures(self) -> Iterator[tuple[str, Any]]:
        """``(name, matplotlib Figure)`` per group: accuracy against invariance."""
        return figures(self)  # type: ignore[arg-type]


def format_value(value: Any, digits: int = 4) -> str:
    """A value for a table: ``digits`` decimals, or, for a small non-zero value (a JS or KL
    divergence of 2e-05), ``digits - 1`` significant digits, so it never reads ``0.0000``."""
    if value is None:
        return ""
    if isinstance(value, float):
        if 0 < abs(value) < SMALL:
            return f"{value:.{digits - 1}g}"
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
        direction = result.directions.get(group.group.get("measure", ""))
        row["higher_is_invariant"] = direction
        row.update(_signed(row, direction_sign(direction)))
        row["message"] = group.message or ""
        correlations.append(row)
    predictions = [
        {**group.group, **prediction} for group in result.groups for prediction in group.predictions
    ]
    return {
        "correlations": (CORRELATION_COLUMNS[1:], correlations),
        "predictions": (PREDICTION_COLUMNS, predictions),
    }


def _signed(row: Mapping[str, Any], sign: int) -> dict[str, Any]:
    """The signed twins of a correlations row's statistics and interval bounds (a flipped
    interval's bounds swapped)."""
    signed: dict[str, Any] = {}
    for name in SIGNED:
        if row.get(name) is not None:
            signed[f"signed_{name}"] = sign * row[name]
        if row.get(f"{name}_low") is not None:
            bounds = signed_bounds([row[f"{name}_low"], row[f"{name}_high"]], sign)
            signed[f"signed_{name}_low"], signed[f"signed_{name}_high"] = bounds
    return signed


def markdown_table(header: list[str], rows: list[list[str]]) -> list[str]:
    """A Markdown table of cells that are Markdown already (names passed through ``md``)."""
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines.extend("| " + " | ".join(row) + " |" for row in rows)
    return lines


def prediction_marks(prediction: dict[str, Any]) -> str:
    """``*`` for an extrapolated prediction, ``†`` for one clipped to [0, 1]."""
    return ("*" if prediction.get("extrapolated") else "") + (
        "†" if prediction.get("clipped") else ""
    )


def signed_bounds(bounds: Sequence[float], sign: int) -> list[float]:
    """An interval's bounds times ``sign``, lower first (a flipped interval's swapped)."""
    return sorted(sign * bound for bound in bounds)


def interval_text(
    statistics: Mapping[str, Any], intervals: Mapping[str, Any], statistic: str, sign: int = 1
) -> str:
    """A statistic and its interval, times ``sign`` (a flipped interval's bounds swapped)."""
    value = statistics.get(statistic)
    if value is None:
        return ""
    text = f"{sign * value:.3f}"
    if intervals.get(statistic):
        low, high = signed_bounds(intervals[statistic], sign)
        text += f" [{low:.3f}, {high:.3f}]"
    return text


def _interval(group: GroupResult, statistic: str, sign: int = 1) -> str:
    return interval_text(group.statistics, group.intervals, statistic, sign)


def to_markdown(result: AnalysisResult) -> str:
    """The groups' statistics as a table; for predictions, the predicted accuracies."""
    if result.predicts:
        rows = [
            [
                _group_name(group),
                md(p["point"]),
                format_value(p["invariance"]),
                format_value(p["accuracy"]) + prediction_marks(p),
                f"[{p['low']:.4f}, {p['high']:.4f}]",
                format_value(p.get("true_accuracy")) or "unknown",
                format_value(group.statistics.get("loo_mae")),
            ]
            for group in result.groups
            for p in group.predictions
        ]
        header = ["group", "predicted for", "invariance", "predicted accuracy",
                  "95% prediction interval", "true accuracy", "LOO MAE"]  # fmt: skip
        if not rows:
            return "No unlabeled point to predict."
        notes = (
            "\n\n\\* extrapolated: the invariance lies outside the fitted range. "
            "† clipped to [0, 1] (fit on the probit scale to avoid it)."
        )
        return "\n".join(markdown_table(header, rows)) + notes
    rows = []
    for group in result.groups:
        sign = direction_sign(result.directions.get(group.group.get("measure", "")))
        rows.append(
            [_group_name(group), str(group.n)]
            + [_interval(group, name, sign) for name in SIGNED]
            + [_interval(group, "r_squared"), md(group.message or "")]
        )
    header = ["group", "n", "signed Pearson r [95% CI]", "signed Spearman ρ [95% CI]",
              "signed Kendall τ", "R²", "note"]  # fmt: skip
    return SIGNED_NOTE + "\n\n" + "\n".join(markdown_table(header, rows))


SUMMARY_COLUMNS = 4  # test sets per summary table (each cell holds r and ρ with intervals)
LABELLED_POINTS = 12  # at most this many point labels on a figure; past it, none
BANDS_SHOWN = 3  # bootstrap bands on a figure of at most this many test sets


def direction_mark(higher_is_invariant: bool | None) -> str:
    """↑ where a higher value means more invariant, ↓ where a lower one does."""
    return {True: "↑", False: "↓"}.get(higher_is_invariant, "")


def direction_text(higher_is_invariant: bool | None) -> str:
    return {True: " (↑ higher = more invariant)", False: " (↓ lower = more invariant)"}.get(
        higher_is_invariant, ""
    )


def _group_name(group: GroupResult) -> str:
    """A group's labels (transform, measure, dataset or model) as Markdown text."""
    return md(" / ".join(map(str, group.group.values())))


def _pair_label(result: AnalysisResult, transform: str, measure: str) -> str:
    """A transform × measure as summaries and the heatmap name it, with its direction mark."""
    mark = direction_mark(result.directions.get(measure))
    return plain(f"{transform} {measure} {mark}".strip())


def _fit_segment(
    group: GroupResult, limits: tuple[float, float]
) -> tuple[list[float], list[float]]:
    """The group's fitted line over the range of its points, cut where it leaves the accuracy
    axis ``limits`` (so no line runs past accuracy 1 or below 0); empty when it never enters."""
    intercept, slope = group.fit["intercept"], group.fit["slope"]
    low, high = min(group.x), max(group.x)
    if slope:
        ends = sorted((limit - intercept) / slope for limit in limits)
        low, high = max(low, ends[0]), min(high, ends[1])
    elif not limits[0] <= intercept <= limits[1]:
        return [], []
    if low > high:
        return [], []
    return [low, high], [intercept + slope * low, intercept + slope * high]


def by_pair(groups: list[GroupResult]) -> dict[tuple[str, str], list[GroupResult]]:
    """Groups by (transform, measure), in order of first appearance."""
    pairs: dict[tuple[str, str], list[GroupResult]] = {}
    for group in groups:
        key = (group.group.get("transform", ""), group.group.get("measure", ""))
        pairs.setdefault(key, []).append(group)
    return pairs


def _other(group: GroupResult) -> str:
    """What a group is over besides transform and measure: its dataset, or its model."""
    return plain(" / ".join(v for k, v in group.group.items() if k not in ("transform", "measure")))


def _analysed(groups: list[GroupResult]) -> list[str]:
    """The test sets (or models) with points in some group: a held-out or unlabeled test set
    has none, and gets no column."""
    return list(dict.fromkeys(_other(g) for g in groups if g.n))


def direction_sign(higher_is_invariant: bool | None) -> int:
    """The sign that makes a correlation positive when more invariant goes with more accurate:
    -1 for a measure where lower is more invariant."""
    return -1 if higher_is_invariant is False else 1


def _r_and_rho(group: GroupResult, higher_is_invariant: bool | None) -> str:
    """r and ρ with their intervals, signed so that positive means more invariant, more
    accurate."""
    if group.message or "pearson_r" not in group.statistics:
        return "—"
    sign = direction_sign(higher_is_invariant)
    r, rho = (_interval(group, name, sign) for name in ("pearson_r", "spearman_rho"))
    return f"r {r}<br>ρ {rho}"


SIGNED_HEADER = "invariance (r, ρ: + more invariant, more accurate)"
SIGNED_NOTE = (
    "Signed: a positive r, ρ or τ means more invariant models (or test sets) are more "
    "accurate; for a measure where lower is more invariant (↓) that is the raw correlation's "
    "sign flipped. correlations.csv has both: `pearson_r` (raw) and `signed_pearson_r`."
)


def summary(result: AnalysisResult) -> str | None:
    """Findings for the top of the report: model-centric r and ρ per transform × measure
    (rows) and test set (columns), one sentence per transform, and predictions beside the
    true accuracy; ``None`` for a dataset-centric result (its details stay in its section)."""
    if result.predicts:
        return _prediction_summary(result)
    if result.points != "model":
        return None
    pairs = by_pair(result.groups)
    datasets = _analysed(result.groups)
    cells = {(pair, _other(g)): g for pair, groups in pairs.items() for g in groups}
    lines = _best_measures(result, pairs)  # the findings first, then the numbers behind them
    lines += [
        "",
        f"Model-centric correlation of accuracy with invariance ({result.analysis}): Pearson r "
        "and Spearman ρ across models on each test set, with 95% bootstrap intervals, signed "
        "so that a positive value means more invariant models are more accurate. ↑: a higher "
        "value of the measure means more invariant; ↓: a lower one does.",
    ]
    for start in range(0, len(datasets), SUMMARY_COLUMNS):
        chosen = datasets[start : start + SUMMARY_COLUMNS]
        rows = [
            [md(_pair_label(result, t, m))]
            + [
                _r_and_rho(cells[(t, m), d], result.directions.get(m))
                if ((t, m), d) in cells
                else ""
                for d in chosen
            ]
            for t, m in pairs
        ]
        lines += ["", *markdown_table([SIGNED_HEADER, *map(md, chosen)], rows)]
    return "\n".join(lines).lstrip("\n")


def _aligned_r(group: GroupResult, higher_is_invariant: bool | None) -> float | None:
    """r with the sign that makes "more invariant goes with more accurate" positive."""
    r = group.statistics.get("pearson_r")
    if r is None or group.message:
        return None
    return direction_sign(higher_is_invariant) * r


def _signed_high(group: GroupResult, higher_is_invariant: bool | None) -> float | None:
    """The upper bound of r's interval, signed as ``_aligned_r``: below 0, the group says
    with confidence that more invariant models are less accurate."""
    bounds = group.intervals.get("pearson_r")
    if not bounds or group.message:
        return None
    return signed_bounds(bounds, direction_sign(higher_is_invariant))[1]


def _best_measures(
    result: AnalysisResult, pairs: dict[tuple[str, str], list[GroupResult]]
) -> list[str]:
    """One sentence per transform: the measure whose invariance tracks accuracy best (the
    highest mean r, signed so that positive means more invariant models are more accurate),
    and a measure that says the opposite with confidence (its interval below 0 on most test
    sets): a strong negative correlation is a finding too."""
    sentences = []
    for transform in dict.fromkeys(t for t, _ in pairs):
        scored = []
        for (t, measure), groups in pairs.items():
            direction = result.directions.get(measure)
            values = [v for g in groups if (v := _aligned_r(g, direction)) is not None]
            below = sum(
                1 for g in groups if (h := _signed_high(g, direction)) is not None and h < 0
            )
            if t == transform and values:
                scored.append((sum(values) / len(values), measure, values, below))
        if not scored:
            continue
        mean, measure, values, _ = max(scored)
        opposite = [s for s in scored if s[0] < 0 and 2 * s[3] >= len(s[2])]
        text = f"- **{md(transform)}**: "
        if mean > 0:
            text += (
                f"{code(measure)} tracks accuracy best, mean r = {mean:+.2f} over "
                f"{len(values)} test set(s) (from {min(values):+.2f} to {max(values):+.2f}); "
                f"more invariant models are more accurate on {sum(v > 0 for v in values)} of "
                f"{len(values)}."
            )
        elif not opposite:
            text += (
                "no measure of this invariance tracks accuracy here: the best, "
                f"{code(measure)}, has mean r = {mean:+.2f} over {len(values)} test set(s), "
                "and none says the opposite with confidence."
            )
        if opposite:
            low_mean, low_measure, low_values, below = min(opposite)
            text += (
                f"{' By ' if mean > 0 else 'more invariant models are *less* accurate here: by '}"
                f"{code(low_measure)}, mean r = {low_mean:+.2f} over {len(low_values)} test "
                f"set(s) (from {min(low_values):+.2f} to {max(low_values):+.2f}), its 95% "
                f"interval below 0 on {below} of {len(low_values)}"
                + (": more invariant models are *less* accurate." if mean > 0 else ".")
            )
        sentences.append(text)
    if sentences:
        sentences.insert(0, "Signed so that a positive r means more invariant, more accurate:\n")
    return sentences


def _prediction_summary(result: AnalysisResult) -> str | None:
    """Label-free predictions per transform × measure (rows) and predicted point (columns),
    averaged over the groups, beside the true accuracy where it is known."""
    collected: dict[tuple[tuple[str, str], str], list[dict[str, Any]]] = {}
    for pair, groups in by_pair(result.groups).items():
        for group in groups:
            for prediction in group.predictions:
                collected.setdefault((pair, prediction["point"]), []).append(prediction)
    if not collected:
        return None
    points = list(dict.fromkeys(point for _, point in collected))
    pairs = list(dict.fromkeys(pair for pair, _ in collected))
    over = "models" if result.points == "dataset" else "test sets"
    lines = [
        f"Accuracy predicted from invariance alone ({result.analysis}), the mean over {over}, "
        "beside the mean true accuracy where it is known, and the mean absolute error of the "
        "predictions."
    ]
    for start in range(0, len(points), SUMMARY_COLUMNS):
        chosen = points[start : start + SUMMARY_COLUMNS]
        rows = []
        for t, m in pairs:
            row = [md(_pair_label(result, t, m))]
            for point in chosen:
                found = collected.get(((t, m), point), [])
                row.append(_predicted_vs_true(found))
            rows.append(row)
        lines += ["", *markdown_table(["invariance", *map(md, chosen)], rows)]
    return "\n".join(lines)


def _predicted_vs_true(predictions: list[dict[str, Any]]) -> str:
    if not predictions:
        return ""
    mean = sum(p["accuracy"] for p in predictions) / len(predictions)
    known = [p for p in predictions if p.get("true_accuracy") is not None]
    if len(known) < len(predictions):
        return f"{mean:.3f}"
    true = sum(p["true_accuracy"] for p in known) / len(known)
    error = sum(abs(p["accuracy"] - p["true_accuracy"]) for p in known) / len(known)
    return f"{mean:.3f} vs {true:.3f}<br>MAE {error:.3f}"


def figures(result: AnalysisResult) -> Iterator[tuple[str, Figure]]:
    """Per transform × measure, one figure: model-centric, every test set on one axes (a
    colour, a fit and an r each, as the paper's Figure 2); dataset-centric, one small panel
    per model. Model-centric results add a heatmap of r. Predictions draw none."""
    if result.predicts:
        return
    pairs = by_pair(result.groups)
    if result.points == "model" and any(g.statistics for g in result.groups):
        yield "heatmap-r", heatmap_figure(result, pairs)  # first: the Summary shows it
    for (transform, measure), groups in pairs.items():
        if not any(g.n for g in groups):
            continue
        if result.points == "model":
            yield f"{transform}-{measure}", overlay_figure(groups, result, transform, measure)
        else:
            yield f"{transform}-{measure}", panels_figure(groups, result, transform, measure)


def _axis_labels(axes: Any, result: AnalysisResult, transform: str, measure: str) -> None:
    params = result.params
    x_scale = params.get("scale_invariance", "none")
    y_scale = params.get("scale_accuracy", "none")
    axes.set_xlabel(
        plain(f"{transform} {measure}{'' if x_scale == 'none' else f' ({x_scale})'}")
        + direction_text(result.directions.get(measure)),
        fontsize=8,
    )
    axes.set_ylabel(f"accuracy{'' if y_scale == 'none' else f' ({y_scale})'}", fontsize=8)


def _accuracy_limits(groups: list[GroupResult], y_scale: str) -> tuple[float, float]:
    """The accuracy axis: the points with a margin, never past [0, 1] (on the probit or
    logit axis, never past the images of 0.001 and 0.999)."""
    from invkit.analysis import stats

    ys = [y for g in groups for y in g.y]
    low, high = min(ys), max(ys)
    margin = max((high - low) * 0.12, 0.02 if y_scale == "none" else 0.1)
    bounds = stats.scale([0.0, 1.0] if y_scale == "none" else [0.001, 0.999], y_scale)
    return max(low - margin, float(bounds[0])), min(high + margin, float(bounds[1]))


def _draw_group(
    axes: Any, group: GroupResult, color: Any, label: str, limits: Any, band: bool
) -> None:
    """A group's points, its fitted line over their range, and (with ``band``) its bootstrap
    band, clipped to the axis."""
    axes.scatter(group.x, group.y, s=18, color=color, zorder=3, label=label)
    if group.band and band:
        low = [min(max(v, limits[0]), limits[1]) for v in group.band["low"]]
        high = [min(max(v, limits[0]), limits[1]) for v in group.band["high"]]
        axes.fill_between(group.band["x"], low, high, color=color, alpha=0.12, linewidth=0)
    if group.fit and group.x:
        axes.plot(*_fit_segment(group, limits), color=color, linewidth=1.2)


def _fit_label(group: GroupResult, name: str, higher_is_invariant: bool | None) -> str:
    """``name (r = +0.42)``, r signed so that + means more invariant, more accurate."""
    r = _aligned_r(group, higher_is_invariant)
    return f"{name} (r = {r:+.2f})" if r is not None and r == r else f"{name} (—)"


def label_points(axes: Any, xs: list[float], ys: list[float], labels: list[str]) -> None:
    """Label points so that no two labels overlap (each tries a few positions around its
    point; one with no free position is left out)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    figure = axes.figure
    canvas = figure.canvas if hasattr(figure.canvas, "get_renderer") else FigureCanvasAgg(figure)
    canvas.draw()  # the transforms need the final layout
    renderer = canvas.get_renderer()
    taken: list[Any] = []
    offsets = [(4, 4), (4, -10), (-4, 4), (-4, -10), (4, 14), (-4, 14), (4, -20), (-4, -20)]
    for x, y, text in sorted(zip(xs, ys, labels, strict=True), key=lambda p: (p[1], p[0])):
        for dx, dy in offsets:
            annotation = axes.annotate(
                plain(text), (x, y), xytext=(dx, dy), textcoords="offset points", fontsize=6,
                ha="left" if dx > 0 else "right", color="0.25",
            )  # fmt: skip
            box = annotation.get_window_extent(renderer).expanded(1.05, 1.1)
            if not any(box.overlaps(other) for other in taken) and axes.bbox.contains(
                box.x0, box.y0
            ):
                taken.append(box)
                break
            annotation.remove()


LEGEND_TITLE = "signed r: + more invariant,\nmore accurate"


def overlay_figure(
    groups: list[GroupResult], result: AnalysisResult, transform: str, measure: str
) -> Figure:
    """Accuracy against invariance across models, every test set in its own colour with its
    fit and r in the legend; model names label the points while they fit (a dozen at most)."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(7, 5), dpi=110)
    draw_overlay(figure.subplots(), groups, result, transform, measure)
    figure.tight_layout()
    points = [(x, y, p) for g in groups for x, y, p in zip(g.x, g.y, g.points, strict=True)]
    if len(groups) == 1 and len(points) <= LABELLED_POINTS:
        label_points(figure.axes[0], *map(list, zip(*points, strict=True)))
    return figure


def draw_overlay(
    axes: Any, groups: list[GroupResult], result: AnalysisResult, transform: str, measure: str
) -> Any:
    """The overlay figure's content drawn on ``axes`` (a notebook's, or the report's)."""
    colors = _colors(len(groups))
    shown = [(group, color) for group, color in zip(groups, colors, strict=True) if group.n]
    limits = _accuracy_limits([g for g, _ in shown], result.params.get("scale_accuracy", "none"))
    direction = result.directions.get(measure)
    for group, color in shown:  # bands only while few enough to be told apart
        label = _fit_label(group, _other(group), direction)
        _draw_group(axes, group, color, label, limits, band=len(shown) <= BANDS_SHOWN)
    axes.set_ylim(*limits)
    _axis_labels(axes, result, transform, measure)
    axes.set_title(plain(f"{result.analysis}: {transform} {measure}"), fontsize=9)
    axes.grid(alpha=0.3)
    axes.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False,
                title=LEGEND_TITLE, title_fontsize=7)  # fmt: skip
    return axes


def panels_figure(
    groups: list[GroupResult], result: AnalysisResult, transform: str, measure: str
) -> Figure:
    """Small multiples: one panel per model (its test sets as points, its fit and r), the
    test sets coloured alike in every panel and named in one legend."""
    import math

    from matplotlib.figure import Figure

    shown = [g for g in groups if g.n]
    columns = min(4, len(shown))
    rows = math.ceil(len(shown) / columns)
    figure = Figure(figsize=(2.6 * columns + 1.8, 2.3 * rows + 0.6), dpi=110)
    panels = figure.subplots(rows, columns, squeeze=False, sharex=True, sharey=True)
    names = list(dict.fromkeys(p for g in shown for p in g.points))
    palette = dict(zip(names, _colors(len(names)), strict=True))
    limits = _accuracy_limits(shown, result.params.get("scale_accuracy", "none"))
    for axes, group in zip(panels.flat, shown, strict=False):
        axes.scatter(group.x, group.y, s=14, c=[palette[p] for p in group.points], zorder=3)
        if group.fit:
            axes.plot(*_fit_segment(group, limits), "k-", lw=1)
        axes.set_title(_fit_label(group, _other(group), result.directions.get(measure)), fontsize=7)
        axes.grid(alpha=0.3)
        axes.tick_params(labelsize=6)
    for axes in list(panels.flat)[len(shown) :]:
        axes.set_visible(False)
    panels[0, 0].set_ylim(*limits)
    _axis_labels(panels[-1, 0], result, transform, measure)
    handles = [
        panels[0, 0].scatter([], [], s=14, color=palette[name], label=plain(name)) for name in names
    ]
    figure.legend(handles=handles, fontsize=6, loc="center right", frameon=False)
    figure.suptitle(plain(f"{result.analysis}: {transform} {measure} (signed r: + more "
                          "invariant, more accurate)"), fontsize=9)  # fmt: skip
    figure.tight_layout(rect=(0, 0, 1 - 1.6 / figure.get_figwidth(), 1))
    return figure


def heatmap_figure(
    result: AnalysisResult, pairs: dict[tuple[str, str], list[GroupResult]]
) -> Figure:
    """Pearson r for every transform × measure (rows) and test set (columns), signed so that
    positive means more invariant models are more accurate (as the Summary's tables)."""
    from matplotlib.figure import Figure

    count = len(_analysed(result.groups))
    figure = Figure(figsize=(1.2 + 0.62 * count, 1.2 + 0.38 * len(pairs)), dpi=110)
    draw_heatmap(figure.subplots(), result, pairs)
    figure.tight_layout()
    return figure


def draw_heatmap(
    axes: Any, result: AnalysisResult, pairs: dict[tuple[str, str], list[GroupResult]]
) -> Any:
    """The heatmap's content drawn on ``axes``, its colour bar beside it."""
    datasets = _analysed(result.groups)
    values = [[float("nan")] * len(datasets) for _ in pairs]
    for row, ((_, measure), groups) in enumerate(pairs.items()):
        for group in groups:
            r = _aligned_r(group, result.directions.get(measure))
            if r is not None and _other(group) in datasets:
                values[row][datasets.index(_other(group))] = r
    image = axes.imshow(values, cmap="RdBu_r", vmin=-1, vmax=1, aspect="auto")
    for row, line in enumerate(values):
        for column, value in enumerate(line):
            if value == value:  # not NaN
                color = "white" if abs(value) > 0.6 else "black"
                axes.text(column, row, f"{value:.2f}", ha="center", va="center", fontsize=6,
                          color=color)  # fmt: skip
    axes.set_xticks(range(len(datasets)), datasets, rotation=45, ha="right", fontsize=7)
    labels = [_pair_label(result, t, m) for t, m in pairs]
    axes.set_yticks(range(len(pairs)), labels, fontsize=7)
    axes.figure.colorbar(
        image, ax=axes, label="Pearson r (+: more invariant, more accurate)", shrink=0.8
    )
    axes.set_title(f"{result.analysis}: r of accuracy with invariance, signed", fontsize=9)
    return axes


def _colors(count: int) -> list[Any]:
    from matplotlib import colormaps

    palette = colormaps["tab10" if count <= 10 else "tab20"]
    return [palette(i % palette.N) for i in range(count)]
