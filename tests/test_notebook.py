"""invkit in a notebook: ``invkit.run_study`` with each config form, ``invkit.open_study`` and
its DataFrames checked value for value against the CSVs and the store, per-sample values
streamed and exported as Parquet, the figures drawn on a notebook's Axes, and one sign
convention in every table."""

from __future__ import annotations

import json
import math
import shutil
import sqlite3
from fractions import Fraction
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from pandas.testing import assert_frame_equal

import invkit
from invkit.analysis.analyses import AnalysisResult, GroupResult
from invkit.analysis.render import summary
from invkit.config import load_config
from invkit.errors import InvkitError
from invkit.report.report import at_chance

from .conftest import HERE

NAMES = ["seed0", "seed1", "seed2", "seed3"]
CONFIG = """transforms = ["rotation", "grayscale"]
measures = ["ei", "js"]

[run]
batch_size = 64
device = "cpu"
per_sample = true
outputs = "full"

[[models]]
spec = "python:user_models.py:linear"
names = ["seed0", "seed1", "seed2", "seed3"]
params = { checkpoint = "ckpt/{name}.pt" }
preprocessing = { input_size = [3, 16, 16], crop_pct = 1.0 }

[[datasets]]
name = "clean"
spec = "digits"
params = { size = 16, split = "test" }
limit = 60
source = true

[[datasets]]
name = "noisy"
spec = "digits"
params = { size = 16, split = "test" }
limit = 60
corruption = "gaussian_noise"
severity = 2

[[datasets]]
name = "contrast"
spec = "digits"
params = { size = 16, split = "test" }
limit = 60
corruption = "contrast"
severity = 4
held_out = true

[[analyses]]
name = "model_centric"
params = { n_bootstrap = 200, seed = 0 }

[[analyses]]
name = "estimate_accuracy"
params = { estimators = ["ac", "doc", "cot"] }
"""


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    """A config with one entry for four runs of one architecture, each its own checkpoint."""
    folder = tmp_path_factory.mktemp("notebook")
    shutil.copy(HERE / "study_files" / "user_models.py", folder / "user_models.py")
    (folder / "ckpt").mkdir()
    weights = [torch.randn(10, 3 * 16 * 16, generator=torch.Generator().manual_seed(seed))
               for seed in (0, 0, 2, 3)]  # fmt: skip
    weights[1] = 2 * weights[1]  # seed1: seed0's weights doubled, so its logits double
    for name, weight in zip(NAMES, weights, strict=True):
        torch.save({"1.weight": weight, "1.bias": torch.zeros(10)}, folder / "ckpt" / f"{name}.pt")
    (folder / "study.toml").write_text(CONFIG)
    return folder


@pytest.fixture(scope="module")
def studies(folder) -> dict[str, invkit.api.StudyResults]:
    """The same study run from a TOML path, a mapping and a parsed config."""
    import tomllib

    config = folder / "study.toml"
    mapping = tomllib.loads(CONFIG)
    mapping["models"][0]["params"]["checkpoint"] = str(folder / "ckpt" / "{name}.pt")
    mapping["models"][0]["spec"] = f"python:{folder / 'user_models.py'}:linear"
    quiet = {"progress": False, "echo": lambda _: None}
    return {
        "path": invkit.run_study(config, out_dir=folder / "from-path", **quiet),
        "mapping": invkit.run_study(mapping, out_dir=folder / "from-mapping", **quiet),
        "parsed": invkit.run_study(load_config(config), out_dir=folder / "from-parsed", **quiet),
    }


@pytest.fixture(scope="module")
def study(studies) -> invkit.api.StudyResults:
    return studies["path"]


def test_run_study_takes_a_path_a_mapping_or_a_parsed_config(studies):
    cells = 4 * 3 * 2 * 2
    for form, opened in studies.items():
        assert opened.outcome.computed == cells, form
        assert opened.outcome.failures == [], form
    reference = studies["path"].cells
    assert len(reference) == cells
    for form in ("mapping", "parsed"):
        assert_frame_equal(studies[form].cells, reference)


def test_each_name_of_one_entry_loads_its_own_checkpoint(study):
    assert study.config["models"][2]["params"]["checkpoint"].endswith("ckpt/seed2.pt")
    logits = {name: study.outputs(name, "clean").logits["original"] for name in NAMES}
    np.testing.assert_allclose(logits["seed1"], 2 * logits["seed0"], rtol=1e-5, atol=1e-5)
    assert not np.allclose(logits["seed2"], logits["seed0"])
    assert not np.allclose(logits["seed3"], logits["seed2"])


def _csv(study, name: str) -> pd.DataFrame:
    text = {c: str for c in ("model", "dataset", "transform", "measure", "view", "point")}
    path = study.out_dir / f"{name}.csv"
    return pd.read_csv(path, keep_default_na=False, na_values=[""], dtype=text)


def test_every_dataframe_equals_its_csv_and_the_store(study):
    cells = study.cells
    expected = _csv(study, "results").rename(columns={"transform": "transformation"})
    assert_frame_equal(cells, expected, check_dtype=False)
    with sqlite3.connect(study.out_dir / "results.sqlite") as db:
        stored = db.execute(
            "SELECT model, dataset, transform, measure, value, accuracy FROM cells"
        ).fetchall()
    by_key = {tuple(row[:4]): row[4:] for row in stored}
    for row in cells.itertuples():
        value, accuracy = by_key[row.model, row.dataset, row.transformation, row.measure]
        assert row.value == value and row.accuracy == accuracy
    per_view = _csv(study, "per_view").rename(columns={"transform": "transformation"})
    assert_frame_equal(study.per_view, per_view, check_dtype=False)
    for name in ("correlations", "estimates", "predictions"):
        frame = getattr(study, name)
        expected = _csv(study, name).rename(columns={"transform": "transformation"})
        assert_frame_equal(frame, expected, check_dtype=False)
    models = _csv(study, "models")
    assert list(study.models["model"]) == list(models["model"]) == NAMES
    for column, csv_column in (("normalize_mean", "mean"), ("normalize_std", "std"),
                               ("input_size", "input_size")):  # fmt: skip
        expected = [json.loads(v) for v in models[csv_column]]
        assert [list(v) for v in study.models[column]] == expected
    datasets = study.datasets.set_index("dataset")
    assert list(datasets.index) == ["clean", "noisy", "contrast"]
    assert datasets.loc["contrast", "held_out"] and datasets.loc["clean", "source"]
    assert datasets.loc["noisy", "images"] == 60 and datasets.loc["noisy", "severity"] == 2


def test_no_column_shadows_a_dataframe_attribute(study):
    frames = [study.cells, study.per_view, study.models, study.datasets, study.correlations,
              study.estimates, study.predictions, study.per_sample(model="seed0")]  # fmt: skip
    attributes = set(dir(pd.DataFrame))
    for frame in frames:
        assert not set(frame.columns) & attributes, set(frame.columns) & attributes
    assert study.cells.transformation.str.startswith("r").any()  # what df.transform broke


def test_correlations_carry_the_raw_and_the_signed_r(study):
    correlations = study.correlations
    correlations = correlations[correlations["message"].isna()]  # not the held-out set's
    js = correlations[correlations["measure"] == "js"]
    ei = correlations[correlations["measure"] == "ei"]
    assert len(js) == len(ei) == 2 * 2  # 2 transforms × 2 labeled sets (contrast held out)
    assert not js["higher_is_invariant"].any() and ei["higher_is_invariant"].all()
    np.testing.assert_array_equal(js["signed_pearson_r"], -js["pearson_r"])
    np.testing.assert_array_equal(js["signed_pearson_r_low"], -js["pearson_r_high"])
    np.testing.assert_array_equal(js["signed_spearman_rho_high"], -js["spearman_rho_low"])
    np.testing.assert_array_equal(ei["signed_pearson_r"], ei["pearson_r"])
    cells = study.cells
    for row in js.itertuples():
        points = cells.query(
            "dataset == @row.dataset and transformation == @row.transformation and measure == 'js'"
        )
        r = np.corrcoef(points["value"], points["accuracy"])[0, 1]
        assert row.pearson_r == pytest.approx(r, abs=1e-12)  # raw: accuracy against the value
    section = (study.out_dir / "report.md").read_text().split("## Analysis `model_centric`")[1]
    assert "| group | n | signed Pearson r [95% CI] | signed Spearman ρ [95% CI] |" in section
    first = js.iloc[0]
    shown = f"{first.signed_pearson_r:.3f} [{first.signed_pearson_r_low:.3f}, "
    assert shown in section


def test_per_sample_streams_in_chunks_and_equals_the_parquet_and_the_store(study):
    whole = study.per_sample()
    assert list(whole.columns) == ["model", "dataset", "transformation", "measure", "image",
                                   "value"]  # fmt: skip
    assert len(whole) == 4 * 3 * 2 * 2 * 60
    assert_frame_equal(pd.read_parquet(study.out_dir / "per_sample.parquet"), whole)
    with sqlite3.connect(study.out_dir / "results.sqlite") as db:
        stored = db.execute(
            "SELECT model, dataset, transform, measure, idx, value FROM samples "
            "ORDER BY model, dataset, transform, measure, idx"
        ).fetchall()
    assert [tuple(row) for row in whole.itertuples(index=False)] == stored
    chunks = list(study.per_sample(chunksize=500))
    assert [len(c) for c in chunks] == [500] * 5 + [len(whole) - 2500]
    assert_frame_equal(pd.concat(chunks, ignore_index=True), whole)
    some = study.per_sample(model=["seed1", "seed3"], measure="ei")
    assert set(some["model"]) == {"seed1", "seed3"} and set(some["measure"]) == {"ei"}
    assert len(some) == 2 * 3 * 2 * 60
    mean = some.groupby(["model", "dataset", "transformation"])["value"].mean()
    cells = study.cells.set_index(["model", "dataset", "transformation", "measure"])["value"]
    for (model, dataset, transformation), value in mean.items():
        assert value == pytest.approx(cells[model, dataset, transformation, "ei"], abs=1e-12)
    with pytest.raises(InvkitError, match="model 'seed9' is not in the study"):
        study.per_sample(model="seed9")


def test_plots_draw_the_reports_figures_on_a_notebooks_axes(study):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    _, given = plt.subplots()
    ax = study.plot.correlation("rotation", "js", ax=given)
    assert ax is given
    scattered = [c for c in ax.collections if c.get_offsets().shape[0] == 4]
    assert len(scattered) == 2  # the models on each labeled set
    cells = study.cells.query("transformation == 'rotation' and measure == 'js'")
    clean = cells[cells["dataset"] == "clean"]
    assert sorted(map(tuple, scattered[0].get_offsets().tolist())) == sorted(
        zip(clean["value"], clean["accuracy"], strict=True)
    )
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    signed = study.correlations.query("transformation == 'rotation' and measure == 'js'")
    assert legend[0] == f"clean (r = {signed['signed_pearson_r'].iloc[0]:+.2f})"
    heat = study.plot.heatmap()
    image = heat.images[0].get_array()
    assert image.shape == (4, 2)  # transform × measure rows, labeled test sets
    assert image[1, 0] == pytest.approx(signed["signed_pearson_r"].iloc[0])  # rotation js, clean
    plt.close("all")
    with pytest.raises(InvkitError, match="has no rotation × kl"):
        study.plot.correlation("rotation", "kl")


def test_kept_outputs_and_report_from_the_opened_study(study):
    opened = invkit.open_study(study.out_dir)
    assert opened.outcome is None
    kept = opened.outputs("seed1", "noisy")
    accuracy = study.cells.query("model == 'seed1' and dataset == 'noisy'")["accuracy"].iloc[0]
    assert kept.accuracy == pytest.approx(accuracy)
    assert kept.logits["original"].shape == (60, 10)
    paths = opened.report()
    assert paths["per_sample"].name == "per_sample.parquet" and paths["report"].is_file()
    with pytest.raises(InvkitError, match="no profiles.csv"):
        opened.table("profiles")


def test_open_study_names_a_folder_without_a_study(tmp_path):
    with pytest.raises(InvkitError, match="holds no study"):
        invkit.open_study(tmp_path)
    with pytest.raises(InvkitError, match="takes a config file's path, a mapping"):
        invkit.run_study(42, out_dir=tmp_path)


def _binomial_tail(hits: int, n: int, p: Fraction) -> float:
    """P(X ≥ hits) for X ~ Binomial(n, p), summed exactly."""
    return float(sum(math.comb(n, k) * p**k * (1 - p) ** (n - k) for k in range(hits, n + 1)))


@pytest.mark.parametrize("accuracy", [0.098, 0.132, 0.14, 0.145, 0.16, 0.5])
def test_a_model_is_at_chance_unless_a_binomial_test_says_otherwise(accuracy):
    n = 539
    p = _binomial_tail(round(accuracy * n), n, Fraction(1, 10))
    assert at_chance(accuracy, n, 10) == (p > 0.001)


def test_models_at_chance_are_named_at_the_top_of_the_summary(study):
    report = (study.out_dir / "report.md").read_text()
    summary_part = report.split("## Summary")[1].split("## Analysis")[0]
    pairs = study.cells.drop_duplicates(["model", "dataset"]).dropna(subset=["accuracy"])
    chance = {
        (row.model, row.dataset) for row in pairs.itertuples() if at_chance(row.accuracy, 60, 10)
    }
    assert chance  # seeded random linear models: at chance somewhere
    for dataset in pairs["dataset"].unique():
        everyone = all((m, dataset) in chance for m in NAMES)
        line = f"**Warning:** every model is at chance on {dataset}:"
        assert (line in summary_part) == everyone
    for model in NAMES:
        alone = [d for m, d in chance if m == model and not all((n, d) in chance for n in NAMES)]
        line = f"**Warning:** {model} is at chance (1/10 = 0.100, binomial test p &gt; 0.001) on "
        assert (line + f"{len(alone)} test set(s)" in summary_part) == bool(alone)


def _group(dataset: str, measure: str, r: float, low: float, high: float) -> GroupResult:
    return GroupResult(
        group={"dataset": dataset, "transform": "rotation", "measure": measure},
        points=["a", "b", "c"], x=[0.1, 0.2, 0.3], y=[0.5, 0.6, 0.7],
        statistics={"pearson_r": r, "spearman_rho": r},
        intervals={"pearson_r": [low, high], "spearman_rho": [low, high]},
    )  # fmt: skip


def test_a_strong_negative_correlation_is_said_as_a_finding():
    groups = [
        _group(d, "agreement", r, r - 0.2, r + 0.2) for d, r in (("clean", -0.7), ("noisy", -0.65))
    ] + [_group(d, "js", r, r - 0.3, r + 0.3) for d, r in (("clean", 0.8), ("noisy", 0.76))]
    result = AnalysisResult("model_centric", {}, groups, directions={"agreement": True,
                            "js": False})  # fmt: skip
    text = summary(result)
    assert "no measure" not in text.lower()
    assert "more invariant models are *less* accurate here: by `js`, mean r = -0.78" in text
    weak = [_group(d, "ei", -0.1, -0.6, 0.4) for d in ("clean", "noisy")]
    text = summary(AnalysisResult("model_centric", {}, weak, directions={"ei": True}))
    assert "no measure of this invariance tracks accuracy here" in text


def test_chance_caveats_name_each_model_and_each_set_where_all_are():
    from invkit.report.report import caveats

    def row(model, dataset, accuracy):
        return {"model": model, "dataset": dataset, "accuracy": accuracy, "labeled": 500}

    table = [row("a", "clean", 0.11), row("b", "clean", 0.90), row("a", "noisy", 0.09),
             row("b", "noisy", 0.12), row("a", "blur", 0.5), row("b", "blur", 0.6)]  # fmt: skip
    models = [{"model": m, "num_classes": 10} for m in ("a", "b")]
    lines = caveats(table, models)
    assert lines[0].startswith("every model is at chance on noisy:")
    assert lines[1].startswith("a is at chance (1/10 = 0.100, binomial test p > 0.001) on 1 ")
    assert "clean (0.110)" in lines[1] and "noisy" not in lines[1]
    assert len(lines) == 2  # b is above chance on clean and blur; a on blur
    assert caveats(table, models, subsets={"clean", "noisy"}) == []  # chance unknown there


def test_a_names_entry_is_refused_without_its_spec_or_beside_specs():
    from invkit.config import ConfigError, parse_config

    def config(entry):
        return {"models": [entry], "datasets": [{"name": "d", "spec": "digits"}],
                "transforms": ["rotation"], "measures": ["ei"]}  # fmt: skip

    with pytest.raises(ConfigError, match="gives names but no spec"):
        parse_config(config({"names": ["a", "b"]}))
    with pytest.raises(ConfigError, match="gives names and specs; keep one"):
        parse_config(config({"spec": "timm:x", "names": ["a"], "specs": ["timm:y"]}))
    with pytest.raises(ConfigError, match="two models are named 'a'"):
        parse_config(config({"spec": "timm:x", "names": ["a", "a"]}))
    parsed = parse_config(config({"specs": ["timm:x", "timm:y"], "params": {"tag": "{name}!"}}))
    assert [m.params["tag"] for m in parsed.models] == ["timm:x!", "timm:y!"]
