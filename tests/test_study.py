"""End-to-end studies: real timm and python: models, real image files and digits, the SQLite
store, the report, resuming after a kill, and results checked against direct computation."""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from PIL import Image
from safetensors.torch import save_file
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2 import functional as F

import invkit
from invkit.builtins.datasets import Digits
from invkit.config import ComponentEntry, load_config, parse_config
from invkit.run.study import Study

from .conftest import run_cli, wait_for_cells

HERE = Path(__file__).parent
MEASURES = ("ei", "agreement", "js")
CONFIG = """
transforms = ["rotation", "grayscale"]
measures = ["ei", "agreement", "js"]

[run]
out = "out"
batch_size = 64

[[models]]
name = "effnet"
spec = "timm:test_efficientnet"
params = { weights = "weights/effnet.safetensors", num_classes = 10 }
preprocessing = { input_size = [3, 16, 16], crop_pct = 1.0 }

[[models]]
name = "linear"
spec = "python:user_models.py:linear"
params = { checkpoint = "weights/linear.pt" }

[models.preprocessing]
input_size = [3, 16, 16]
crop_pct = 1.0
mean = [0.5, 0.5, 0.5]
std = [0.5, 0.5, 0.5]

[[datasets]]
name = "digits"
spec = "digits"
params = { size = 16 }

[[datasets]]
name = "folder"
spec = "imagefolder:images"

[[datasets]]
name = "unlabeled"
spec = "imagefolder:unlabeled"

[[analyses]]
name = "model_centric"
params = { n_bootstrap = 200 }

[[analyses]]
name = "dataset_centric"
params = { n_bootstrap = 200 }
"""


def write_images(folder: Path, count: int, seed: int, size=(24, 20)) -> None:
    """PNG and JPEG files, with a grayscale and an RGBA one among them."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        pixels = rng.integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)
        image = Image.fromarray(pixels)
        if i == 1:
            image = image.convert("L")
        if i == 2:
            image = image.convert("RGBA")
        suffix = ".jpg" if i % 2 and image.mode != "RGBA" else ".png"
        image.save(folder / f"img{i}{suffix}")


@pytest.fixture(scope="module")
def study_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("study")
    (root / "weights").mkdir()
    torch.manual_seed(0)
    effnet = timm.create_model("test_efficientnet", num_classes=10)
    save_file(
        {k: v.contiguous() for k, v in effnet.state_dict().items()},
        str(root / "weights/effnet.safetensors"),
    )
    sys.path.insert(0, str(HERE / "study_files"))
    import user_models

    sys.path.pop(0)
    torch.manual_seed(2)
    torch.save(user_models.linear().state_dict(), root / "weights/linear.pt")
    shutil.copy(HERE / "study_files/user_models.py", root / "user_models.py")
    for label in "012":
        write_images(root / "images" / label, 4, seed=int(label))
    write_images(root / "unlabeled", 5, seed=9)
    (root / "study.toml").write_text(CONFIG)
    return root


@pytest.fixture(scope="module")
def finished(study_dir) -> Path:
    """The study run once, for real, through the CLI in a subprocess."""
    result = run_cli("study", str(study_dir / "study.toml"), "--per-sample", "--no-progress")
    assert "36 cell(s) computed in 6 pass(es), 0 from kept outputs, 0 reused" in result.stdout
    return study_dir / "out"


def read_results(out: Path) -> dict[tuple[str, ...], dict[str, str]]:
    with (out / "results.csv").open() as handle:
        return {
            (r["model"], r["dataset"], r["transform"], r["measure"]): r
            for r in csv.DictReader(handle)
        }


def direct(model, images: torch.Tensor, targets: torch.Tensor | None, logit_index=None) -> dict:
    """Measures and accuracy computed here, without the engine, on the same pixels."""
    prep = model.preprocessing
    module = model.module.eval()
    mean = torch.tensor(prep.mean).view(1, 3, 1, 1)
    std = torch.tensor(prep.std).view(1, 3, 1, 1)

    def probs(x):
        with torch.no_grad():
            logits = module((x - mean) / std)
        if logit_index is not None:
            logits = logits[:, logit_index]
        return logits.double().softmax(dim=1)

    original = probs(images)
    gray = (0.299 * images[:, 0] + 0.587 * images[:, 1] + 0.114 * images[:, 2]).unsqueeze(1)
    views = {
        "rotation": [probs(torch.rot90(images, k, dims=(-2, -1))) for k in (1, 2, 3)],
        "grayscale": [probs(gray.expand(-1, 3, -1, -1))],
    }
    result = {}
    for transform, view_probs in views.items():
        for name in MEASURES:
            measure = invkit.get_measure(name)
            per_view = torch.stack([measure(original, v) for v in view_probs])
            result[(transform, name)] = float(per_view.mean())
    accuracy = None if targets is None else float((original.argmax(1) == targets).double().mean())
    return {"values": result, "accuracy": accuracy}


# a measure's value from 8-bit files resized as uint8 (invkit) or as float (the references):
# docs/performance.md states this bound; the largest difference seen in these tests is 3.8e-4
UINT8_RESIZE_TOLERANCE = 1e-3


def load_folder(folder: Path, interpolation: str = "bilinear", size: int = 16) -> torch.Tensor:
    """The folder's images resized (shorter side), centre-cropped and clipped to [0, 1]."""
    tensors = []
    for path in sorted(p for p in folder.iterdir() if p.is_file()):
        image = Image.open(path).convert("RGB")
        pixels = torch.from_numpy(np.array(image)).permute(2, 0, 1).float() / 255
        resized = F.resize(
            pixels, [size], interpolation=InterpolationMode(interpolation), antialias=True
        )
        tensors.append(F.center_crop(resized, [size, size]).clamp(0, 1))
    return torch.stack(tensors)


def test_study_results_equal_direct_computation(study_dir, finished):
    results = read_results(finished)
    assert len(results) == 2 * 3 * 2 * 3
    models = {
        "effnet": invkit.load_model(
            "timm:test_efficientnet",
            weights=str(study_dir / "weights/effnet.safetensors"),
            num_classes=10,
        ),
        "linear": invkit.load_model(
            f"python:{study_dir / 'user_models.py'}:linear",
            checkpoint=str(study_dir / "weights/linear.pt"),
        ),
    }
    models["linear"].preprocessing = dataclasses.replace(
        models["linear"].preprocessing, mean=(0.5,) * 3, std=(0.5,) * 3
    )
    digits = Digits(split="test", size=16)
    folder_targets = torch.tensor([0] * 4 + [1] * 4 + [2] * 4)
    for model_name, model in models.items():
        mode = model.preprocessing.interpolation
        inputs = {
            "digits": (digits.images, digits.labels),
            "folder": (
                torch.cat([load_folder(study_dir / "images" / c, mode) for c in "012"]),
                folder_targets,
            ),
            "unlabeled": (load_folder(study_dir / "unlabeled", mode), None),
        }
        for dataset, (images, targets) in inputs.items():
            expected = direct(model, images, targets)
            # digits are float tensors at size: the same pixels. The folders' 8-bit files are
            # resized as uint8, which rounds each pixel (docs/performance.md states the bound)
            tolerance = 2e-6 if dataset == "digits" else UINT8_RESIZE_TOLERANCE
            for (transform, measure), value in expected["values"].items():
                row = results[(model_name, dataset, transform, measure)]
                assert float(row["value"]) == pytest.approx(value, abs=tolerance), (
                    model_name,
                    dataset,
                    transform,
                    measure,
                )
                assert int(row["images"]) == len(images)
                if expected["accuracy"] is None:
                    assert row["accuracy"] == "" and row["labeled"] == "0"
                else:
                    assert float(row["accuracy"]) == pytest.approx(expected["accuracy"], abs=1e-12)


def test_report_files_and_content(finished):
    for name in (
        "results.csv",
        "correlations.csv",
        "predictions.csv",
        "analyses.json",
        "models.csv",
        "summary.tex",
        "report.html",
        "report.md",
        "results.sqlite",
    ):
        assert (finished / name).is_file(), name
    report = (finished / "report.md").read_text()
    assert report.index("## Summary") < report.index("## Analysis") < report.index("### digits")
    assert "| effnet |" in report and "Analysis `dataset_centric`" in report
    plots = sorted((finished / "plots").glob("*.png"))
    # one figure per transform × measure and analysis: every test set (model-centric) or
    # every model (dataset-centric) on it; no heatmap, since no group has 3 points
    assert len(plots) == 6 + 6
    for plot in plots:
        assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert plot.with_suffix(".pdf").read_bytes()[:5] == b"%PDF-"  # for papers
        assert f"(plots/{plot.name})" in report
        assert f"(plots/{plot.with_suffix('.pdf').name})" in report
    with (finished / "models.csv").open() as handle:
        models = {row["model"]: row for row in csv.DictReader(handle)}
    assert models["linear"]["input_size"] == "[3, 16, 16]"
    assert models["effnet"]["interpolation"] == "bicubic" and models["effnet"]["channels"] == "3"
    assert "## Models" in report and "| linear | `python:" in report
    with (finished / "correlations.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    model_centric = [r for r in rows if r["analysis"] == "model_centric"]
    messages = {(r["dataset"], r["message"]) for r in model_centric}
    assert messages == {
        ("digits", "2 point(s); correlations need at least 3"),
        ("folder", "2 point(s); correlations need at least 3"),
        ("unlabeled", "0 point(s); correlations need at least 3"),
    }
    dataset_centric = [r for r in rows if r["analysis"] == "dataset_centric"]
    assert {r["n"] for r in dataset_centric} == {"2"}  # the unlabeled set has no accuracy
    analyses = json.loads((finished / "analyses.json").read_text())
    assert set(analyses) == {"model_centric", "dataset_centric"}


LINEAR_DIGITS_ROTATION_EI = (
    "model='linear' AND dataset='digits' AND transform='rotation' AND measure='ei'"
)


def test_per_sample_values_are_stored(finished):
    db = sqlite3.connect(finished / "results.sqlite")
    results = read_results(finished)
    (count,) = db.execute(
        f"SELECT COUNT(*) FROM samples WHERE {LINEAR_DIGITS_ROTATION_EI}"
    ).fetchone()
    assert count == 539
    (mean,) = db.execute(
        f"SELECT AVG(value) FROM samples WHERE {LINEAR_DIGITS_ROTATION_EI}"
    ).fetchone()
    assert mean == pytest.approx(
        float(results[("linear", "digits", "rotation", "ei")]["value"]), abs=1e-9
    )
    kept = invkit.load_outputs(finished, "effnet", "folder")  # per-view predictions
    assert kept.views == ["original", "rotation/90", "rotation/180", "rotation/270", "grayscale/0"]
    assert {view: len(kept.top_indices[view]) for view in kept.views} == dict.fromkeys(
        kept.views, 12
    )
    assert kept.accuracy == pytest.approx(
        float(results[("effnet", "folder", "rotation", "ei")]["accuracy"])
    )
    unlabeled = invkit.load_outputs(finished, "linear", "unlabeled")
    assert unlabeled.accuracy is None and (unlabeled.targets == -1).all()


def test_rerun_reuses_everything_and_report_rerenders(study_dir, finished):
    rerun = run_cli("study", str(study_dir / "study.toml"), "--per-sample", "--no-progress")
    assert "0 cell(s) computed in 0 pass(es), 0 from kept outputs, 36 reused" in rerun.stdout
    (finished / "report.md").unlink()
    run_cli("report", str(finished))
    assert "## folder" in (finished / "report.md").read_text()


def test_changed_measure_or_new_analysis_recomputes_only_what_it_touches(
    study_dir, finished, tmp_path
):
    out = tmp_path / "copy"
    shutil.copytree(finished, out)
    config = load_config(study_dir / "study.toml")
    predict = ComponentEntry("predict_accuracy", "predict_accuracy")
    with_analysis = dataclasses.replace(config, analyses=(*config.analyses, predict))
    outcome = Study(with_analysis, out_dir=out, progress=False, echo=lambda _: None).run()
    assert (outcome.computed, outcome.passes, outcome.reused) == (0, 0, 36)
    assert "predict_accuracy" in json.loads((out / "analyses.json").read_text())
    with_l2 = dataclasses.replace(
        with_analysis, measures=(*config.measures, ComponentEntry("l2", "l2"))
    )
    outcome = Study(with_l2, out_dir=out, progress=False, echo=lambda _: None).run()
    assert (outcome.computed, outcome.passes, outcome.reused) == (12, 6, 36)
    assert len(read_results(out)) == 48


def test_class_subset_restricts_the_logits(study_dir, tmp_path):
    for label in "bde":
        write_images(tmp_path / "subset" / label, 3, seed=ord(label))
    config = parse_config(
        {
            "models": [{"name": "named", "spec": f"python:{study_dir / 'user_models.py'}:named"}],
            "datasets": [
                {
                    "name": "bde",
                    "spec": f"imagefolder:{tmp_path / 'subset'}",
                    "class_subset": "folders",
                }
            ],
            "transforms": ["grayscale"],
            "measures": ["ei"],
        }
    )
    Study(config, out_dir=tmp_path / "out", progress=False, echo=lambda _: None).run()
    [row] = read_results(tmp_path / "out").values()
    model = invkit.load_model(f"python:{study_dir / 'user_models.py'}:named")
    images = torch.cat([load_folder(tmp_path / "subset" / c) for c in "bde"])
    expected = direct(
        model, images, torch.tensor([0] * 3 + [1] * 3 + [2] * 3), logit_index=[1, 3, 4]
    )
    expected_ei = expected["values"][("grayscale", "ei")]
    assert float(row["value"]) == pytest.approx(expected_ei, abs=UINT8_RESIZE_TOLERANCE)
    assert float(row["accuracy"]) == pytest.approx(expected["accuracy"])
    unrestricted = direct(model, images, None)["values"][("grayscale", "ei")]
    assert abs(unrestricted - float(row["value"])) > 1e-3  # the restriction changes the value


SLOW_CONFIG = """
transforms = ["rotation"]
measures = ["ei", "js"]

[run]
batch_size = 16

[[models]]
name = "slow"
spec = "python:user_models.py:slow"
params = {{ kwargs = {{ seconds = {seconds} }} }}
preprocessing = {{ input_size = [3, 16, 16], crop_pct = 1.0 }}
{datasets}
"""


@pytest.mark.parametrize("kill_after", [2, 6])  # cells stored when killed: 1 pass, 3 passes
def test_killed_study_resumes_to_identical_results(study_dir, tmp_path, kill_after):
    datasets = "".join(
        f'\n[[datasets]]\nname = "d{i}"\nspec = "digits"\nparams = {{ size = 16 }}\n'
        f"limit = 48\nseed = {i}\n"
        for i in range(4)
    )
    shutil.copy(study_dir / "user_models.py", tmp_path / "user_models.py")
    slow = tmp_path / "slow.toml"
    slow.write_text(SLOW_CONFIG.format(seconds=0.3, datasets=datasets))
    invkit_bin = str(Path(sys.executable).with_name("invkit"))
    process = subprocess.Popen(
        [invkit_bin, "study", str(slow), "--out", str(tmp_path / "killed"), "--no-progress"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    store = tmp_path / "killed" / "results.sqlite"
    wait_for_cells(store, kill_after, process)
    assert process.poll() is None, process.stderr.read().decode()
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    (kept,) = sqlite3.connect(store).execute("SELECT COUNT(*) FROM cells").fetchone()
    assert kill_after <= kept < 8 and kept % 2 == 0  # whole passes only, 2 cells each
    resumed = run_cli("study", str(slow), "--out", str(tmp_path / "killed"), "--no-progress")
    assert f"{kept} reused" in resumed.stdout
    fast = tmp_path / "fast.toml"
    fast.write_text(SLOW_CONFIG.format(seconds=0.0, datasets=datasets))
    run_cli("study", str(fast), "--out", str(tmp_path / "clean"), "--no-progress")
    killed, clean = read_results(tmp_path / "killed"), read_results(tmp_path / "clean")
    assert set(killed) == set(clean) and len(killed) == 8
    for key in clean:
        assert killed[key]["value"] == clean[key]["value"]
        assert killed[key]["accuracy"] == clean[key]["accuracy"]
    (rows,) = sqlite3.connect(store).execute("SELECT COUNT(*) FROM cells").fetchone()
    assert rows == 8


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_study_on_cuda_matches_cpu(study_dir, tmp_path):
    config = load_config(study_dir / "study.toml")
    results = {}
    for device, amp in [("cpu", False), ("cuda", False), ("cuda", True)]:
        run = dataclasses.replace(config.run, device=device, amp=amp)
        out = tmp_path / f"{device}-{amp}"
        Study(dataclasses.replace(config, analyses=(), run=run), out_dir=out, progress=False,
              echo=lambda _: None).run()  # fmt: skip
        results[(device, amp)] = read_results(out)
    cpu = results[("cpu", False)]
    for key, row in cpu.items():
        for amp, tolerance in ((False, 1e-3), (True, 0.05)):
            gpu = results[("cuda", amp)][key]
            assert float(gpu["value"]) == pytest.approx(float(row["value"]), abs=tolerance), (
                key,
                amp,
            )
            if row["accuracy"]:
                assert float(gpu["accuracy"]) == pytest.approx(float(row["accuracy"]), abs=0.02)


def warning_study(folder: Path, models: list[tuple[str, str]]) -> tuple[list[str], Path]:
    shutil.copy(HERE / "study_files" / "user_models.py", folder / "user_models.py")
    text = 'transforms = ["rotation"]\nmeasures = ["ei"]\n[run]\ndevice = "cpu"\n'
    for name, spec in models:
        text += f'[[models]]\nname = "{name}"\n{spec}\n'
        text += "preprocessing = { input_size = [3, 16, 16], crop_pct = 1.0 }\n"
    text += '[[datasets]]\nname = "d"\nspec = "digits"\nparams = { size = 16 }\nlimit = 40\n'
    (folder / "study.toml").write_text(text)
    lines: list[str] = []
    config = load_config(folder / "study.toml")
    Study(config, out_dir=folder / "out", progress=False, echo=lines.append).run()
    return [line for line in lines if line.startswith("invkit: warning:")], folder / "out"


def test_random_weights_and_one_accuracy_for_every_model_are_warned_of(tmp_path):
    random = 'spec = "timm:test_efficientnet"\nparams = { pretrained = false, num_classes = 10 }'
    (tmp_path / "a").mkdir()
    warned, out = warning_study(
        tmp_path / "a", [("random", random), ("linear", 'spec = "python:user_models.py:linear"')]
    )
    assert any("1 model(s) use random weights (random)" in line for line in warned)
    report = (out / "report.md").read_text()
    assert "**Warning:** 1 model(s) use random weights (random): their accuracy is chance" in report
    models = {row["model"]: row for row in csv.DictReader((out / "models.csv").open())}
    assert (models["random"]["random_weights"], models["linear"]["random_weights"]) == (
        "True",
        "False",
    )
    (tmp_path / "b").mkdir()
    constant = 'spec = "python:user_models.py:constant"'
    warned, out = warning_study(tmp_path / "b", [("c1", constant), ("c2", constant)])
    accuracy = float(next(csv.DictReader((out / "results.csv").open()))["accuracy"])
    same = f"every model has the same accuracy ({accuracy:.4f}) on d"
    assert 0 < accuracy < 0.5  # the share of digit 0: both models always say 0
    assert any(same in line for line in warned) and same in (out / "report.md").read_text()
    assert not any("random weights" in line for line in warned)
