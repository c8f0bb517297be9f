"""The report a researcher reads: the demo study run once for real (training included), its
findings first, its figures, its predictions beside the truth, report.html in a real headless
Chromium, summary.tex."""

from __future__ import annotations

import csv
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from invkit.api import get_analysis
from invkit.report.report import analysis_rows, results_table
from invkit.results.reading import StudyOutputs
from invkit.results.store import Store

from .conftest import run_cli

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> Path:
    """``invkit study --demo``, models trained in a fresh cache, as a new user runs it."""
    root = tmp_path_factory.mktemp("demo")
    env = {"INVKIT_CACHE_DIR": str(root / "cache")}
    result = run_cli("study", "--demo", "--out", str(root / "out"), "--no-progress", env=env)
    assert "0 reused" in result.stdout
    return root / "out"


def rows(path: Path) -> list[dict[str, str]]:
    with path.open() as handle:
        return list(csv.DictReader(handle))


def test_the_demo_report_opens_with_its_findings(demo):
    report = (demo / "report.md").read_text()
    sections = [line for line in report.splitlines() if line.startswith("## ")]
    assert sections[0] == "## Summary"
    summary = report[report.index("## Summary") : report.index("## Analysis")]
    header = "| invariance (r, ρ: + more invariant, more accurate) | clean | gaussian_noise-1 |"
    assert header in summary  # test sets as columns, every r signed alike
    findings, heatmap = summary.index("tracks accuracy best"), summary.index("heatmap-r")
    assert findings < heatmap < summary.index(header)  # sentences, the heatmap, the tables
    assert "| grayscale ei ↑ | r 0." in summary and "| rotation js ↓ |" in summary
    assert "- **grayscale**: `" in summary and "tracks accuracy best" in summary
    assert " vs " in summary and "MAE" in summary  # predictions beside the true accuracy
    assert "held-out |" in summary.split("Accuracy predicted")[1].splitlines()[2]
    figures = sorted((demo / "plots").glob("*.png"))
    assert len(figures) <= 15  # a figure per transform × measure and analysis, and a heatmap
    assert all(f"(plots/{figure.name})" in report for figure in figures)
    for line in report.splitlines():
        if line.startswith("| model |"):
            assert line.count("|") - 1 <= 10  # per-test-set tables stay narrow
    assert "| cnn-w32x3-e15 | `python:invkit.demo.models:build` | 3×16×16 |" in report


def test_every_demo_shift_moves_the_best_models_accuracy(demo):
    accuracy = {
        (r["model"], r["dataset"]): float(r["accuracy"]) for r in rows(demo / "results.csv")
    }
    models = {model for model, _ in accuracy}
    best = max(models, key=lambda model: accuracy[(model, "clean")])
    shifted = {dataset for _, dataset in accuracy if dataset != "clean"}
    assert len(shifted) == 9
    for dataset in shifted:
        assert abs(accuracy[(best, dataset)] - accuracy[(best, "clean")]) >= 0.02, dataset


def test_held_out_sets_are_predicted_and_checked_against_their_truth(demo):
    predictions = rows(demo / "predictions.csv")
    held_out = [p for p in predictions if p["point"].endswith("-held-out")]
    assert {p["point"] for p in held_out} == {
        "gaussian_noise-5-held-out",
        "contrast-5-held-out",
    }
    truth = {(r["model"], r["dataset"]): float(r["accuracy"]) for r in rows(demo / "results.csv")}
    for p in held_out:
        assert float(p["true_accuracy"]) == truth[(p["model"], p["point"])]
        assert 0 <= float(p["low"]) <= float(p["accuracy"]) <= float(p["high"]) <= 1
    assert any(p["extrapolated"] == "True" for p in held_out)


def test_no_plotted_accuracy_leaves_0_1(demo):
    """Every figure the demo's analyses draw keeps its accuracy axis, and every band and fitted
    line drawn on it, inside [0, 1]."""
    store = Store(demo / "results.sqlite")
    try:
        config = store.config()
        table = analysis_rows(results_table(store, config), config)
    finally:
        store.close()
    from matplotlib.collections import PathCollection, PolyCollection

    drawn = 0
    outputs = StudyOutputs.of(demo)
    for entry in config["analyses"]:
        analysis = get_analysis(entry["component"], **entry["params"])
        reads = getattr(analysis, "reads_outputs", False)
        result = analysis(table, outputs=outputs) if reads else analysis(table)
        for title, figure in result.figures():
            if title == "heatmap-r":
                continue  # r, not accuracy
            for axes in [a for a in figure.axes if a.get_visible()]:
                low, high = axes.get_ylim()
                assert 0 <= low < high <= 1, (title, low, high)
                for collection in axes.collections:
                    if isinstance(collection, PathCollection):  # points
                        ys = collection.get_offsets()[:, 1]
                    elif isinstance(collection, PolyCollection):  # bootstrap bands
                        ys = np.concatenate([p.vertices[:, 1] for p in collection.get_paths()])
                    else:
                        continue
                    assert len(ys) == 0 or (ys.min() >= 0 and ys.max() <= 1), title
                    drawn += len(ys)
                for line in axes.lines:  # fitted lines stop at the axis too
                    ys = np.asarray(line.get_ydata(), dtype=float)
                    assert len(ys) == 0 or (ys.min() >= low - 1e-12 and ys.max() <= high + 1e-12)
    assert drawn > 1000


def test_summary_tex_is_booktabs_latex(demo):
    tex = (demo / "summary.tex").read_text()
    assert tex.count(r"\begin{tabular}") == tex.count(r"\bottomrule") >= 3
    assert r"\toprule" in tex and r"\midrule" in tex
    assert r"gaussian\_noise-1" in tex and r"$\rho$" in tex and r"$\uparrow$" in tex
    assert r"\shortstack[l]{r 0." in tex and "<br>" not in tex


@pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (.ci/run installs it)")
def test_report_html_renders_in_headless_chromium(demo, tmp_path):
    """report.html stands alone (figures inside it), renders in a real browser, and its tables
    sort on a click: a copy clicks the first summary table's header and the DOM is read."""
    page = demo / "report.html"
    html = page.read_text()
    figures = len(list((demo / "plots").glob("*.png")))
    assert html.count('src="data:image/png;base64,') == figures and "plots/" in html
    shot = tmp_path / "report.png"
    chromium = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars"]
    subprocess.run(
        [*chromium, "--window-size=1200,1600", f"--screenshot={shot}", page.as_uri()],
        check=True, capture_output=True, timeout=120,
    )  # fmt: skip
    pixels = np.asarray(Image.open(shot).convert("L"))
    assert pixels.shape == (1600, 1200) and pixels.std() > 20  # text, tables and figures
    clicking = tmp_path / "clicked.html"
    clicking.write_text(html.replace(
        "</body>",
        "<script>const th = document.querySelectorAll('table')[0].querySelectorAll('th')[1];"
        "th.click(); th.click();</script></body>",
    ))  # fmt: skip
    dom = subprocess.run(
        [*chromium, "--dump-dom", clicking.as_uri()],
        check=True, capture_output=True, text=True, timeout=120,
    ).stdout  # fmt: skip
    first_table = dom[dom.index("<table>") : dom.index("</table>")]
    cells = [row.split("<td>")[2].split("</td>")[0] for row in first_table.split("<tr>")[2:]]
    r = [float(cell.split()[1]) for cell in cells]  # "r 0.946 [...]<br>ρ ...", clean column
    assert r == sorted(r, reverse=True) and len(r) == 6  # clicked twice: descending


def test_rewriting_the_report_reuses_what_did_not_change(demo, tmp_path):
    """``invkit report`` keeps every number, and re-runs an analysis (bootstraps, figures)
    only when something it depends on changed: here, one analysis' parameters."""
    copy = tmp_path / "out"
    shutil.copytree(demo, copy)
    before = (copy / "report.md").read_text()
    written = {path.name: path.stat().st_mtime_ns for path in (copy / "plots").iterdir()}
    run_cli("report", str(copy))
    assert (copy / "report.md").read_text() == before
    linked = set(re.findall(r"\]\((plots/[^)]+)\)", before))
    assert {f"plots/{name}" for name in os.listdir(copy / "plots")} == linked
    assert {p.name: p.stat().st_mtime_ns for p in (copy / "plots").iterdir()} == written
    store = Store(copy / "results.sqlite")
    config = store.config()
    [dataset_centric] = [a for a in config["analyses"] if a["name"] == "dataset_centric"]
    dataset_centric["params"]["n_bootstrap"] = 200
    store.set_config(config)
    store.close()
    run_cli("report", str(copy))
    rewritten = {
        p.name for p in (copy / "plots").iterdir() if p.stat().st_mtime_ns != written[p.name]
    }
    assert rewritten and all(name.startswith("dataset_centric-") for name in rewritten)


def test_the_readme_headline_is_the_reports_summary_table(demo):
    """The README shows the demo report's first summary table; its figures depend on the
    machine that trained the models, its header and rows do not."""
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    report = (demo / "report.md").read_text()

    def first_summary_table(text: str) -> list[list[str]]:
        start = text.index("| invariance (r, ρ: + more invariant, more accurate) | clean |")
        lines = text[start:].split("\n\n")[0].splitlines()
        return [[cell.strip() for cell in line.split("|")[1:-1]] for line in lines]

    shown, made = first_summary_table(readme), first_summary_table(report)
    assert shown[0] == made[0] and [row[0] for row in shown] == [row[0] for row in made]
    assert all(cell.startswith("r ") and "<br>ρ " in cell for row in shown[2:] for cell in row[1:])
