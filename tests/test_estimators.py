"""Label-free accuracy estimators, each checked against an independent numpy/scipy computation
on real kept outputs (three seeded linear models on real digits, clean and shifted), and the
``estimate_accuracy`` analysis that ranks them, with no forward pass."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import scipy.optimize
import scipy.special
from scipy.stats import norm

import invkit
from invkit.analysis.estimation import StudyData
from invkit.builtins.estimators import LineFit, aline, atc_threshold, fit_temperature
from invkit.config import ConfigError, load_config, parse_config
from invkit.results.reading import StudyOutputs
from invkit.run.study import Study

from .conftest import HERE, run_cli

MODELS = ("linear", "other_linear", "third_linear")


def write_study(folder: Path, analyses: bool = True, source: bool = True) -> Path:
    shutil.copy(HERE / "study_files" / "user_models.py", folder / "user_models.py")
    lines = ['transforms = ["rotation"]', 'measures = ["ei", "agreement"]', "",
             "[run]", "batch_size = 32", 'device = "cpu"', 'outputs = "full"']  # fmt: skip
    for name in MODELS:
        lines += ["", "[[models]]", f'name = "{name}"', f'spec = "python:user_models.py:{name}"',
                  "preprocessing = { input_size = [3, 16, 16], crop_pct = 1.0 }"]  # fmt: skip
    sets = [("clean", "", source, False), ("noise-1", "gaussian_noise", False, False),
            ("noise-2", "gaussian_noise", False, False), ("noise-3", "gaussian_noise", False, True),
            ("contrast-3", "contrast", False, True)]  # fmt: skip
    for i, (name, corruption, is_source, held_out) in enumerate(sets):
        lines += ["", "[[datasets]]", f'name = "{name}"', 'spec = "digits"',
                  'params = { size = 16, split = "test" }', "limit = 200"]  # fmt: skip
        if corruption:
            lines += [f'corruption = "{corruption}"', f"severity = {min(i, 3)}"]
        lines += [f"source = {'true' if is_source else 'false'}"] if is_source else []
        lines += ["held_out = true"] if held_out else []
    if analyses:
        lines += ["", "[[analyses]]", 'name = "estimate_accuracy"']
    path = folder / f"study-{analyses}-{source}.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    """The study run once without the estimators; tests add them to its output."""
    folder = tmp_path_factory.mktemp("estimators")
    out = folder / "out"
    config = write_study(folder, analyses=False)
    Study(load_config(config), out_dir=out, progress=False, echo=lambda _: None).run()
    return out


def study_data(out: Path) -> StudyData:
    from invkit.report.report import analysis_rows, results_table
    from invkit.results.store import Store

    store = Store(out / "results.sqlite")
    try:
        config = store.config()
        rows = analysis_rows(results_table(store, config), config)
    finally:
        store.close()
    return StudyData(rows, StudyOutputs.of(out))


def estimator(name: str, **params):
    return invkit.get_component("estimator", name).create(**params)


def softmax(logits) -> np.ndarray:
    return scipy.special.softmax(np.asarray(logits, dtype=np.float64), axis=1)


def test_atc_threshold_reproduces_the_source_accuracy():
    rng = np.random.default_rng(0)
    for n in (50, 333, 1000):
        scores = rng.random(n)
        correct = rng.random(n) < scores  # confident images are right more often
        threshold = atc_threshold(scores, correct)
        assert threshold.tied_above == 1.0  # distinct scores: Garg et al.'s share scoring ≥ t
        assert threshold.share(scores) == pytest.approx(correct.mean(), abs=1e-15)
        assert threshold.share(scores) == np.mean(scores >= threshold.value)
        wrong_above = np.count_nonzero(~correct & (scores >= threshold.value))
        right_below = np.count_nonzero(correct & (scores < threshold.value))
        assert wrong_above == right_below  # the balance ATC fits


def _atc_with_random_tie_breaks(source, correct, target, draws: int = 4000) -> float:
    """ATC by its definition on distinct scores, ties broken by a random second key, averaged."""
    rng = np.random.default_rng(1)
    estimates = []
    for _ in range(draws):
        keys_s, keys_t = rng.random(len(source)), rng.random(len(target))
        order = np.lexsort((keys_s, source))  # by score, then by the random key
        rank_s = np.empty(len(source), int)
        rank_s[order] = np.arange(len(source))
        t_rank = len(source) - np.count_nonzero(correct)  # the source's t, as a rank
        t_score, t_key = source[order[t_rank]], keys_s[order[t_rank]]
        above = (target > t_score) | ((target == t_score) & (keys_t >= t_key))
        estimates.append(above.mean())
    return float(np.mean(estimates))


def test_atc_breaks_tied_scores_as_the_definition_asks():
    rng = np.random.default_rng(2)
    flat = np.full(200, 0.1)  # a model whose logits are all equal: every score ties
    correct = rng.random(200) < 0.105
    threshold = atc_threshold(flat, correct)
    assert threshold.share(flat) == pytest.approx(correct.mean(), abs=1e-15)  # not 1.0
    assert threshold.share(np.full(50, 0.1)) == pytest.approx(correct.mean(), abs=1e-15)
    saturated = np.where(rng.random(300) < 0.8, 1.0, rng.random(300))  # confidences at 1.0
    right = rng.random(300) < np.where(saturated == 1.0, 0.6, 0.2)  # t falls among the ties
    target = np.where(rng.random(120) < 0.5, 1.0, rng.random(120))
    threshold = atc_threshold(saturated, right)
    assert threshold.share(saturated) == pytest.approx(right.mean(), abs=1e-15)
    expected = _atc_with_random_tie_breaks(saturated, right, target)
    assert threshold.share(target) == pytest.approx(expected, abs=0.005)
    assert threshold.value == 1.0 and threshold.tied_above < 1.0
    assert threshold.share(target) < np.mean(target >= threshold.value) - 0.1  # the old answer


def test_atc_on_real_outputs_equals_a_direct_computation(finished):
    study = study_data(finished)
    for model in MODELS:
        source = study.kept[model, "clean"]
        target = study.kept[model, "noise-2"]
        p_source, p_target = softmax(source.logits["original"]), softmax(target.logits["original"])
        correct = p_source.argmax(1) == np.asarray(source.targets)
        for name, score in (("atc_mc", lambda p: p.max(1)),
                            ("atc_ne", lambda p: np.sum(p * np.log(p), axis=1))):  # fmt: skip
            ordered = np.sort(score(p_source))  # distinct scores: no tie to break
            assert len(np.unique(ordered)) == len(ordered)
            t = ordered[np.count_nonzero(~correct)]
            expected = np.mean(score(p_target) >= t)
            study.target = "noise-2"
            assert estimator(name)(model, "noise-2", study) == pytest.approx(expected, abs=1e-12)
        # temperature scaling first, on the source's full logits
        t = fit_temperature(source.logits["original"], np.asarray(source.targets))
        scaled_source = softmax(np.asarray(source.logits["original"]) / t).max(1)
        scaled_target = softmax(np.asarray(target.logits["original"]) / t).max(1)
        threshold = np.sort(scaled_source)[np.count_nonzero(~correct)]
        scaled = estimator("atc_mc", temperature=True)(model, "noise-2", study)
        assert scaled == pytest.approx(np.mean(scaled_target >= threshold), abs=1e-12)


def test_doc_identity_and_ac_against_numpy(finished):
    study = study_data(finished)
    for model in MODELS:
        p_source = softmax(study.kept[model, "clean"].logits["original"])
        p_target = softmax(study.kept[model, "noise-3"].logits["original"])
        accuracy = study.accuracy(model, "clean")
        study.target = "noise-3"
        doc = estimator("doc")(model, "noise-3", study)
        assert doc == pytest.approx(
            accuracy - (p_source.max(1).mean() - p_target.max(1).mean()), abs=1e-12
        )
        assert estimator("ac")(model, "noise-3", study) == pytest.approx(p_target.max(1).mean())
        study.target = "clean"  # on the source itself, DoC is the source accuracy
        assert study.accuracy(model, "clean") is None  # the target's label is never given
        study.target = None
        assert estimator("doc")(model, "clean", study) == pytest.approx(accuracy, abs=1e-12)


def test_gde_of_a_model_with_itself_is_1_and_with_another_is_their_agreement(finished):
    study = study_data(finished)
    assert estimator("gde", other="linear")("linear", "noise-1", study) == 1.0
    a = study.kept["linear", "noise-1"].logits["original"]
    b = study.kept["other_linear", "noise-1"].logits["original"]
    expected = np.mean(np.argmax(a, 1) == np.argmax(b, 1))
    assert estimator("gde", other="other_linear")("linear", "noise-1", study) == expected


def test_the_nuclear_norm_from_the_passes_accumulated_gram_equals_numpys(finished):
    for model in MODELS:
        for dataset in ("clean", "noise-3"):
            kept = invkit.load_outputs(finished, model, dataset)
            probs = softmax(kept.logits["original"])
            assert kept.nuclear_norm == pytest.approx(np.linalg.norm(probs, "nuc"), rel=1e-10)


def test_aline_recovers_a_planted_probit_line():
    rng = np.random.default_rng(1)
    slope, bias = 0.8, -0.3
    accuracy = rng.uniform(0.55, 0.95, size=6)
    pairs = [(i, j) for i in range(6) for j in range(i + 1, 6)]
    source_agreement = rng.uniform(0.6, 0.95, size=len(pairs))
    target_agreement = norm.cdf(slope * norm.ppf(source_agreement) + bias)
    fitted = aline(accuracy, pairs, source_agreement, target_agreement)
    assert (fitted["slope"], fitted["bias"]) == pytest.approx((slope, bias), abs=1e-9)
    planted = norm.cdf(slope * norm.ppf(accuracy) + bias)
    np.testing.assert_allclose(fitted["aline_s"], planted, atol=1e-9)
    np.testing.assert_allclose(fitted["aline_d"], planted, atol=1e-9)


def test_temperature_scaling_equals_a_direct_minimisation_of_the_nll():
    rng = np.random.default_rng(2)
    base = rng.normal(size=(400, 10)) * 2.0
    targets = np.array([rng.choice(10, p=p) for p in softmax(base / 1.7)])

    def nll(t):
        log_p = scipy.special.log_softmax(base / t, axis=1)
        return -log_p[np.arange(len(targets)), targets].mean()

    direct = scipy.optimize.minimize(lambda t: nll(t[0]), x0=[1.0], bounds=[(0.01, 100)]).x[0]
    assert fit_temperature(base, targets) == pytest.approx(direct, rel=1e-4)
    assert 1.3 < fit_temperature(base, targets) < 2.2  # near the planted 1.7


def test_an_estimator_whose_needs_are_unmet_says_so_and_gives_no_number(tmp_path, finished):
    study = study_data(finished)
    study.source = None
    for name in ("atc_mc", "doc", "aline_s"):
        with pytest.raises(invkit.errors.EstimatorNeeds, match=f"{name} needs a source set"):
            estimator(name)("linear", "noise-1", study)
    with pytest.raises(invkit.errors.EstimatorNeeds, match="run.outputs = 'full'"):
        summary = study_data(finished)
        summary.kept["linear", "clean"].logits.clear()  # as a "summary" study keeps
        estimator("atc_mc", temperature=True)("linear", "noise-1", summary)
    # through the analysis: a study with no source set
    config = write_study(tmp_path, analyses=True, source=False)
    out = tmp_path / "out"
    Study(load_config(config), out_dir=out, progress=False, echo=lambda _: None).run()
    rows = list(csv.DictReader((out / "estimates.csv").open()))
    atc = [row for row in rows if row["estimator"] == "atc_mc"]
    assert atc and all(row["estimate"] == "" for row in atc)
    assert all("atc_mc needs a source set: mark one labeled dataset as the source" in r["note"]
               for r in atc)  # fmt: skip
    assert all(row["estimate"] != "" for row in rows if row["estimator"] == "ac")


def test_adding_the_estimators_to_a_finished_study_runs_no_forward_pass(tmp_path, finished):
    out = tmp_path / "out"
    shutil.copytree(finished, out)
    config = write_study(finished.parent, analyses=True)  # the same models and sets
    outcome = Study(load_config(config), out_dir=out, progress=False, echo=lambda _: None).run()
    assert outcome.forward_images == 0 and outcome.computed == 0
    rows = list(csv.DictReader((out / "estimates.csv").open()))
    assert rows[0].keys() >= {"model", "dataset", "estimator", "estimate", "accuracy", "abs_error"}
    names = {row["estimator"] for row in rows}
    assert names >= {"ac", "doc", "atc_mc", "atc_ne", "gde", "aline_s", "aline_d", "nuclear_norm",
                     "avg_energy", "mde", "rotation·ei", "rotation·agreement"}  # fmt: skip
    assert {row["dataset"] for row in rows} == {"noise-1", "noise-2", "noise-3", "contrast-3"}
    for row in rows:
        if row["estimate"]:
            assert 0 <= float(row["estimate"]) <= 1
        if row["abs_error"]:
            assert float(row["abs_error"]) == pytest.approx(
                abs(float(row["estimate"]) - float(row["accuracy"])), abs=1e-12
            )
    board = json.loads((out / "analyses.json").read_text())["estimate_accuracy"]["leaderboard"]
    assert [b["mae"] for b in board if b["mae"] is not None] == sorted(
        b["mae"] for b in board if b["mae"] is not None
    )
    scored = {b["pairs"] + b["flagged"] for b in board if b["mae"] is not None}
    assert scored == {3 * 2}  # held-out pairs, trusted or flagged
    summary = (out / "report.md").read_text()
    assert "Label-free accuracy estimates" in summary and "| aline_s |" in summary


def test_a_third_party_estimator_appears_in_the_leaderboard(tmp_path, finished, with_plugin_site):
    out = tmp_path / "out"
    shutil.copytree(finished, out)
    config = write_study(finished.parent, analyses=True)
    env = {"INVKIT_LOAD_PLUGINS": "invkit-topfive"}
    done = run_cli("study", str(config), "--out", str(out), "--no-progress", env=env)
    assert "0 images decoded, 0 through the models" in done.stdout
    result = json.loads((out / "analyses.json").read_text())
    board = {b["estimator"]: b for b in result["estimate_accuracy"]["leaderboard"]}
    assert board["top5_mass"]["pairs"] == 6 and board["top5_mass"]["mae"] is not None
    assert "| top5_mass |" in (out / "report.md").read_text()


def test_one_source_set_and_never_held_out():
    base = {"models": ["digits"], "transforms": ["rotation"], "measures": ["ei"]}
    two = {**base, "datasets": [{"name": "a", "spec": "digits", "source": True},
                                {"name": "b", "spec": "digits", "source": True}]}  # fmt: skip
    with pytest.raises(ConfigError, match="'a', 'b' are each marked source = true; mark one"):
        parse_config(two)
    held = {**base, "datasets": [{"name": "a", "spec": "digits", "source": True,
                                  "held_out": True}]}  # fmt: skip
    with pytest.raises(ConfigError, match="'a' is both source and held_out"):
        parse_config(held)


def _with_estimators(config: Path, estimators: str) -> Path:
    config.write_text(config.read_text() + f"params = {{ estimators = {estimators} }}\n")
    return config


def test_an_estimator_given_as_a_table_runs_with_its_parameters(tmp_path, finished):
    out = tmp_path / "out"
    shutil.copytree(finished, out)
    tables = ('["ac", { name = "atc_mc_ts", component = "atc_mc", params = { temperature = true '
              '} }, { name = "gde_third", component = "gde", params = { other = "third_linear" '
              "} }]")  # fmt: skip
    config = _with_estimators(write_study(tmp_path, analyses=True), tables)
    Study(load_config(config), out_dir=out, progress=False, echo=lambda _: None).run()
    rows = list(csv.DictReader((out / "estimates.csv").open()))
    assert {row["estimator"] for row in rows} >= {"ac", "atc_mc_ts", "gde_third"}
    study = study_data(out)
    for row in rows:
        if row["estimator"] == "atc_mc_ts":
            direct = estimator("atc_mc", temperature=True)(row["model"], row["dataset"], study)
        elif row["estimator"] == "gde_third" and row["model"] != "third_linear":
            direct = estimator("gde", other="third_linear")(row["model"], row["dataset"], study)
        else:
            continue
        assert float(row["estimate"]) == pytest.approx(direct, abs=1e-12)
    typo = '[{ name = "x", compnent = "ac" }]'
    bad = _with_estimators(write_study(tmp_path, analyses=True), typo)
    with pytest.raises(ConfigError, match=r"unknown keys: compnent"):
        Study(load_config(bad), out_dir=tmp_path / "bad", progress=False)


FIXED_ESTIMATOR = """from invkit import hookimpl


class Fixed:
    \"\"\"Always the same estimate.\"\"\"

    name = "fixed"

    def __call__(self, model, target, study):
        return VALUE


@hookimpl
def register_estimators(register):
    register(Fixed)
"""


def test_an_edited_estimator_is_run_again_by_the_report(tmp_path, finished):
    import importlib.util

    from invkit.plugins import temporary_plugin

    out = tmp_path / "out"
    shutil.copytree(finished, out)
    config = _with_estimators(write_study(tmp_path, analyses=True), '["fixed"]')
    module_file = tmp_path / "fixed_estimator.py"
    for value in (0.25, 0.75):
        module_file.write_text(FIXED_ESTIMATOR.replace("VALUE", str(value)))
        spec = importlib.util.spec_from_file_location("fixed_estimator", module_file)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        with temporary_plugin(module, name="fixed-estimator"):
            Study(load_config(config), out_dir=out, progress=False, echo=lambda _: None).run()
        rows = list(csv.DictReader((out / "estimates.csv").open()))
        fixed = {float(row["estimate"]) for row in rows if row["estimator"] == "fixed"}
        assert fixed == {value}


def test_an_outputs_file_overwritten_by_one_of_the_same_size_is_repaired(tmp_path, finished):
    out = tmp_path / "out"
    shutil.copytree(finished, out)
    files = sorted((out / "outputs").glob("linear__*.safetensors"))
    source, victim = files[0], files[1]
    assert source.stat().st_size == victim.stat().st_size  # the same shapes: an undetected copy
    config = write_study(finished.parent, analyses=True)  # the same models: cells reused
    intact = estimates_of(finished, config)
    shutil.copyfile(source, victim)
    with pytest.raises(invkit.InvkitError, match=f"kept outputs {victim} do not match"):
        invkit.load_outputs(out, "linear", victim.name.split("__")[1])
    lines: list[str] = []
    outcome = Study(load_config(config), out_dir=out, progress=False, echo=lines.append).run()
    assert any(f"kept outputs {victim} do not match their recorded SHA-256" in x for x in lines)
    assert outcome.passes == 1 and outcome.computed == 0  # the pass runs to keep them again
    assert estimates_of(out, config) == intact  # every estimate back, none from the copy


def estimates_of(out: Path, config: Path) -> list[dict[str, str]]:
    """The estimates a study's report holds (the report is rewritten from the store)."""
    copy = out.parent / f"{out.name}-estimates"
    if not copy.exists():
        shutil.copytree(out, copy)
    Study(load_config(config), out_dir=copy, progress=False, echo=lambda _: None).run()
    rows = list(csv.DictReader((copy / "estimates.csv").open()))
    shutil.rmtree(copy)
    return rows


def test_a_line_fit_over_equal_scores_says_they_are_equal(finished):
    study = study_data(finished)
    for key in study.scores:
        for pair in study.scores[key]:
            study.scores[key][pair] = 0.5  # every set scores the same
    line = LineFit(("rotation", "ei"))
    with pytest.raises(
        invkit.errors.EstimatorNeeds, match=r"has no slope: its score is 0\.5 on each"
    ):
        line("linear", "noise-3", study)


def test_mde_equals_its_papers_score_and_a_direct_linear_fit(finished):
    import torch

    study = study_data(finished)
    for model in MODELS:
        sets = study.labeled_sets(model, leave_out="noise-3")
        points = []
        for dataset in sets:
            logits = torch.tensor(np.asarray(study.kept[model, dataset].logits["original"]))
            energies = -torch.logsumexp(logits.double(), dim=1)  # as Peng et al. compute it
            score = torch.log(-torch.log_softmax(energies, dim=0).mean()).item()
            kept = invkit.builtins.estimators.mde_score(study.kept[model, dataset])
            assert kept == pytest.approx(score, abs=1e-6)  # from the kept float64 log-sum-exp
            points.append((score, study.accuracy(model, dataset)))
        logits = torch.tensor(np.asarray(study.kept[model, "noise-3"].logits["original"]))
        at = torch.log(-torch.log_softmax(-torch.logsumexp(logits.double(), 1), 0).mean()).item()
        slope, intercept = np.polyfit(*zip(*points, strict=True), 1)  # accuracy itself: linear
        study.target = "noise-3"
        answer = estimator("mde")(model, "noise-3", study)
        assert answer.value == pytest.approx(intercept + slope * at, abs=1e-6)
        assert answer.fit_sets == len(points) == 3
        scores = [x for x, _ in points]
        outside = not min(scores) <= at <= max(scores)
        assert answer.flag.startswith("extrapolated") == outside


def test_mano_and_doc_regression_are_direct_linear_fits_on_the_kept_logits(finished):
    from .test_estimators_recent import mano_in_torch

    study = study_data(finished)
    scores = {
        "mano": lambda out: mano_in_torch(np.asarray(out.logits["original"])),
        "doc_fit": lambda out: softmax(out.logits["original"]).max(1).mean(),
    }
    for name, score in scores.items():
        for model in MODELS:
            sets = study.labeled_sets(model, leave_out="noise-3")
            points = [(score(study.kept[model, d]), study.accuracy(model, d)) for d in sets]
            slope, intercept = np.polyfit(*zip(*points, strict=True), 1)
            study.target = "noise-3"
            answer = estimator(name)(model, "noise-3", study)
            at = score(study.kept[model, "noise-3"])
            assert answer.value == pytest.approx(intercept + slope * at, abs=1e-6)
            assert answer.fit_sets == len(sets) == 3


def test_the_documented_temperature_line_runs_and_equals_a_direct_computation(tmp_path, finished):
    documented = next(
        line
        for line in (HERE.parent / "docs" / "estimators.md").read_text().splitlines()
        if line.startswith("params = { estimators = [{") and "atc_mc_ts" in line
    )
    out = tmp_path / "out"
    shutil.copytree(finished, out)
    config = write_study(tmp_path, analyses=True)  # ends with [[analyses]] estimate_accuracy
    config.write_text(config.read_text() + documented + "\n")
    Study(load_config(config), out_dir=out, progress=False, echo=lambda _: None).run()
    rows = list(csv.DictReader((out / "estimates.csv").open()))
    rows = [row for row in rows if row["estimator"] == "atc_mc_ts"]
    assert len(rows) == len(MODELS) * 4
    study = study_data(out)
    for row in rows:
        source = study.kept[row["model"], "clean"]
        target = study.kept[row["model"], row["dataset"]]
        t = fit_temperature(source.logits["original"], np.asarray(source.targets))
        scaled_source = softmax(np.asarray(source.logits["original"]) / t).max(1)
        correct = np.asarray(source.predictions) == np.asarray(source.targets)
        threshold = np.sort(scaled_source)[np.count_nonzero(~correct)]
        scaled_target = softmax(np.asarray(target.logits["original"]) / t).max(1)
        assert float(row["estimate"]) == pytest.approx(np.mean(scaled_target >= threshold))
