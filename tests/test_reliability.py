"""Bad input ends in a clear invkit error, faults lose nothing, untrusted files run no code.

The fuzz tests feed seeded malformed configs and damaged image files and require that every
one ends in an ``InvkitError`` (a one-line message in the CLI), never another exception.
"""

from __future__ import annotations

import copy
import dataclasses
import random
import re
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import invkit
from invkit.config import load_config, parse_config
from invkit.inputs.checkpoints import load_state_dict, trusted_checkpoints
from invkit.inputs.data import PreparedDataset
from invkit.run.study import Study

from .conftest import run_cli, study_with, wait_for_cells

HERE = Path(__file__).parent
BASE = {
    "models": [{"name": "r18", "spec": "timm:resnet18", "params": {"pretrained": False}},
               {"name": "mine", "spec": "python:torch.nn:Identity"}],
    "datasets": [{"name": "digits", "spec": "digits", "params": {"size": 16}, "limit": 10}],
    "transforms": ["rotation", {"name": "gray", "component": "grayscale"}],
    "measures": ["ei", {"name": "kl", "params": {"eps": 1e-6}}],
    "analyses": [{"name": "model_centric", "params": {"n_bootstrap": 10}}],
    "run": {"batch_size": 8, "device": "cpu"},
}  # fmt: skip
BAD_PREPROCESSING = [
    {"input_size": [3, 0, 0]}, {"input_size": [2, 16, 16]}, {"input_size": [3, 16]},
    {"input_size": [3.0, 16, 16]}, {"crop_pct": 0}, {"crop_pct": 1.5}, {"crop_pct": "full"},
    {"mean": [0.5, 0.5]}, {"std": [0, 0, 0]}, {"std": [0.2, -0.1, 0.2]}, {"mean": ["a", 1, 2]},
    {"interpolation": "cubic"}, {"input_size": [1, 16, 16], "mean": [0.5, 0.5, 0.5]},
    {"mean": [0.5], "std": [0.5, 0.5]},
]  # fmt: skip
BAD_VALUES = [
    ("run", "seed", -1), ("run", "batch_size", 0), ("run", "workers", -2), ("run", "out", " "),
    ("run", "device", "tpu"), ("run", "executor", "ray2"), ("run", "bootstrap", -5),
    ("dataset", "seed", -3), ("dataset", "limit", 0), ("dataset", "severity", 9),
    ("dataset", "corruption", "fog"),
]  # fmt: skip
CONFIG_CASES = 400
TOML_CASES = 60
FUZZ_COUNTS: dict[str, int] = {}


def paths(value, prefix=()):
    """Every (path, value) inside a nested config."""
    yield prefix, value
    if isinstance(value, dict):
        for key, item in value.items():
            yield from paths(item, (*prefix, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from paths(item, (*prefix, index))


def other_type(value, rng):
    if isinstance(value, bool | int | float):
        return rng.choice(["text", [1, "x"], {"odd": 1}])
    if isinstance(value, str):
        return rng.choice([42, [1], {"odd": 1}])
    return rng.choice(["text", 42])


def mutate(rng: random.Random) -> dict:
    """A config that is wrong in one way, chosen at random."""
    config = copy.deepcopy(BASE)
    places = [(p, v) for p, v in paths(config) if p]
    kind = rng.choice(
        ["type", "typo", "drop", "component", "param", "param_value", "preprocessing", "value"]
    )
    if kind == "drop":
        sections = ("models", "datasets", "transforms", "measures")
        where, key = rng.choice(
            [(config["models"][1], "spec"), (config["datasets"][0], "spec"),
             (config["measures"][1], "name"), *((config, s) for s in sections)]
        )  # fmt: skip
        where.pop(key)
    elif kind in ("type", "typo"):
        path, value = rng.choice([(p, v) for p, v in places if isinstance(p[-1], str)])
        parent = config
        for key in path[:-1]:
            parent = parent[key]
        if kind == "type":
            if path[-1] in ("params", "preprocessing") or path == ("run",):
                parent[path[-1]] = rng.choice([3, "text", [1]])
            else:
                parent[path[-1]] = other_type(value, rng)
        elif kind == "typo":
            key = path[-1]
            i = rng.randrange(len(key))
            letter = rng.choice([c for c in "xqz" if c != key[i]])
            parent[key[:i] + letter + key[i + 1 :]] = parent.pop(key)
    elif kind == "component":
        section = rng.choice(["transforms", "measures", "analyses", "models", "datasets"])
        entry = config[section][0]
        if section in ("models", "datasets"):
            entry["spec"] = "tim:resnet18" if section == "models" else "digitz"
        elif isinstance(entry, str):
            config[section][0] = entry + "z"
        else:
            entry["name"] = entry["name"] + "z"
    elif kind == "param":
        config["transforms"][0] = {"name": "rotation", "params": {"angel": [90]}}
    elif kind == "preprocessing":
        config["models"][0]["preprocessing"] = rng.choice(BAD_PREPROCESSING)
    elif kind == "value":
        section, key, value = rng.choice(BAD_VALUES)
        target = config["run"] if section == "run" else config["datasets"][0]
        target[key] = value
    else:
        bad = rng.choice(
            [{"angles": "abc"}, {"angles": []}, {"interpolation": 3}, {"padding": "x"}]
        )
        config["transforms"][0] = {"name": "rotation", "params": bad}
    return config


def expect_invkit_error(build) -> str:
    try:
        build()
    except invkit.InvkitError as error:
        return str(error)
    raise AssertionError("no error")


def one_line_per_problem(message: str) -> bool:
    """One line (before any parenthesised detail); or "N problems in the config:" and then one
    "  - " line per problem."""
    lines = message.splitlines()
    if re.fullmatch(r"\d+ problems in the config:", lines[0]):
        return len(lines) > 2 and all(line.startswith("  - ") for line in lines[1:])
    return bool(message) and "\n" not in message.split(" (")[0]


def test_fuzzed_configs_all_end_in_invkit_errors():
    rng = random.Random(20261128)
    messages = []
    for _ in range(CONFIG_CASES):
        config = mutate(rng)
        try:
            messages.append(
                expect_invkit_error(lambda c=config: Study(parse_config(c), progress=False))
            )
        except AssertionError:
            raise AssertionError(f"this config was accepted: {config}") from None
        except Exception as error:
            raise AssertionError(f"{type(error).__name__} for {config}: {error}") from error
    assert all(one_line_per_problem(m) for m in messages)
    FUZZ_COUNTS["configs"] = len(messages)


def test_fuzzed_toml_text_all_end_in_invkit_errors(tmp_path):
    rng = random.Random(7)
    good = (HERE / "study_files" / "base.toml").read_text()
    count = 0
    for case in range(TOML_CASES):
        lines = good.splitlines()
        line = rng.randrange(len(lines))
        damage = rng.choice(["cut", "bracket", "quote", "duplicate"])
        if damage == "cut":
            text = good[: rng.randrange(len(good) // 3, len(good) - 40)] + "\n[[[\n"
        elif damage == "bracket":
            lines.insert(line, "[[models")
            text = "\n".join(lines)
        elif damage == "quote":
            lines.insert(line, 'name = "unterminated')
            text = "\n".join(lines)
        else:
            text = good + "\n[run]\nbatch_size = 1\n"
        path = tmp_path / f"case{case}.toml"
        path.write_text(text)
        message = expect_invkit_error(lambda p=path: load_config(p))
        assert "is not valid TOML" in message and "line" in message, message
        count += 1
    FUZZ_COUNTS["toml"] = count


def damaged_files(folder: Path, rng: np.random.Generator) -> list[Path]:
    """Image files that cannot be decoded: empty, noise, text, and truncated PNG and JPEG."""
    folder.mkdir(parents=True, exist_ok=True)
    good = Image.fromarray(rng.integers(0, 256, size=(32, 32, 3), dtype=np.uint8))
    made = []
    for i in range(8):
        for kind in ("empty", "noise", "text", "png-half", "jpeg-half"):
            path = folder / f"{kind}-{i}.{'jpg' if 'jpeg' in kind or kind == 'noise' else 'png'}"
            if kind == "empty":
                path.write_bytes(b"")
            elif kind == "noise":
                path.write_bytes(rng.integers(0, 256, size=500, dtype=np.uint8).tobytes())
            elif kind == "text":
                path.write_text("this is not an image\n")
            else:
                good.save(path, "PNG" if kind == "png-half" else "JPEG")
                data = path.read_bytes()
                path.write_bytes(data[: len(data) // 2 - i])
            made.append(path)
    return made


def test_damaged_images_name_the_file_or_are_skipped_and_counted(tmp_path):
    rng = np.random.default_rng(3)
    bad = damaged_files(tmp_path / "set" / "a", rng)
    for i in range(4):
        Image.fromarray(rng.integers(0, 256, size=(20, 20, 3), dtype=np.uint8)).save(
            tmp_path / "set" / "a" / f"ok{i}.png"
        )
    dataset = invkit.load_dataset(f"imagefolder:{tmp_path / 'set'}")
    model = invkit.load_model("python:torch.nn:Identity")
    for position in range(len(dataset)):
        path = dataset.describe(position)
        if Path(path) in bad:
            message = expect_invkit_error(lambda p=position: dataset[p])
            assert path in message
            prepared = PreparedDataset(dataset, model.preprocessing)
            _, target, _, problem, _ = prepared[position]  # recorded, for the pass to report
            assert path in problem and target == -1
    FUZZ_COUNTS["images"] = len(bad)
    user_models = HERE / "study_files" / "user_models.py"
    config = parse_config({
        "models": [{"name": "lin", "spec": f"python:{user_models}:linear",
                    "preprocessing": {"input_size": [3, 16, 16], "crop_pct": 1.0}}],
        "datasets": [{"name": "set", "spec": f"imagefolder:{tmp_path / 'set'}",
                      "class_map": str(tmp_path / "map.txt")}],
        "transforms": ["grayscale"], "measures": ["ei"],
    })  # fmt: skip
    (tmp_path / "map.txt").write_text("a 0\n")
    failed = Study(config, out_dir=tmp_path / "strict", progress=False, echo=lambda _: None).run()
    [failure] = failed.failures  # every bad file named in one message, not just the first
    assert f"lin × set: {len(bad)} unreadable image(s): " in failure["error"]
    assert all(str(path) in failure["error"] for path in sorted(bad)[:10])
    assert f"and {len(bad) - 10} more" in failure["error"]
    assert "--skip-bad-images" in failure["error"] and "Traceback" not in failure["error"]
    skipping = dataclasses_replace_run(config, skip_bad_images=True)
    lines: list[str] = []
    outcome = Study(skipping, out_dir=tmp_path / "skip", progress=False, echo=lines.append).run()
    assert not outcome.failures and outcome.computed == 1
    [line] = [line for line in lines if "unreadable image(s) skipped" in line]
    assert all(str(path) in line for path in sorted(bad)[:10])  # named in the console
    report = (tmp_path / "skip" / "report.md").read_text()
    assert "## Skipped images" in report and f"lin × set: {len(bad)} unreadable image(s)" in report
    listed = report.split("## Skipped images")[1]
    assert sum(str(path) in listed for path in bad) == 20  # by path: the first 20, and a count
    assert f"… and {len(bad) - 20} more (`bad_images` table)" in listed
    db = sqlite3.connect(tmp_path / "skip" / "results.sqlite")
    assert db.execute("SELECT images, skipped FROM cells").fetchone() == (4, len(bad))
    (count,) = db.execute("SELECT COUNT(*) FROM bad_images").fetchone()
    assert count == len(bad)


def dataclasses_replace_run(config, **changes):
    return dataclasses.replace(config, run=dataclasses.replace(config.run, **changes))


def test_a_component_failing_mid_pass_fails_its_passes_and_the_others_go_on(tmp_path):
    config = study_with(tmp_path, "nan,linear", datasets=2)  # nan loads fine, then fails
    result = run_cli("study", str(config), "--no-progress", check=False)
    assert result.returncode == 1
    assert "2 cell(s) computed in 2 pass(es)" in result.stdout
    # nan and linear shared each dataset's decoding; nan failed, so linear ran again alone
    assert "64 images decoded, 256 through the models" in result.stdout  # 2 × 32, × 4 views
    assert result.stderr.count("its models run again one at a time") == 2
    assert "2 pass(es) failed" in result.stderr
    assert "nan × d0: InvkitError: nan × d0: the model produced NaN" in result.stderr
    db = sqlite3.connect(tmp_path / "invkit-results" / "results.sqlite")
    rows = db.execute("SELECT model, dataset, traceback FROM failures ORDER BY dataset").fetchall()
    assert [(m, d) for m, d, _ in rows] == [("nan", "d0"), ("nan", "d1")]
    assert all("Traceback" in tb and "NaN or infinite outputs" in tb for _, _, tb in rows)
    assert "## Failures" in (tmp_path / "invkit-results" / "report.md").read_text()


def test_a_component_failing_to_load_stops_the_study_before_its_first_pass(tmp_path):
    config = study_with(tmp_path, "broken,linear,two_outputs", datasets=2)
    result = run_cli("study", str(config), "--no-progress", check=False)
    assert result.returncode == 1 and "cell(s) computed" not in result.stdout
    assert "invkit: error: 3 problems in the study:" in result.stderr
    assert (
        "model 'broken' fails on a blank (1, 3, 16, 16) input: RuntimeError: this model is broken"
        in result.stderr
    )
    for dataset in ("d0", "d1"):  # each problem once per pair, found before any pass
        message = f"two_outputs × {dataset}: class index 2 (by index) is outside the model's 2"
        assert message in result.stderr
    assert not (tmp_path / "invkit-results" / "results.sqlite").exists()


def test_bad_model_outputs_name_model_dataset_and_batch(tmp_path):
    outcome = Study(
        load_config(study_with(tmp_path, "nan")), progress=False, echo=lambda _: None
    ).run()
    [failure] = outcome.failures
    assert failure["model"] == "nan"
    expected = "nan × d0: the model produced NaN or infinite outputs in batch 0 (its first image"
    assert expected in failure["error"] and "is dataset index 1)" in failure["error"]


def slow_study(tmp_path: Path) -> tuple[Path, list[str]]:
    config = study_with(tmp_path, "slow", datasets=4)
    invkit_bin = str(Path(sys.executable).with_name("invkit"))
    return config, [invkit_bin, "study", str(config), "--no-progress"]


def test_second_study_on_the_same_directory_is_refused(tmp_path):
    _, command = slow_study(tmp_path)
    first = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_cells(tmp_path / "invkit-results" / "results.sqlite", 1, first)
        second = subprocess.run(command, capture_output=True, text=True, timeout=120)
        assert second.returncode == 1
        assert f"another invkit study (pid {first.pid}) is writing to" in second.stderr
    finally:
        first.kill()
        first.wait()


def test_ctrl_c_keeps_completed_cells_and_says_how_to_resume(tmp_path):
    _, command = slow_study(tmp_path)
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    store = tmp_path / "invkit-results" / "results.sqlite"
    wait_for_cells(store, 1, process)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130
    assert "interrupted (SIGINT); completed cells are kept in" in stderr
    assert "Run the same command again to resume" in stderr
    assert "Traceback" not in stderr
    (kept,) = sqlite3.connect(store).execute("SELECT COUNT(*) FROM cells").fetchone()
    assert 1 <= kept < 4
    resumed = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert resumed.returncode == 0 and f"{kept} reused" in resumed.stdout


def test_unwritable_or_full_output_is_an_error_before_any_work(tmp_path):
    config = load_config(study_with(tmp_path, "linear"))
    (tmp_path / "a-file").write_text("x")
    message = expect_invkit_error(
        lambda: Study(config, out_dir=tmp_path / "a-file" / "out", progress=False).run()
    )
    assert "cannot write to the output directory" in message and "--out" in message
    full = dataclasses_replace_run(config, min_free_mb=10**9)
    message = expect_invkit_error(lambda: Study(full, out_dir=tmp_path / "o", progress=False).run())
    assert "MB free on the disk of" in message
    assert not (tmp_path / "o" / "results.sqlite").exists()


def test_pickled_code_needs_the_explicit_opt_in(tmp_path):
    path = tmp_path / "whole-model.pt"
    torch.save(torch.nn.Linear(3, 2), path)  # pickles the class: loading it imports code
    message = expect_invkit_error(lambda: load_state_dict(path))
    assert "--trust-checkpoints" in message and "arbitrary code" in message
    with pytest.warns(UserWarning, match="arbitrary code allowed"), trusted_checkpoints():
        state = load_state_dict(path)
    assert set(state) == {"weight", "bias"}
    expect_invkit_error(lambda: load_state_dict(path))  # the opt-in ends with its block


def test_fuzz_counts_for_the_docs():
    """Prints the counts docs/reliability.md quotes (run after the fuzz tests)."""
    print(f"\nfuzz counts: {FUZZ_COUNTS}")
    assert set(FUZZ_COUNTS) <= {"configs", "toml", "images"}


def test_labels_cannot_write_outside_the_output_directory(tmp_path):
    config = load_config(study_with(tmp_path, "linear", datasets=3))
    escaping = dataclasses.replace(config.models[0], name="../../escaped")
    sneaking = dataclasses.replace(config.transforms[0], name="../../sneaked")  # in plot names
    config = dataclasses.replace(config, models=(escaping,), transforms=(sneaking,),
        analyses=parse_config({**BASE, "analyses": ["dataset_centric"]}).analyses)  # fmt: skip
    out = tmp_path / "out"
    Study(config, out_dir=out, progress=False, echo=lambda _: None).run()
    written = {p.resolve() for p in tmp_path.rglob("*") if p.is_file()}
    outside = {p for p in written if out.resolve() not in p.parents}
    assert outside == {(tmp_path / "study.toml").resolve(), (tmp_path / "user_models.py").resolve()}
    plots = sorted(p.name for p in (out / "plots").iterdir())
    assert len(plots) == 2  # the figure as PNG and PDF
    assert all(re.fullmatch(r"dataset_centric-sneaked-ei-[0-9a-f]{8}\.(pdf|png)", p) for p in plots)


def test_images_smaller_than_the_input_are_upsampled_and_counted(tmp_path):
    config = load_config(study_with(tmp_path, "linear"))
    small = dataclasses.replace(config.datasets[0], params={"size": 8})
    lines: list[str] = []
    Study(dataclasses.replace(config, datasets=(small,)), progress=False, echo=lines.append).run()
    assert any("32 image(s) smaller than the 16×16 input upsampled" in line for line in lines), (
        lines
    )
