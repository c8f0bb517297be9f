"""What qualifies an estimate: ALine's premise (its agreement line's R²), GDE's same-recipe
partner, a line fit's labeled sets and extrapolation, meta-sets as fit sets, and the
leaderboard that shows each estimator per target with flagged estimates apart."""

from __future__ import annotations

import csv
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import norm

import invkit
from invkit.analysis.estimation import StudyData
from invkit.builtins.estimators import aline
from invkit.config import ConfigError, load_config, parse_config
from invkit.results.outputs import Outputs
from invkit.run.study import Study

from .conftest import HERE

SHIFTS = ("gaussian_noise", "contrast", "gaussian_blur")


def test_alines_r2_equals_numpys_fit_on_the_same_pairs():
    rng = np.random.default_rng(4)
    source = rng.uniform(0.3, 0.9, 10)
    target = np.clip(norm.cdf(0.8 * norm.ppf(source) - 0.3 + rng.normal(0, 0.2, 10)), 0.06, 0.97)
    pairs = [(i, i + 1) for i in range(9)] + [(0, 9)]
    fitted = aline(rng.uniform(0.5, 0.9, 10), pairs, source, target)
    x, y = norm.ppf(source), norm.ppf(target)
    slope, bias = np.polyfit(x, y, 1)
    r2 = 1 - np.sum((y - slope * x - bias) ** 2) / np.sum((y - y.mean()) ** 2)
    assert fitted["r2"] == pytest.approx(r2, abs=1e-12)
    assert fitted["r2"] == pytest.approx(np.corrcoef(x, y)[0, 1] ** 2, abs=1e-12)
    assert 0.2 < fitted["r2"] < 0.99  # a line with real scatter


def agreeing_models(seed: int, break_the_line: bool) -> StudyData:
    """Six models on a source and a target: on the target each keeps its source predictions
    on a share of images set by its accuracy (the line holds), or on a share drawn at random
    (the line breaks)."""
    rng = np.random.default_rng(seed)
    n, k = 3000, 10
    truth = {name: rng.integers(0, k, n) for name in ("source", "target")}
    outputs, rows = {}, []
    for m, skill in enumerate(np.linspace(0.4, 0.9, 6)):
        for dataset, labels in truth.items():
            keep = skill if dataset == "source" else (
                rng.uniform(0.1, 0.9) if break_the_line else skill * 0.7)  # fmt: skip
            right = rng.random(n) < keep
            predicted = np.where(right, labels, rng.integers(0, k, n))
            logits = rng.normal(size=(n, k))
            logits[np.arange(n), predicted] += 6
            outputs[f"m{m}", dataset] = Outputs.from_logits(f"m{m}", dataset, logits, labels)
            rows.append({"model": f"m{m}", "dataset": dataset, "transform": "t", "measure": "e",
                         "invariance": math.nan, "source": dataset == "source",
                         "accuracy": outputs[f"m{m}", dataset].accuracy})  # fmt: skip
    data = StudyData(rows, outputs)
    data.target = "target"
    return data


def test_aline_flags_its_estimate_where_the_agreement_line_fails():
    held = invkit.get_component("estimator", "aline_s").create()(
        "m0", "target", agreeing_models(0, break_the_line=False)
    )
    broken_study = agreeing_models(0, break_the_line=True)
    broken = invkit.get_component("estimator", "aline_s").create()("m0", "target", broken_study)
    assert held.flag == "" and "R²" in held.detail
    assert broken.flag.startswith("premise failed") and "< 0.9" in broken.flag
    r2 = broken_study.memo["aline", "target"]["r2"]
    assert r2 < 0.9 and f"{r2:.3f}" in broken.flag
    lenient = invkit.get_component("estimator", "aline_s").create(min_r2=0.0)
    assert lenient("m0", "target", agreeing_models(0, break_the_line=True)).flag == ""
    with pytest.raises(invkit.InvkitError, match="min_r2 must lie in"):
        invkit.get_component("estimator", "aline_s").create(min_r2=2.0)


def test_gde_compares_runs_of_one_group_and_refuses_without_one():
    data = agreeing_models(1, break_the_line=False)
    gde = invkit.get_component("estimator", "gde").create()
    with pytest.raises(invkit.errors.EstimatorNeeds, match=r"group = \"\.\.\.\""):
        gde("m0", "target", data)
    data.groups = {"m0": "recipe", "m3": "recipe", "m5": "alone"}
    same = np.mean(data.kept["m0", "target"].predictions == data.kept["m3", "target"].predictions)
    assert gde("m0", "target", data) == pytest.approx(same, abs=1e-12)
    assert gde("m3", "target", data) == pytest.approx(same, abs=1e-12)  # the group wraps round
    with pytest.raises(invkit.errors.EstimatorNeeds, match="only model of group 'alone'"):
        gde("m5", "target", data)
    named = invkit.get_component("estimator", "gde").create(other="m4")
    other = np.mean(data.kept["m5", "target"].predictions == data.kept["m4", "target"].predictions)
    assert named("m5", "target", data) == pytest.approx(other, abs=1e-12)


def test_meta_sets_expand_to_one_labeled_copy_per_shift_and_severity():
    config = parse_config({
        "models": [{"specs": ["timm:resnet18", "timm:resnet34"], "group": "resnets"}],
        "datasets": [{"name": "clean", "spec": "digits", "source": True, "limit": 50,
                      "meta_sets": {"shifts": list(SHIFTS), "severities": [1, 2, 3, 4, 5]}}],
        "transforms": ["rotation"], "measures": ["ei"],
    })  # fmt: skip
    meta = [d for d in config.datasets if d.meta_set]
    assert len(meta) == 15 and len(config.datasets) == 16
    assert meta[0].name == "clean+gaussian_noise-1" and meta[0].limit == 50
    assert {(d.shift.component, d.shift.params["severity"]) for d in meta} == {
        (s, v) for s in SHIFTS for v in range(1, 6)
    }
    assert not any(d.source or d.held_out for d in meta)
    assert {m.group for m in config.models} == {"resnets"}
    every = parse_config({
        "models": ["timm:resnet18"], "transforms": ["rotation"], "measures": ["ei"],
        "datasets": [{"spec": "digits", "meta_sets": {"shifts": "all", "severities": [2]}}],
    })  # fmt: skip
    assert {d.shift.component for d in every.datasets if d.meta_set} == set(SHIFTS)
    for bad, message in [
        ({"held_out": True}, "is held out"),
        ({"corruption": "contrast"}, "has a shift of its own"),
        ({"meta_sets": {"shifts": ["contrast"], "severity": [1]}}, "unknown key"),
        ({"meta_sets": {"shifts": [], "severities": [1]}}, "at least one of each"),
    ]:
        entry = {"spec": "digits", "meta_sets": {"shifts": ["contrast"]}, **bad}
        with pytest.raises(ConfigError, match=message):
            parse_config({"models": ["timm:resnet18"], "datasets": [entry],
                          "transforms": ["rotation"], "measures": ["ei"]})  # fmt: skip


@pytest.fixture(scope="module")
def meta_study(tmp_path_factory) -> tuple[Path, Path]:
    """One model, a source with 3 shifts × 5 severities as meta-sets, a held-out target."""
    folder = tmp_path_factory.mktemp("meta")
    shutil.copy(HERE / "study_files" / "user_models.py", folder / "user_models.py")
    shifts = ", ".join(f'"{s}"' for s in SHIFTS)
    config = folder / "study.toml"
    config.write_text(f"""transforms = ["rotation"]
measures = ["ei"]

[run]
batch_size = 50
device = "cpu"

[[models]]
name = "linear"
spec = "python:user_models.py:linear"
preprocessing = {{ input_size = [3, 16, 16], crop_pct = 1.0 }}

[[datasets]]
name = "clean"
spec = "digits"
params = {{ size = 16, split = "test" }}
limit = 100
source = true
meta_sets = {{ shifts = [{shifts}], severities = [1, 2, 3, 4, 5] }}

[[datasets]]
name = "target"
spec = "digits"
params = {{ size = 16, split = "test" }}
limit = 100
seed = 1
corruption = "gaussian_noise"
severity = 5
held_out = true

[[analyses]]
name = "estimate_accuracy"
params = {{ estimators = ["mde", "ac"] }}

[[analyses]]
name = "dataset_centric"
""")
    out = folder / "out"
    Study(load_config(config), out_dir=out, progress=False, echo=lambda _: None).run()
    return config, out


def test_meta_sets_are_fit_sets_and_never_targets(meta_study):
    _, out = meta_study
    results = list(csv.DictReader((out / "results.csv").open()))
    assert len({row["dataset"] for row in results}) == 17  # passes like any dataset
    estimates = list(csv.DictReader((out / "estimates.csv").open()))
    assert {row["dataset"] for row in estimates} == {"target"}
    fit = next(r for r in estimates if r["estimator"] == "rotation·ei")
    assert int(fit["fit_sets"]) == 16  # the source and its 15 meta-sets
    labeled = [r for r in results if r["dataset"] != "target"]
    xs = [float(r["value"]) for r in labeled]
    ys = norm.ppf(np.clip([float(r["accuracy"]) for r in labeled], 1e-6, 1 - 1e-6))
    slope, intercept = np.polyfit(xs, ys, 1)
    at = float(next(r["value"] for r in results if r["dataset"] == "target"))
    assert float(fit["estimate"]) == pytest.approx(
        min(1.0, max(0.0, norm.cdf(intercept + slope * at))), abs=1e-9
    )
    assert fit["flag"].startswith("extrapolated") == (not min(xs) <= at <= max(xs))
    analyses = json.loads((out / "analyses.json").read_text())
    assert len(analyses["estimate_accuracy"]["meta_sets"]) == 15
    assert "+contrast-" not in json.dumps(analyses["dataset_centric"])  # fit sets only
    report = (out / "report.md").read_text()
    assert "15 of them meta-sets" in report
    board_row = next(line for line in report.splitlines() if line.startswith("| rotation·ei |"))
    assert board_row.endswith("| 16 |")  # the leaderboard's fit sets column: one count


def test_the_leaderboard_per_target_equals_the_estimates(meta_study):
    _, out = meta_study
    estimates = list(csv.DictReader((out / "estimates.csv").open()))
    by_target = list(csv.DictReader((out / "estimates_by_target.csv").open()))
    assert by_target
    for row in by_target:
        key = (row["estimator"], row["dataset"])
        mine = [e for e in estimates if (e["estimator"], e["dataset"]) == key]
        trusted = [float(e["abs_error"]) for e in mine if not e["flag"]]
        flagged = [float(e["abs_error"]) for e in mine if e["flag"]]
        assert int(row["pairs"]) == len(trusted) and int(row["flagged"]) == len(flagged)
        if trusted:
            assert float(row["mae"]) == pytest.approx(np.mean(trusted), abs=1e-12)
        truth = [float(e["accuracy"]) for e in mine]
        assert (float(row["accuracy_min"]), float(row["accuracy_max"])) == (min(truth), max(truth))
    plots = json.loads((out / "analyses.json").read_text())
    assert "estimate_accuracy" in plots and any((out / "plots").glob("*estimated-vs-true*"))


def test_gde_groups_come_from_the_config(tmp_path):
    config = parse_config({
        "models": [{"spec": "timm:resnet18", "name": "a", "group": "r"},
                   {"specs": ["timm:resnet34", "timm:resnet50"], "group": "s"}],
        "datasets": ["digits"], "transforms": ["rotation"], "measures": ["ei"],
    })  # fmt: skip
    from invkit.report.report import analysis_rows

    table = [{"model": m.name, "dataset": "digits", "value": 0.5, "accuracy": 0.5}
             for m in config.models]  # fmt: skip
    rows = analysis_rows(table, config.to_dict())
    assert [row["group"] for row in rows] == ["r", "s", "s"]
    with pytest.raises(ConfigError, match="group must be a string"):
        parse_config({"models": [{"spec": "timm:resnet18", "group": 3}], "datasets": ["digits"],
                      "transforms": ["rotation"], "measures": ["ei"]})  # fmt: skip
