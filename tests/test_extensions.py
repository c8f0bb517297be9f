"""Every extension point works for a third party: executors (built-in ``processes`` and a
pip-installed one), a pip-installed analysis rendered by the report, and a pip-installed
dataset shift, through ``invkit study`` and ``invkit report``; a pass is picklable data."""

from __future__ import annotations

import csv
import json
import pickle
import sys
from pathlib import Path

import pytest
import torch

import invkit
from invkit.config import load_config
from invkit.run.plan import StudyPlan
from invkit.run.study import Study

from .conftest import run_cli, study_with

PLUGINS = "invkit-meanscore,invkit-reversed,invkit-posterize"
RESULT_KEYS = ("value", "accuracy", "images", "labeled", "matching", "higher_is_invariant")


def results(out: Path) -> dict[tuple[str, ...], tuple[str, ...]]:
    with (out / "results.csv").open() as handle:
        return {
            (r["model"], r["dataset"], r["transform"], r["measure"]): tuple(
                r[k] for k in RESULT_KEYS
            )
            for r in csv.DictReader(handle)
        }


def with_run(config: Path, **run: object) -> Path:
    lines = config.read_text().replace("[run]\n", "[run]\n" + "".join(
        f"{k} = {json.dumps(v) if not isinstance(v, dict) else _table(v)}\n"
        for k, v in run.items()
    ))  # fmt: skip
    path = config.with_name(f"{config.stem}-{len(run)}-{abs(hash(str(run)))}.toml")
    path.write_text(lines)
    return path


def _table(value: dict) -> str:
    return "{ " + ", ".join(f"{k} = {json.dumps(v)}" for k, v in value.items()) + " }"


def test_a_pass_is_picklable_data_and_run_pass_needs_no_store(tmp_path):
    plan = StudyPlan(load_config(study_with(tmp_path, "linear")))
    [spec] = plan.passes({}, set())[0]
    copy = pickle.loads(pickle.dumps(spec))
    assert copy == spec
    result = invkit.run_pass(copy)
    assert [c.key for c in result.cells] == [("linear", "d0", "rotation", "ei")]
    assert result.images == 32 and 0 <= result.cells[0].value <= 1
    assert result.forward_images == 32 * (1 + 3)  # originals and rotation's three views
    assert not list(tmp_path.rglob("*.sqlite"))  # nothing was written


def test_processes_executor_equals_local_cell_for_cell(tmp_path):
    config = study_with(tmp_path, "linear,other_linear,nan", datasets=2)
    local = Study(load_config(config), out_dir=tmp_path / "local", progress=False).run()
    processes = with_run(config, executor="processes", executor_params={"workers": 2})
    pooled = Study(load_config(processes), out_dir=tmp_path / "pool", progress=False).run()
    assert results(tmp_path / "local") == results(tmp_path / "pool")
    assert len(results(tmp_path / "pool")) == 4 and pooled.computed == local.computed == 4
    failed = sorted((f["model"], f["dataset"]) for f in pooled.failures)
    assert failed == [("nan", "d0"), ("nan", "d1")]
    assert all("NaN or infinite outputs" in f["error"] for f in pooled.failures)


def test_third_party_executor_analysis_and_shift_run_end_to_end(with_plugin_site, tmp_path):
    config = study_with(tmp_path, "linear,other_linear", datasets=1)
    text = config.read_text() + (
        '\n[[datasets]]\nname = "poster"\nspec = "digits"\nparams = { size = 16 }\nlimit = 32\n'
        'shift = { component = "posterize", params = { bits = 2 } }\n'
        '\n[[analyses]]\nname = "mean_invariance"\n'
    )
    config.write_text(text)
    env = {"INVKIT_LOAD_PLUGINS": PLUGINS}
    run_cli("study", str(config), "--out", str(tmp_path / "local"), "--no-progress", env=env)
    reversed_config = with_run(config, executor="reversed")
    out = tmp_path / "reversed"
    result = run_cli("study", str(reversed_config), "--out", str(out), "--no-progress", env=env)
    lines = result.stderr.splitlines()
    order = [line.split(":")[0].strip() for line in lines if line.startswith("  ")]
    assert order == ["other_linear × poster", "other_linear × d0", "linear × poster", "linear × d0"]
    assert results(out) == results(tmp_path / "local")  # the executor changes no number
    cells = results(out)
    poster = cells[("linear", "poster", "rotation", "ei")]
    clean = cells[("linear", "d0", "rotation", "ei")]
    assert poster != clean
    analyses = json.loads((out / "analyses.json").read_text())
    means = analyses["mean_invariance"]["means"]
    assert set(means) == {"linear", "other_linear"}
    expected = (float(poster[0]) + float(clean[0])) / 2
    assert abs(means["linear"] - expected) < 1e-12
    report = (out / "report.md").read_text()
    assert "## Analysis `mean_invariance` (mean_invariance)" in report
    assert f"linear: mean invariance {means['linear']:.4f}" in report
    [plot] = [line for line in report.splitlines() if line.startswith("![mean_invariance bars]")]
    assert (out / plot.split("(")[1].rstrip(")")).read_bytes()[:4] == b"\x89PNG"
    with (out / "means.csv").open() as handle:
        assert [r["model"] for r in csv.DictReader(handle)] == ["linear", "other_linear"]
    (out / "report.md").unlink()
    run_cli("report", str(out), env=env)
    assert "mean invariance" in (out / "report.md").read_text()


def test_a_shift_is_the_same_in_any_batch_size(with_plugin_site, tmp_path, monkeypatch):
    monkeypatch.setenv("INVKIT_LOAD_PLUGINS", PLUGINS)
    invkit.plugins.reset_host()
    shift = invkit.get_shift("posterize", bits=3)
    image = torch.rand(3, 8, 8, generator=torch.Generator().manual_seed(0))
    assert torch.equal(shift(image, 7), shift(image, 7))
    config = study_with(tmp_path, "linear")
    config.write_text(config.read_text().replace(
        "limit = 32", 'limit = 32\nshift = { component = "posterize" }'))  # fmt: skip
    values = []
    for batch_size in (8, 5):
        changed = with_run(config, batch_size=batch_size)
        changed.write_text(changed.read_text().replace("batch_size = 8\n", "", 1))
        Study(load_config(changed), out_dir=tmp_path / f"b{batch_size}", progress=False).run()
        values.append(results(tmp_path / f"b{batch_size}"))
    assert values[0] == values[1]


def test_ray_executor_equals_local_cell_for_cell_and_records_failed_passes(tmp_path):
    import ray

    config = study_with(tmp_path, "linear,other_linear,nan", datasets=2)
    local = Study(load_config(config), out_dir=tmp_path / "local", progress=False).run()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        on_ray = with_run(config, executor="ray", executor_params={"max_retries": 1})
        outcome = Study(load_config(on_ray), out_dir=tmp_path / "ray", progress=False).run()
    finally:
        ray.shutdown()
    assert results(tmp_path / "ray") == results(tmp_path / "local")
    assert outcome.computed == local.computed == 4 and outcome.forward_images == 4 * 32 * 4
    failed = sorted((f["model"], f["dataset"]) for f in outcome.failures)
    assert failed == [("nan", "d0"), ("nan", "d1")]
    assert all("NaN or infinite outputs" in f["error"] for f in outcome.failures)


def test_ray_executor_without_ray_says_how_to_install_it(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # as if Ray were not installed
    config = with_run(study_with(tmp_path, "linear"), executor="ray")
    with pytest.raises(invkit.InvkitError, match=r'needs Ray: pip install "invkit\[ray\]"'):
        Study(load_config(config), out_dir=tmp_path / "o", progress=False)
    assert not (tmp_path / "o").exists()  # refused before anything is written
