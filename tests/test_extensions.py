"""Every extension point works for a third party: executors (built-in ``processes`` and a
pip-installed one), a pip-installed analysis rendered by the report, and a pip-installed
dataset shift, through ``invkit study`` and ``invkit report``; a pass is picklable data."""

from __future__ import annotations

import csv
import json
import os
import pickle
import re
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import invkit
from invkit.config import load_config
from invkit.run.plan import StudyPlan
from invkit.run.study import Study

from .conftest import run_cli, study_with, wait_for_cells

PLUGINS = "invkit-meanscore,invkit-reversed,invkit-posterize"
RESULT_KEYS = ("value", "accuracy", "images", "labeled", "matching", "higher_is_invariant")


def kept_files(out: Path) -> dict[str, bytes]:
    """Every kept outputs file of a study, by name: what each executor must write alike."""
    return {path.name: path.read_bytes() for path in (out / "outputs").glob("*.safetensors")}


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


EXECUTOR_TOLERANCE = 1e-6  # docs/outputs.md#on-other-executors: float32 reductions' rounding


def assert_agree_within_tolerance(local: Path, other: Path) -> None:
    """Two studies of the same config on two executors: the same cells and kept outputs, each
    number within the tolerance the docs state, every top-1 class the same."""
    cells, theirs = results(local), results(other)
    assert cells.keys() == theirs.keys()
    for key, row in cells.items():
        assert row[1:] == theirs[key][1:], key  # accuracy, images, labels, matching: exact
        assert float(row[0]) == pytest.approx(float(theirs[key][0]), abs=EXECUTOR_TOLERANCE)
    assert kept_files(local).keys() == kept_files(other).keys()
    for model, dataset in {(m, d) for m, d, *_ in cells}:
        mine, yours = (
            invkit.load_outputs(local, model, dataset),
            invkit.load_outputs(other, model, dataset),
        )
        for view in mine.views:
            assert (mine.top_indices[view] == yours.top_indices[view]).all()
            for field in ("top_probs", "logsumexp", "entropy", "logits"):
                a, b = getattr(mine, field).get(view), getattr(yours, field).get(view)
                assert (a is None) == (b is None)
                if a is not None:
                    assert abs(a.astype(float) - b.astype(float)).max() <= EXECUTOR_TOLERANCE


def test_processes_executor_agrees_with_local_within_the_stated_tolerance(tmp_path):
    config = study_with(tmp_path, "conv,linear,nan", datasets=2)
    local = Study(load_config(config), out_dir=tmp_path / "local", progress=False).run()
    processes = with_run(config, executor="processes", executor_params={"workers": 2})
    pooled = Study(load_config(processes), out_dir=tmp_path / "pool", progress=False).run()
    assert len(results(tmp_path / "pool")) == 4 and pooled.computed == local.computed == 4
    assert len(kept_files(tmp_path / "pool")) == 4  # the summary arrays travel with results
    assert_agree_within_tolerance(tmp_path / "local", tmp_path / "pool")
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
    assert (out / plot.split("](")[1].split(")")[0]).read_bytes()[:4] == b"\x89PNG"
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
    assert values[0].keys() == values[1].keys()
    for key, first in values[0].items():  # float32 matmul kernels differ with the batch's size:
        second = values[1][key]  # the value within their rounding, the rest exactly
        assert abs(float(first[0]) - float(second[0])) < 1e-7 and first[1:] == second[1:]


@pytest.fixture(scope="module")
def ray_cluster():
    """A local Ray cluster of 2 CPUs, as the CI machine has; studies join it by address."""
    import ray

    context = ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield context.address_info["address"]
    ray.shutdown()


def on_ray(config: Path, **params: object) -> Path:
    return with_run(config, executor="ray", executor_params={"max_retries": 1, **params})


def add_logged_model(config: Path, name: str, log: Path, mode: str) -> None:
    config.write_text(
        config.read_text() + f'\n[[models]]\nname = "{name}"\n'
        f'spec = "python:user_models.py:logged"\n'
        f'params = {{ kwargs = {{ log = "{log}", mode = "{mode}" }} }}\n'
        "preprocessing = { input_size = [3, 16, 16], crop_pct = 1.0 }\n"
    )


def test_ray_executor_agrees_with_local_within_the_stated_tolerance(tmp_path, ray_cluster):
    config = study_with(tmp_path, "conv,linear", datasets=2, outputs="full")
    local = Study(load_config(config), out_dir=tmp_path / "local", progress=False).run()
    outcome = Study(load_config(on_ray(config)), out_dir=tmp_path / "ray", progress=False).run()
    assert outcome.computed == local.computed == 4 and outcome.forward_images == 4 * 32 * 4
    # full outputs: each worker wrote its file into staging, the driver verified and adopted it
    assert len(kept_files(tmp_path / "ray")) == 4
    assert_agree_within_tolerance(tmp_path / "local", tmp_path / "ray")
    assert list((tmp_path / "ray" / "outputs" / "staging").iterdir()) == []


def test_ray_retries_a_failing_pass_then_records_it_and_the_study_exits_1(tmp_path, ray_cluster):
    config = study_with(tmp_path, "linear", datasets=2)
    log = tmp_path / "attempts.log"
    add_logged_model(config, "failing", log, "raise")
    result = run_cli(
        "study", str(on_ray(config)), "--no-progress", env={"RAY_ADDRESS": ray_cluster},
        check=False,
    )  # fmt: skip
    assert result.returncode == 1
    assert "2 cell(s) computed in 2 pass(es)" in result.stdout  # linear's passes completed
    assert "failing × d0: RuntimeError: this pass always fails" in result.stderr
    assert "failing × d1: RuntimeError: this pass always fails" in result.stderr
    assert len(log.read_text().split()) == 2 * 2  # each pass: its first try and one retry


def test_a_worker_killed_mid_pass_is_retried_and_results_are_identical(tmp_path, ray_cluster):
    config = study_with(tmp_path, "linear")
    log = tmp_path / "attempts.log"
    add_logged_model(config, "dies_once", log, "die_once")
    outcome = Study(load_config(on_ray(config)), out_dir=tmp_path / "ray", progress=False).run()
    assert not outcome.failures and outcome.computed == 2
    pids = log.read_text().split()  # one line per forward: killed at its first, then per
    # batch of 8 the originals and one chunk of the 3 views, all 4 batches in a new worker
    assert len(pids) == 1 + 4 * 2 and pids[0] not in pids[1:]
    cells = results(tmp_path / "ray")  # logged() wraps linear() with the same seed
    assert cells[("dies_once", "d0", "rotation", "ei")] == cells[("linear", "d0", "rotation", "ei")]


def test_killing_the_driver_and_rerunning_resumes_without_recomputing(tmp_path, ray_cluster):
    config = on_ray(study_with(tmp_path, "slow", datasets=3))
    store = tmp_path / "invkit-results" / "results.sqlite"
    command = [str(Path(sys.executable).with_name("invkit")), "study", str(config), "--no-progress"]
    env = {**os.environ, "RAY_ADDRESS": ray_cluster}
    driver = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    wait_for_cells(store, 1, driver)
    driver.kill()
    driver.wait()
    (kept,) = sqlite3.connect(store).execute("SELECT COUNT(*) FROM cells").fetchone()
    assert 1 <= kept < 3
    rerun = run_cli("study", str(config), "--no-progress", "--ray-address", ray_cluster)
    assert (
        f"{3 - kept} cell(s) computed in {3 - kept} pass(es), 0 from kept outputs, {kept} reused"
        in rerun.stdout
    )


def test_ray_executor_without_ray_says_how_to_install_it(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # as if Ray were not installed
    config = with_run(study_with(tmp_path, "linear"), executor="ray")
    with pytest.raises(invkit.InvkitError, match=r'needs Ray: pip install "invkit\[ray\]"'):
        Study(load_config(config), out_dir=tmp_path / "o", progress=False)
    assert not (tmp_path / "o").exists()  # refused before anything is written


# -- faults under the processes and ray executors ------------------------------------------------


def descendants(pid: int) -> set[int]:
    """Every live process below ``pid``, read from /proc."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                text = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            parents[int(entry)] = int(text[text.rindex(")") + 2 :].split()[1])
    family, grew = {pid}, True
    while grew:
        grew = False
        for child, parent in parents.items():
            if parent in family and child not in family:
                family.add(child)
                grew = True
    return family - {pid}


def alive(pids: set[int]) -> set[int]:
    return {pid for pid in pids if Path(f"/proc/{pid}").exists()}


def killed_driver_leaves_nothing(config: Path, store: Path, env: dict | None = None) -> None:
    """Start a study, let it store one cell, SIGKILL it: every process it started ends in
    seconds."""
    command = [str(Path(sys.executable).with_name("invkit")), "study", str(config), "--no-progress"]
    driver = subprocess.Popen(
        command, env={**os.environ, **(env or {})}, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    wait_for_cells(store, 1, driver)
    started = descendants(driver.pid)
    assert started  # workers (and for Ray its instance) were running
    driver.kill()
    driver.wait()
    deadline = time.monotonic() + 15
    while alive(started) and time.monotonic() < deadline:
        time.sleep(0.25)
    assert not alive(started), [Path(f"/proc/{p}/cmdline").read_text() for p in alive(started)]


def test_a_processes_worker_killed_mid_pass_is_replaced_and_only_its_pass_retried(tmp_path):
    config = study_with(tmp_path, "linear", datasets=2)
    log = tmp_path / "attempts.log"
    add_logged_model(config, "dies_once", log, "die_once")
    processes = with_run(config, executor="processes", executor_params={"workers": 2})
    result = run_cli("study", str(processes), "--no-progress", "--out", str(tmp_path / "p"))
    assert "4 cell(s) computed in 4 pass(es)" in result.stdout
    assert re.search(r"warning: the worker process running dies_once × d\d died; a new pool "
                     r"runs it again \(retry 1 of 1\)", result.stderr)  # fmt: skip
    assert "FAILED" not in result.stderr and "leaked semaphore" not in result.stderr
    local = Study(load_config(config), out_dir=tmp_path / "local", progress=False).run()
    assert not local.failures and results(tmp_path / "p") == results(tmp_path / "local")


def test_a_killed_processes_driver_takes_its_workers_with_it(tmp_path):
    config = with_run(
        study_with(tmp_path, "slow", datasets=3), executor="processes", executor_params={}
    )
    killed_driver_leaves_nothing(config, tmp_path / "invkit-results" / "results.sqlite")


def test_ctrl_c_under_processes_is_clean(tmp_path):
    config = with_run(study_with(tmp_path, "slow", datasets=3), executor="processes")
    store = tmp_path / "invkit-results" / "results.sqlite"
    command = [str(Path(sys.executable).with_name("invkit")), "study", str(config), "--no-progress"]
    driver = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for_cells(store, 1, driver)
    driver.send_signal(signal.SIGINT)
    _, stderr = driver.communicate(timeout=120)
    assert driver.returncode == 130 and "Run the same command again to resume." in stderr
    assert "leaked semaphore" not in stderr and "Traceback" not in stderr


def test_sigterm_ends_a_ray_study_with_143_and_a_resume_line(tmp_path, ray_cluster):
    config = on_ray(study_with(tmp_path, "slow", datasets=3))
    store = tmp_path / "invkit-results" / "results.sqlite"
    command = [str(Path(sys.executable).with_name("invkit")), "study", str(config), "--no-progress"]
    env = {**os.environ, "RAY_ADDRESS": ray_cluster}
    driver = subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    wait_for_cells(store, 1, driver)
    driver.send_signal(signal.SIGTERM)
    _, stderr = driver.communicate(timeout=120)
    assert driver.returncode == 143, stderr
    assert "interrupted (SIGTERM)" in stderr and "SIGTERM received" not in stderr


def test_a_killed_ray_driver_leaves_no_process_of_its_local_instance(tmp_path):
    config = on_ray(study_with(tmp_path, "slow", datasets=3))
    env = {"RAY_ADDRESS": ""}  # a local instance of its own, not the module's cluster
    killed_driver_leaves_nothing(config, tmp_path / "invkit-results" / "results.sqlite", env)


def test_ray_settings_that_could_never_run_are_one_line_each(tmp_path, ray_cluster):
    config = study_with(tmp_path, "linear")
    cases = [
        ({"num_cpus": -1}, {}, "num_cpus must be >= 0; got -1"),
        ({"num_cpus": 64}, {"RAY_ADDRESS": ray_cluster},
         "asks for 64 CPU(s), but the largest node of the cluster has 2 CPU(s)"),
        ({"num_gpus": 1}, {"RAY_ADDRESS": ray_cluster}, "asks for 1 GPU(s)"),
        ({}, {"RAY_ADDRESS": "127.0.0.1:1"}, "no Ray cluster answers at '127.0.0.1:1'"),
        ({"address": "ray://127.0.0.1:1"}, {}, "no Ray cluster answers at 'ray://127.0.0.1:1'"),
    ]  # fmt: skip
    for params, env, message in cases:
        started = time.monotonic()
        result = run_cli("study", str(on_ray(config, **params)), "--no-progress", env=env,
                         check=False)  # fmt: skip
        assert result.returncode == 1 and message in result.stderr, result.stderr
        assert "Traceback" not in result.stderr and time.monotonic() - started < 60
    empty = run_cli("study", str(config), "--ray-address", "", check=False)
    assert empty.returncode == 1 and "address is empty" in empty.stderr


def test_a_signal_inside_rays_wait_is_raised_as_itself():
    """Ray's Cython wait can wrap the signal's exception in a SystemError; the executor
    raises the signal's own, so the study ends with its exit status and resume line."""
    from invkit.builtins.ray_executor import _unwrapped
    from invkit.errors import Interrupted

    stop = Interrupted(signal.SIGINT, "SIGINT")
    try:
        try:
            raise stop
        except Interrupted:
            message = "<cyfunction CoreWorker.wait> returned a result with an exception set"
            raise SystemError(message)  # noqa: B904 (implicit chaining, as from Cython)
    except SystemError as wrapped:
        assert _unwrapped(wrapped) is stop
    other = SystemError("a real bug")
    assert _unwrapped(other) is other
