"""Real checkpoints and folders as users have them: 1-channel models trained here on real digits,
PNG folders named by class index (with gaps), and class matching that never guesses."""

from __future__ import annotations

import csv
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from PIL import Image
from safetensors.torch import save_file
from sklearn.datasets import load_digits

import invkit
from invkit.config import ConfigError, load_config
from invkit.inputs.classes import plan_labels
from invkit.run.study import Study

from .conftest import run_cli

HERE = Path(__file__).parent
PER_CLASS = 6


def gray_models():
    sys.path.insert(0, str(HERE / "study_files"))
    try:
        import gray_models

        return gray_models
    finally:
        sys.path.pop(0)


def digit_images() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's real digits as 16×16 uint8 grayscale images."""
    digits = load_digits()
    images = torch.from_numpy(digits.images / 16.0).float().unsqueeze(1)
    big = torch.nn.functional.interpolate(images, size=(16, 16), mode="bilinear").clamp(0, 1)
    return (big[:, 0].numpy() * 255).round().astype(np.uint8), digits.target


def train_gray_cnn(images: np.ndarray, targets: np.ndarray) -> torch.nn.Module:
    """A 1-channel CNN trained for a few seconds on the digits the study will not see."""
    torch.manual_seed(0)
    model = gray_models().cnn()
    x = (torch.from_numpy(images).float()[:, None] / 255 - 0.5) / 0.5
    y = torch.from_numpy(targets).long()
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    for _ in range(60):
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()
    return model.eval()


@pytest.fixture(scope="module")
def gray_study(tmp_path_factory) -> Path:
    """A trained 1-channel checkpoint, PNG folders of held-out digits, and the model file."""
    root = tmp_path_factory.mktemp("gray")
    images, targets = digit_images()
    held_out = np.concatenate([np.flatnonzero(targets == c)[:PER_CLASS] for c in range(10)])
    train = np.setdiff1d(np.arange(len(targets)), held_out)
    model = train_gray_cnn(images[train], targets[train])
    torch.save(model.state_dict(), root / "cnn.pt")
    shutil.copy(HERE / "study_files" / "gray_models.py", root / "gray_models.py")
    for index in held_out:
        folder = root / "digits" / str(targets[index])
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(images[index]).save(folder / f"{index}.png")
    for label in (0, 1, 3, 5, 6, 7, 8, 9):  # classes 2 and 4 absent, as in a small sample
        shutil.copytree(root / "digits" / str(label), root / "gaps" / str(label))
    return root


def write_config(root: Path, model: str, dataset: str, transforms: str = '["rotation"]') -> Path:
    path = root / f"{abs(hash((model, dataset, transforms)))}.toml"
    path.write_text(
        f'transforms = {transforms}\nmeasures = ["ei"]\n\n[run]\nbatch_size = 64\n'
        f'device = "cpu"\n\n[[models]]\n{model}\n\n[[datasets]]\n{dataset}\n'
    )
    return path


GRAY_MODEL = """name = "gray"
spec = "python:gray_models.py:cnn"
params = { checkpoint = "cnn.pt" }
preprocessing = { input_size = [1, 16, 16], crop_pct = 1.0, mean = [0.5], std = [0.5] }"""


def direct(model: torch.nn.Module, folder: Path, mean: float, std: float) -> tuple[float, float]:
    """Rotation EI and accuracy computed here by hand: PIL pixels, np.rot90 views, one forward
    of the same stack the engine makes, float64 softmax, EI = sqrt(p·p_t) when classes agree."""
    files = sorted(folder.glob("*/*.png"), key=lambda p: (p.parent.name, p.name))
    pixels = np.stack([np.asarray(Image.open(p), dtype=np.float32) / 255 for p in files])
    labels = np.array([int(p.parent.name) for p in files])
    views = [pixels] + [np.rot90(pixels, k, axes=(1, 2)).copy() for k in (1, 2, 3)]
    stacked = torch.from_numpy(np.concatenate(views))[:, None]
    with torch.no_grad():
        probs = model((stacked - mean) / std).double().softmax(dim=1).numpy()
    probs = probs.reshape(4, len(files), -1)
    top, arg = probs.max(axis=2), probs.argmax(axis=2)
    ei = [np.where(arg[v] == arg[0], np.sqrt(top[0] * top[v]), 0.0) for v in (1, 2, 3)]
    return float(np.mean(np.mean(ei, axis=0))), float(np.mean(arg[0] == labels))


def cell(out: Path) -> dict[str, str]:
    with (out / "results.csv").open() as handle:
        [row] = list(csv.DictReader(handle))
    return row


def test_one_channel_python_model_on_png_folders_equals_direct_computation(gray_study):
    config = write_config(gray_study, GRAY_MODEL, 'name = "digits"\nspec = "imagefolder:digits"')
    result = run_cli("study", str(config), "--out", str(gray_study / "out1"), "--no-progress")
    assert "classes by index" in result.stderr
    model = gray_models().cnn()
    model.load_state_dict(torch.load(gray_study / "cnn.pt"))
    ei, accuracy = direct(model.eval(), gray_study / "digits", 0.5, 0.5)
    row = cell(gray_study / "out1")
    assert abs(float(row["value"]) - ei) < 1e-9
    assert abs(float(row["accuracy"]) - accuracy) < 1e-9
    assert accuracy > 0.8  # a real model on real digits, not chance
    assert row["matching"] == "by index" and row["images"] == str(10 * PER_CLASS)


def test_integer_folders_with_gaps_are_class_indices(gray_study):
    config = write_config(gray_study, GRAY_MODEL, 'name = "gaps"\nspec = "imagefolder:gaps"')
    Study(load_config(config), out_dir=gray_study / "out2", progress=False, echo=print).run()
    model = gray_models().cnn()
    model.load_state_dict(torch.load(gray_study / "cnn.pt"))
    ei, accuracy = direct(model.eval(), gray_study / "gaps", 0.5, 0.5)
    row = cell(gray_study / "out2")
    assert abs(float(row["accuracy"]) - accuracy) < 1e-9 and accuracy > 0.8
    assert abs(float(row["value"]) - ei) < 1e-9
    # matched by position, folder 3 would have been output 2: a much lower accuracy
    assert row["matching"] == "by index"


def test_timm_model_with_one_input_channel_runs_end_to_end(gray_study, tmp_path):
    torch.manual_seed(3)
    reference = timm.create_model("test_efficientnet", in_chans=1, num_classes=10).eval()
    save_file(
        {k: v.contiguous() for k, v in reference.state_dict().items()},
        str(gray_study / "effnet1.safetensors"),
    )
    spec = 'spec = "timm:test_efficientnet"\n'
    spec += 'params = { weights = "effnet1.safetensors", num_classes = 10, in_chans = 1 }\n'
    dataset = 'name = "digits"\nspec = "imagefolder:digits"'
    no_override = write_config(gray_study, 'name = "e"\n' + spec, dataset)
    expected = r"model 'e': preprocessing.mean has 3 value\(s\) but the model takes 1 channel"
    with pytest.raises(ConfigError, match=expected):  # timm keeps ImageNet's 3 values
        Study(load_config(no_override), out_dir=tmp_path / "a", progress=False).run()
    override = "{ input_size = [1, 16, 16], crop_pct = 1.0, mean = [0.4], std = [0.3] }"
    model = 'name = "e"\n' + spec + f"preprocessing = {override}"
    config = write_config(gray_study, model, dataset)
    outcome = Study(load_config(config), out_dir=tmp_path / "b", progress=False).run()
    assert not outcome.failures
    ei, accuracy = direct(reference, gray_study / "digits", 0.4, 0.3)
    row = cell(tmp_path / "b")
    assert abs(float(row["value"]) - ei) < 1e-9
    assert abs(float(row["accuracy"]) - accuracy) < 1e-9


def test_grayscale_on_a_one_channel_model_is_refused_before_any_forward_pass(gray_study, tmp_path):
    dataset = 'name = "digits"\nspec = "imagefolder:digits"'
    config = write_config(gray_study, GRAY_MODEL, dataset, '["rotation", "grayscale"]')
    with pytest.raises(ConfigError, match="transform 'grayscale' needs 3-channel images, but "
                       "model 'gray' takes 1 channel.*already gray"):  # fmt: skip
        Study(load_config(config), out_dir=tmp_path / "x", progress=False)
    assert not (tmp_path / "x").exists()
    # channels known only once the model is loaded: refused then, before its first batch
    loaded = 'name = "own"\nspec = "python:gray_models.py:gray_loaded"'
    config = write_config(gray_study, loaded, dataset, '["rotation", "grayscale"]')
    with pytest.raises(ConfigError, match="transform 'grayscale' needs 3-channel images, but "
                       "model 'own'"):  # fmt: skip
        Study(load_config(config), out_dir=tmp_path / "y", progress=False).run()
    assert not (tmp_path / "y" / "results.sqlite").exists()  # before any forward pass


def test_mean_and_std_must_match_the_channel_count(gray_study):
    model = GRAY_MODEL.replace("mean = [0.5]", "mean = [0.5, 0.5, 0.5]")
    config = write_config(gray_study, model, 'name = "d"\nspec = "imagefolder:digits"')
    expected = r"models\[0\] \('gray'\): preprocessing.mean has 3 value\(s\) but the model takes 1"
    with pytest.raises(ConfigError, match=expected):
        load_config(config)


def test_position_is_used_only_when_the_counts_are_equal(gray_study, tmp_path):
    for name in ("cat", "dog"):
        shutil.copytree(gray_study / "digits" / "0", tmp_path / "two" / name)
    shutil.copy(gray_study / "gray_models.py", tmp_path)
    shutil.copy(gray_study / "cnn.pt", tmp_path)
    config = write_config(tmp_path, GRAY_MODEL, 'name = "two"\nspec = "imagefolder:two"')
    result = run_cli("study", str(config), "--no-progress", check=False)
    assert result.returncode == 1
    message = result.stderr
    assert "the dataset has 2 folder(s) (cat, dog), the model has 10 outputs" in message
    assert 'class_map = "classes.txt"' in message and "cat 0" in message
    assert 'class_subset = "folders"' in message
    # ten folders for ten outputs: position is unambiguous, and the log says it was used
    for i, name in enumerate("abcdefghij"):
        shutil.copytree(gray_study / "digits" / str(i), tmp_path / "ten" / name)
    config = write_config(tmp_path, GRAY_MODEL, 'name = "ten"\nspec = "imagefolder:ten"')
    result = run_cli("study", str(config), "--out", str(tmp_path / "o"), "--no-progress")
    assert "classes by position" in result.stderr
    assert cell(tmp_path / "o")["matching"] == "by position"


def test_more_outputs_than_folders_needs_an_explicit_mapping(gray_study, tmp_path):
    torch.manual_seed(0)
    model = timm.create_model("test_efficientnet", num_classes=100)
    weights = {k: v.contiguous() for k, v in model.state_dict().items()}
    save_file(weights, str(tmp_path / "w.safetensors"))
    for i, name in enumerate("abcdefghij"):
        shutil.copytree(gray_study / "digits" / str(i), tmp_path / "ten" / name)
    spec = (
        'name = "t100"\nspec = "timm:test_efficientnet"\n'
        'params = { weights = "w.safetensors", num_classes = 100 }\n'
        "preprocessing = { input_size = [3, 16, 16], crop_pct = 1.0 }"
    )
    config = write_config(tmp_path, spec, 'name = "ten"\nspec = "imagefolder:ten"')
    with pytest.raises(ConfigError, match=r"10 folder\(s\) \(a, b, c.*100 outputs"):
        Study(load_config(config), progress=False).run()
    (tmp_path / "classes.txt").write_text("".join(f"{n} {i}\n" for i, n in enumerate("abcdefghij")))
    dataset = (
        'name = "ten"\nspec = "imagefolder:ten"\nclass_map = "classes.txt"\n'
        'class_subset = "folders"'
    )
    config = write_config(tmp_path, spec, dataset)
    outcome = Study(load_config(config), out_dir=tmp_path / "ok", progress=False).run()
    assert not outcome.failures and cell(tmp_path / "ok")["matching"] == "class_map"


def imagenet_model(tmp_path: Path) -> str:
    """A timm ImageNet model (1,000 outputs named by WordNet id) with weights the test wrote."""
    torch.manual_seed(0)
    model = timm.create_model("test_efficientnet", pretrained=False)
    weights = {k: v.contiguous() for k, v in model.state_dict().items()}
    save_file(weights, str(tmp_path / "imagenet.safetensors"))
    return (
        'name = "net"\nspec = "timm:test_efficientnet"\n'
        'params = { weights = "imagenet.safetensors" }\n'
        "preprocessing = { input_size = [3, 16, 16], crop_pct = 1.0 }"
    )


def test_imagenet_v2_integer_folders_match_a_timm_model_by_index(gray_study, tmp_path):
    for folder in ("0", "7", "512", "999"):  # a subset with gaps, as ImageNet-V2 names them
        shutil.copytree(gray_study / "digits" / str(int(folder) % 10), tmp_path / "v2" / folder)
    config = write_config(
        tmp_path, imagenet_model(tmp_path), 'name = "v2"\nspec = "imagefolder:v2"'
    )
    result = run_cli("study", str(config), "--out", str(tmp_path / "o"), "--no-progress")
    assert "(classes by index)" in result.stderr
    assert cell(tmp_path / "o")["matching"] == "by index"
    loaded = invkit.load_model(
        "timm:test_efficientnet", weights=str(tmp_path / "imagenet.safetensors")
    )
    assert loaded.preprocessing.class_names[7] == "n01514668"  # the model does have names
    plan = plan_labels(["0", "512", "7", "999"], loaded.preprocessing)
    assert plan.targets == (0, 512, 7, 999) and plan.method == "by index"


def test_all_1000_imagenet_v2_folders_match_by_index(tmp_path):
    pixel = Image.new("RGB", (4, 4), (128, 64, 32))
    for index in range(1000):
        (tmp_path / "v2" / str(index)).mkdir(parents=True)
        pixel.save(tmp_path / "v2" / str(index) / "a.png")
    data = invkit.load_dataset(f"imagefolder:{tmp_path / 'v2'}")
    model = invkit.load_model("timm:test_efficientnet", pretrained=False)
    plan = plan_labels(data.classes, model.preprocessing)
    assert plan.method == "by index" and len(data.classes) == 1000
    assert [plan.targets[data.classes.index(str(i))] for i in range(1000)] == list(range(1000))


def test_folders_matching_no_class_name_show_the_class_map_lines_that_would_fix_it():
    model = invkit.load_model("timm:test_efficientnet", pretrained=False)
    with pytest.raises(invkit.InvkitError) as caught:
        plan_labels(["n01440764", "n0144376", "tench"], model.preprocessing, context="net × d")
    message = str(caught.value)
    assert "net × d: 2 dataset class(es) match no class of the model" in message
    assert 'class_map = "classes.txt"' in message
    suggested = dict(line.split() for line in message.splitlines()[1:])
    assert set(suggested) == {"n0144376", "tench"}  # a line per unmatched folder shown
    assert set(suggested.values()) <= set(model.preprocessing.class_names)
    mixed = ["0", "n01440764"]  # not all whole numbers: by name, and "0" is no class name
    with pytest.raises(invkit.InvkitError, match="1 dataset class"):
        plan_labels(mixed, model.preprocessing)


def test_missing_weights_are_found_at_once_for_every_model(tmp_path):
    config = tmp_path / "study.toml"
    config.write_text(
        'transforms = ["rotation"]\nmeasures = ["ei"]\n[run]\ndevice = "cpu"\n'
        '[[models]]\nname = "r18"\nspec = "timm:resnet18"\n'
        '[[models]]\nname = "eff"\nspec = "timm:test_efficientnet"\n'
        '[[datasets]]\nname = "d"\nspec = "digits"\nlimit = 4\n'
    )
    env = {"HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf"), "TORCH_HOME": str(tmp_path)}
    result = run_cli("check", str(config), env=env, check=False)
    assert result.returncode == 1
    output = result.stdout + result.stderr
    for spec, hub in (
        ("resnet18", "resnet18.a1_in1k"),
        ("test_efficientnet", "test_efficientnet.r160_in1k"),
    ):
        assert f"timm:{spec} would download its weights from hf-hub:timm/{hub}" in output
    assert output.count("HF_HUB_OFFLINE is set") == 2


def test_weights_in_the_local_hub_cache_load_offline(tmp_path):
    torch.manual_seed(3)
    model = timm.create_model("test_efficientnet", pretrained=False)
    snapshot = tmp_path / "hub" / "models--timm--test_efficientnet.r160_in1k" / "snapshots" / "abc"
    snapshot.mkdir(parents=True)
    save_file(
        {k: v.contiguous() for k, v in model.state_dict().items()}, snapshot / "model.safetensors"
    )
    (snapshot.parents[1] / "refs").mkdir()
    (snapshot.parents[1] / "refs" / "main").write_text("abc")
    code = (
        "import invkit, torch\n"
        "loaded = invkit.load_model('timm:test_efficientnet')\n"
        "print(float(next(loaded.module.parameters()).sum()))\n"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(tmp_path / "hub")}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    expected = float(next(model.parameters()).detach().sum())
    assert float(done.stdout) == pytest.approx(expected, rel=1e-6)
