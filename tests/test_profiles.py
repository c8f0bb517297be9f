"""Invariance profiles: each model's value on each magnitude of a transform, and the
model-centric correlation at each magnitude, checked against scipy on a real study."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest
import scipy.stats

import invkit
from invkit.config import ConfigError, load_config
from invkit.run.study import Study

from .conftest import HERE

MODELS = ("linear", "other_linear", "third_linear", "conv")


def write_study(folder: Path, analysis: str) -> Path:
    shutil.copy(HERE / "study_files" / "user_models.py", folder / "user_models.py")
    rotation = '{ name = "rotation", params = { angles = [15, 45, 90] } }'
    lines = [f'transforms = [{rotation}, "grayscale"]', 'measures = ["ei", "js"]',
             "[run]", 'device = "cpu"', "batch_size = 32"]  # fmt: skip
    for name in MODELS:
        lines += ["[[models]]", f'name = "{name}"', f'spec = "python:user_models.py:{name}"',
                  "preprocessing = { input_size = [3, 16, 16], crop_pct = 1.0 }"]  # fmt: skip
    for seed in (0, 1):
        lines += ["[[datasets]]", f'name = "d{seed}"', 'spec = "digits"',
                  "params = { size = 16 }", "limit = 96", f"seed = {seed}"]  # fmt: skip
    lines += ["[[analyses]]", analysis]
    path = folder / "study.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="module")
def profiled(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("profiles")
    config = write_study(folder, 'name = "invariance_profile"\nparams = { n_bootstrap = 200 }')
    Study(load_config(config), out_dir=folder / "out", progress=False, echo=lambda _: None).run()
    return folder / "out"


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open() as handle:
        return list(csv.DictReader(handle))


def test_the_correlation_at_each_magnitude_equals_scipys(profiled):
    accuracy = {
        (r["model"], r["dataset"]): float(r["accuracy"]) for r in read_csv(profiled / "results.csv")
    }
    views = read_csv(profiled / "per_view.csv")
    profiles = read_csv(profiled / "profiles.csv")
    assert {(p["dataset"], p["measure"], p["magnitude"]) for p in profiles} == {
        (d, m, a) for d in ("d0", "d1") for m in ("ei", "js") for a in ("15.0", "45.0", "90.0")
    }
    assert {p["transform"] for p in profiles} == {"rotation"}  # grayscale has no magnitudes
    for profile in profiles:
        points = [
            (float(v["value"]), accuracy[v["model"], v["dataset"]])
            for v in views
            if (v["dataset"], v["transform"], v["measure"], v["view"])
            == (profile["dataset"], "rotation", profile["measure"], profile["view"])
        ]
        assert len(points) == len(MODELS) == int(profile["models"])
        x, y = zip(*points, strict=True)
        assert float(profile["pearson_r"]) == pytest.approx(
            scipy.stats.pearsonr(x, y)[0], abs=1e-12
        )
        assert float(profile["spearman_rho"]) == pytest.approx(
            scipy.stats.spearmanr(x, y)[0], abs=1e-12
        )
        assert float(profile["pearson_low"]) <= float(profile["pearson_high"])


def test_the_report_draws_each_profile_and_names_the_best_magnitude(profiled):
    report = (profiled / "report.md").read_text()
    profiles = read_csv(profiled / "profiles.csv")
    for measure, sign in (("ei", 1), ("js", -1)):  # js: lower is more invariant
        mean = {
            view: sum(sign * float(p["pearson_r"]) for p in profiles
                      if (p["measure"], p["view"]) == (measure, view)) / 2
            for view in ("15", "45", "90")
        }  # fmt: skip
        best, least = max(mean, key=mean.get), min(mean, key=mean.get)
        assert (
            f"- **rotation**: `{measure}` at {best} tracks accuracy best (mean r = "
            f"{mean[best]:+.2f} over 2 test set(s)), at {least} least (r = {mean[least]:+.2f})"
        ) in report
    assert "'grayscale' has no magnitudes: not profiled" in report
    result = json.loads((profiled / "analyses.json").read_text())["invariance_profile"]
    [profile] = [p for p in result["profiles"] if (p["dataset"], p["measure"]) == ("d0", "ei")]
    assert profile["magnitudes"] == [15.0, 45.0, 90.0] and profile["models"] == list(MODELS)
    plots = {p.name for p in (profiled / "plots").glob("invariance_profile-profile-rotation-*.png")}
    assert len(plots) == 2  # ei and js


def test_a_profile_of_a_transform_without_magnitudes_is_refused(tmp_path):
    profile = invkit.get_analysis("invariance_profile", transforms=["grayscale"])
    rows = [{"model": "m", "dataset": "d", "transform": "grayscale", "measure": "ei",
             "invariance": 0.5, "accuracy": 0.5,
             "views": [{"view": "0", "magnitude": None, "value": 0.5}]}]  # fmt: skip
    with pytest.raises(invkit.InvkitError, match="'grayscale' have no magnitudes"):
        profile(rows)
    config = write_study(
        tmp_path, 'name = "invariance_profile"\nparams = { transforms = ["grayscale"] }'
    )
    with pytest.raises(
        ConfigError, match="'grayscale' have no magnitudes.*profile one of: rotation"
    ):
        Study(load_config(config), out_dir=tmp_path / "out", progress=False)  # before any pass
    assert not (tmp_path / "out").exists()
