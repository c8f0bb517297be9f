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
    from invkit.classes import plan_labels

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
