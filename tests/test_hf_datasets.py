"""Hugging Face datasets through ``hf:``: a real dataset built from scikit-learn's digits with
the ``datasets`` library and saved to disk, its ClassLabel names matched to a model's classes."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import datasets
import numpy as np
import pytest
from PIL import Image
from sklearn.datasets import load_digits

import invkit
from invkit.config import load_config
from invkit.run.study import Study

from .conftest import HERE

NAMES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> Path:
    """60 real digits as a saved DatasetDict (train and test splits), labels as a ClassLabel."""
    digits = load_digits()
    images = [
        Image.fromarray((d * 255 / 16).astype(np.uint8)).convert("RGB") for d in digits.images
    ]
    features = datasets.Features(
        {"image": datasets.Image(), "label": datasets.ClassLabel(names=NAMES)}
    )
    table = {"image": images[:60], "label": [int(t) for t in digits.target[:60]]}
    data = datasets.Dataset.from_dict(table, features=features)
    folder = tmp_path_factory.mktemp("hf") / "digits"
    datasets.DatasetDict(
        {"train": data.select(range(40)), "test": data.select(range(40, 60))}
    ).save_to_disk(str(folder))
    return folder


def test_a_saved_dataset_opens_with_its_class_names(saved):
    test = invkit.load_dataset(f"hf:{saved}", split="test")
    assert len(test) == 20 and test.classes == NAMES
    image, label = test[3]
    assert image.size == (8, 8) and label == int(load_digits().target[43])
    with pytest.raises(invkit.InvkitError, match="has the splits train, test; choose one"):
        invkit.load_dataset(f"hf:{saved}")
    with pytest.raises(invkit.InvkitError, match="no column 'pixels'.*its columns: image, label"):
        invkit.load_dataset(f"hf:{saved}", split="test", image_column="pixels")
    unlabeled = invkit.load_dataset(f"hf:{saved}", split="test", label_column="")
    assert unlabeled[0][1] == -1


def test_a_study_on_a_saved_dataset_matches_classes_by_name(saved, tmp_path):
    shutil.copy(HERE / "study_files" / "user_models.py", tmp_path / "user_models.py")
    shutil.copytree(saved, tmp_path / "digits")
    config = tmp_path / "study.toml"
    config.write_text(
        'transforms = ["rotation"]\nmeasures = ["ei"]\n[run]\ndevice = "cpu"\n'
        '[[models]]\nname = "named"\nspec = "python:user_models.py:named_digits"\n'
        "preprocessing = { input_size = [3, 16, 16], crop_pct = 1.0 }\n"
        '[[datasets]]\nname = "hf-digits"\nspec = "hf:digits"\nparams = { split = "test" }\n'
    )
    outcome = Study(load_config(config), out_dir=tmp_path / "out", progress=False).run()
    assert not outcome.failures
    [row] = list(csv.DictReader((tmp_path / "out" / "results.csv").open()))
    assert row["matching"] == "by name" and row["images"] == "20"
    from invkit.inputs.classes import plan_labels

    model = invkit.load_model(f"python:{tmp_path / 'user_models.py'}:named_digits")
    plan = plan_labels(NAMES, model.preprocessing)
    assert plan.targets == (1, 3, 5, 0, 7, 9, 8, 6, 4, 2)  # "zero" is the model's output 1


def test_a_hub_dataset_that_is_not_cached_offline_says_so(monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    with pytest.raises(invkit.InvkitError, match="cannot open hf:nobody/no-such-set"):
        invkit.load_dataset("hf:nobody/no-such-set", split="test")


def test_a_folder_of_parquet_files_opens_as_load_dataset_reads_it(saved, tmp_path):
    test = datasets.load_from_disk(str(saved))["test"]
    (tmp_path / "files" / "data").mkdir(parents=True)
    test.to_parquet(str(tmp_path / "files" / "data" / "test-00000.parquet"))
    opened = invkit.load_dataset(f"hf:{tmp_path / 'files'}", split="test")
    assert len(opened) == 20 and opened.classes == NAMES
    assert [opened[i][1] for i in range(20)] == list(test["label"])


OUTSIDE_README = """---
configs:
- config_name: default
  data_files:
  - split: test
    path: "../outside/test.parquet"
---
"""


def test_a_folder_reading_files_outside_it_is_fingerprinted_by_them_and_never_stale(
    saved, tmp_path, monkeypatch
):
    from invkit.builtins.hf_datasets import _fingerprint

    monkeypatch.setenv("INVKIT_CACHE_DIR", str(tmp_path / "invkit-cache"))
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf-cache"))
    test = datasets.load_from_disk(str(saved))["test"]
    (tmp_path / "folder").mkdir()
    (tmp_path / "outside").mkdir()
    (tmp_path / "folder" / "README.md").write_text(OUTSIDE_README)
    test.to_parquet(str(tmp_path / "outside" / "test.parquet"))
    folder = str(tmp_path / "folder")
    before = _fingerprint(folder)
    assert [label for _, label in invkit.load_dataset(f"hf:{folder}", split="test")] == list(
        test["label"]
    )
    relabeled = test.map(lambda row: {"label": (row["label"] + 1) % 10})
    relabeled.to_parquet(str(tmp_path / "outside" / "test.parquet"))  # the file outside, edited
    assert _fingerprint(folder) != before
    opened = invkit.load_dataset(f"hf:{folder}", split="test")
    assert [label for _, label in opened] == list(relabeled["label"])  # not the old Arrow copy
    assert not (tmp_path / "hf-cache").exists() or not any((tmp_path / "hf-cache").rglob("*.arrow"))
    assert len(list((tmp_path / "invkit-cache" / "hf").iterdir())) == 2  # one copy per content


def test_labels_and_images_that_are_not_what_a_study_reads_are_refused(saved, tmp_path):
    test = datasets.load_from_disk(str(saved))["test"]
    cases = {
        "fraction": (
            test.cast_column("label", datasets.Value("float64")).map(
                lambda row, i: {"label": 3.7 if i == 4 else row["label"]}, with_indices=True
            ),
            r"label column 'label' holds 3.7 in row 4, which is not a class index",
        ),
        "missing": (
            test.cast_column("label", datasets.Value("int64")).map(
                lambda row, i: {"label": None if i == 2 else row["label"]}, with_indices=True
            ),
            r"label column 'label' has no label in row 2; label every image",
        ),
        "paths": (
            test.map(
                lambda row, i: {"image": f"images/{i}.png"},
                with_indices=True,
                features=datasets.Features(
                    {"image": datasets.Value("string"), "label": test.features["label"]}
                ),
            ),
            r"column 'image' holds Value\('string'\), not images",
        ),
    }
    for name, (data, message) in cases.items():
        (tmp_path / name).mkdir()
        data.to_parquet(str(tmp_path / name / "test-00000.parquet"))
        with pytest.raises(invkit.InvkitError, match=message):
            invkit.load_dataset(f"hf:{tmp_path / name}", split="test")
    whole = test.cast_column("label", datasets.Value("float64"))  # 3.0: a class index still
    (tmp_path / "whole").mkdir()
    whole.to_parquet(str(tmp_path / "whole" / "test-00000.parquet"))
    opened = invkit.load_dataset(f"hf:{tmp_path / 'whole'}", split="test")
    assert [label for _, label in opened] == list(test["label"])
