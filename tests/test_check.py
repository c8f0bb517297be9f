"""Fail before the work: `invkit check` finds every problem of a study at once, `invkit study`
stops before writing anything when its config is wrong, and messages name the fix."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from PIL import Image
from safetensors.torch import save_file

from invkit.config import ConfigError, load_config, parse_config
from invkit.errors import InvkitError

from .conftest import HERE, run_cli, study_with


def png_folder(root: Path, classes: list[str], per_class: int = 2) -> None:
    rng = np.random.default_rng(0)
    for name in classes:
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            pixels = rng.integers(0, 256, size=(16, 16, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / name / f"{i}.png")


def test_one_check_reports_eight_different_mistakes_in_eight_lines(tmp_path):
    model = timm.create_model("resnet18", num_classes=10)
    weights = {k: v.contiguous() for k, v in model.state_dict().items()}
    save_file(weights, str(tmp_path / "r10.safetensors"))
    png_folder(tmp_path / "pets", ["cat", "dog"])
    (tmp_path / "study.toml").write_text(
        """
transforms = ["rotation"]
measures = ["EI"]                               # 1: the measure is called ei
measure = ["ei"]                                # 6: a typo of a key

[run]
batchsize = 8                                   # 7: a typo of a key

[[models]]
name = "forgot-classes"
spec = "timm:resnet18"
params = { weights = "r10.safetensors" }       # 2: weights of 10 classes, no num_classes

[[models]]
name = "fresh"
spec = "timm:resnet18"
params = { pretrained = false, num_classes = 10 }

[[models]]
name = "no-weights"
spec = "timm:resnet18"
params = { weights = "missing.safetensors" }   # 3: no such file

[[datasets]]
name = "gone"
spec = "imagefolder:no-such-folder"            # 4: no such folder

[[datasets]]
name = "pets"
spec = "imagefolder:pets"                      # 5: 2 folders, 10 outputs, no names

[[datasets]]
name = "mapped"
spec = "imagefolder:pets"
clas_map = "classes.txt"                       # 8: a typo of a key
"""
    )
    result = run_cli("check", str(tmp_path / "study.toml"), "--no-progress", check=False)
    assert result.returncode == 1
    lines = [line for line in result.stderr.splitlines() if line.startswith("  - ")]
    assert len(lines) == 8, result.stderr
    assert "invkit: error: 8 problems in the config:" in result.stderr
    expected = [
        "config: unknown key 'measure'; did you mean 'measures'?",
        "run: unknown key 'batchsize'; did you mean 'batch_size'?",
        "datasets[2]: unknown key 'clas_map'; did you mean 'class_map'?",
        "measures['EI']: unknown measure 'EI': did you mean 'ei'?",
        "models['no-weights']: params.weights: '" + str(tmp_path / "missing.safetensors"),
        "datasets['gone']: imagefolder:" + str(tmp_path / "no-such-folder") + " names a path",
        "model 'forgot-classes': checkpoint '" + str(tmp_path / "r10.safetensors"),
        "fresh × pets: cannot tell which model output each class folder is",
    ]
    for text in expected:
        assert any(text in line for line in lines), (text, lines)
    assert "set params.num_classes = 10" in result.stderr  # the right models were loaded
    assert not (tmp_path / "invkit-results").exists()  # nothing written
    study = run_cli("study", str(tmp_path / "study.toml"), "--no-progress", check=False)
    assert study.returncode == 1 and "6 problems in the config:" in study.stderr  # no loading
    assert all(text in study.stderr for text in expected[:4])


def test_study_stops_before_writing_anything_when_the_config_is_wrong(tmp_path):
    config = study_with(tmp_path, "linear")
    config.write_text(config.read_text().replace('spec = "digits"', 'spec = "imagefolder:nope"'))
    result = run_cli("study", str(config), "--no-progress", check=False)
    assert result.returncode == 1 and "imagefolder:" in result.stderr
    assert "names a path that does not exist" in result.stderr
    assert not (tmp_path / "invkit-results").exists()


def test_check_passes_a_good_study_and_decodes_every_image_when_asked(tmp_path):
    config = study_with(tmp_path, "linear")
    png_folder(tmp_path / "set", [str(i) for i in range(3)], per_class=3)
    digits = 'spec = "digits"\nparams = { size = 16 }'
    config.write_text(config.read_text().replace(digits, 'spec = "imagefolder:set"'))
    good = run_cli("check", str(config), "--images", "--no-progress")
    assert "invkit: check passed: 1 model(s) loaded and 1 dataset(s) opened" in good.stdout
    assert "every image decoded" in good.stdout
    assert "model 'linear': 10 outputs, input 3×16×16" in good.stderr
    assert "the config runs this code: python:" in good.stderr
    for name in ("1/0.png", "2/1.png"):
        (tmp_path / "set" / name).write_bytes(b"not a png")
    bad = run_cli("study", str(config), "--check", "--no-progress", check=False)
    assert bad.returncode == 0  # --check without --images opens the folders, decodes nothing
    bad = run_cli("check", str(config), "--images", "--no-progress", check=False)
    assert bad.returncode == 1
    assert "dataset 'd0': 2 unreadable image(s): " in bad.stderr
    assert "1/0.png (" in bad.stderr and "2/1.png (" in bad.stderr
    assert not (tmp_path / "invkit-results").exists()


def test_a_subset_of_passes_runs_into_the_same_store_and_a_smoke_run_stores_nothing(tmp_path):
    config = study_with(tmp_path, "linear,other_linear", datasets=2)
    smoke = run_cli("study", str(config), "--limit", "5", "--models", "linear", "--no-progress")
    assert "smoke run of 2 pass(es) on at most 5 image(s) per dataset" in smoke.stderr
    assert "linear × d0: 5 images" in smoke.stderr
    assert re.search(r"  rotation ei: [0-9.]+ to [0-9.]+ over 2 cell\(s\)", smoke.stderr)
    assert "linear × d1 rotation ei" not in smoke.stderr  # a line per transform × measure
    assert not (tmp_path / "invkit-results").exists()
    subset = run_cli(
        "study", str(config), "--models", "linear", "--datasets", "d0", "--no-progress"
    )
    assert "1 cell(s) computed in 1 pass(es), 0 from kept outputs, 0 reused" in subset.stdout
    full = run_cli("study", str(config), "--no-progress")
    assert (
        "3 cell(s) computed in 3 pass(es), 0 from kept outputs, 1 reused" in full.stdout
    )  # same fingerprints
    wrong = run_cli("study", str(config), "--models", "lineer", check=False)
    assert wrong.returncode == 1
    assert "--models names 'lineer', which the config does not list; its models: linear" in (
        wrong.stderr
    )


def test_many_models_share_params_and_check_names_every_bad_one_at_once(tmp_path):
    (tmp_path / "models.txt").write_text(
        "# the paper's population, one timm spec per line\n"
        "timm:test_efficientnet\n"
        "timm:resnet1800   # a typo\n"
        "\n"
        "timm:test_vitt  # another\n"
    )
    config = tmp_path / "study.toml"
    config.write_text(
        'transforms = ["rotation"]\nmeasures = ["ei"]\n[run]\ndevice = "cpu"\n'
        '[[models]]\nspecs_file = "models.txt"\nparams = { pretrained = false }\n'
        "preprocessing = { input_size = [3, 16, 16], crop_pct = 1.0 }\n"
        '[[models]]\nspecs = ["timm:test_resnet"]\nparams = { pretrained = false }\n'
        '[[datasets]]\nname = "d"\nspec = "digits"\nlimit = 4\n'
    )
    parsed = load_config(config)
    assert [m.name for m in parsed.models] == [
        "timm:test_efficientnet", "timm:resnet1800", "timm:test_vitt", "timm:test_resnet"
    ]  # fmt: skip
    assert {str(m.params) for m in parsed.models} == {"{'pretrained': False}"}
    assert parsed.models[0].preprocessing == {"input_size": [3, 16, 16], "crop_pct": 1.0}
    assert parsed.models[3].preprocessing == {}
    result = run_cli("check", str(config), check=False)
    assert result.returncode == 1
    output = result.stdout + result.stderr
    assert "timm has no model 'resnet1800'" in output and "timm has no model 'test_vitt'" in output
    both = tmp_path / "both.toml"
    both.write_text(
        config.read_text().replace(
            'specs_file = "models.txt"', 'specs_file = "models.txt"\nspec = "timm:x"'
        )
    )
    with pytest.raises(ConfigError, match="gives spec and specs_file; keep one"):
        load_config(both)


def test_a_specs_file_is_read_only_when_it_is_a_small_regular_file(tmp_path):
    def parse(path: str):
        return parse_config(
            {
                "models": [{"specs_file": path}],
                "datasets": ["digits"],
                "transforms": ["rotation"],
                "measures": ["ei"],
            },
            base_dir=tmp_path,
        )

    with pytest.raises(ConfigError, match="specs_file: '/dev/zero' is not a regular file"):
        parse("/dev/zero")
    os.mkfifo(tmp_path / "fifo")  # reading it would wait for a writer for ever
    with pytest.raises(ConfigError, match="fifo' is not a regular file"):
        parse("fifo")
    (tmp_path / "huge.txt").write_bytes(b"timm:resnet18\n" * 400_000)
    with pytest.raises(ConfigError, match="holds 5,600,000 bytes, more than the 4,194,304"):
        parse("huge.txt")
    (tmp_path / "two.txt").write_text("timm:resnet18\n# a comment\ntimm:resnet34\n")
    assert [m.spec for m in parse("two.txt").models] == ["timm:resnet18", "timm:resnet34"]


class _Net(torch.nn.Module):
    def __init__(self, body: str, classes: int):
        super().__init__()
        setattr(self, body, torch.nn.Linear(8, 4))
        self.fc = torch.nn.Linear(4, classes)


def test_num_classes_is_suggested_only_when_the_classifier_alone_differs(tmp_path):
    from invkit.inputs.checkpoints import load_into

    save_file(_Net("body", 10).state_dict(), str(tmp_path / "same.safetensors"))
    save_file(_Net("stem", 10).state_dict(), str(tmp_path / "other.safetensors"))
    with pytest.raises(InvkitError, match="set params.num_classes = 10"):
        load_into(_Net("body", 1000), tmp_path / "same.safetensors")
    with pytest.raises(InvkitError, match="check that the checkpoint belongs") as raised:
        load_into(_Net("body", 1000), tmp_path / "other.safetensors")  # another architecture
    assert "num_classes = 10" not in str(raised.value)


def test_check_loads_every_right_model_when_other_entries_are_wrong(tmp_path):
    shutil.copy(HERE / "study_files" / "user_models.py", tmp_path / "user_models.py")
    torch.manual_seed(0)
    linear = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 16 * 16, 10))
    save_file(linear.state_dict(), str(tmp_path / "linear.safetensors"))
    size = "preprocessing = { input_size = [3, 16, 16], crop_pct = 1.0 }"
    (tmp_path / "study.toml").write_text(
        'transforms = ["rotaton"]\nmeasures = ["eii"]\n'
        f'[[models]]\nname = "missing"\nspec = "python:user_models.py:linear"\n{size}\n'
        'params = { checkpoint = "missing.safetensors" }\n'
        f'[[models]]\nname = "misfit"\nspec = "python:user_models.py:conv"\n{size}\n'
        'params = { checkpoint = "linear.safetensors" }\n'
        '[[datasets]]\nname = "d"\nspec = "digts"\n'
    )
    result = run_cli("check", str(tmp_path / "study.toml"), "--no-progress", check=False)
    assert result.returncode == 1 and "5 problems in the config" in result.stderr, result.stderr
    for text in ("unknown transform 'rotaton'", "unknown measure 'eii'", "digts",
                 "missing.safetensors", "model 'misfit': checkpoint"):  # fmt: skip
        assert text in result.stderr, text
