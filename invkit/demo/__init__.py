"""The embedded demo: a population of small models trained on scikit-learn's digits, and a
study of their rotation and grayscale invariance on clean and shifted test sets.

``invkit study --demo`` (and ``make demo``) runs it with no network and no files: the models
are trained on the first run and cached (``$INVKIT_CACHE_DIR``, default ``~/.cache/invkit``).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from invkit.config import StudyConfig, parse_config
from invkit.demo.training import RECIPES, SIZE, trained_models

CORRUPTED = [(c, s) for c in ("gaussian_noise", "gaussian_blur", "contrast") for s in (1, 2, 3)]
UNLABELED = [("gaussian_noise", 5), ("contrast", 5)]


def demo_config_dict(checkpoints: dict[str, Path]) -> dict[str, Any]:
    """The demo study as a config mapping (what a user would write in TOML)."""
    digits = {"split": "test", "size": SIZE}
    datasets: list[dict[str, Any]] = [{"name": "clean", "spec": "digits", "params": digits}]
    for corruption, severity in CORRUPTED:
        datasets.append(
            {
                "name": f"{corruption}-{severity}",
                "spec": "digits",
                "params": digits,
                "corruption": corruption,
                "severity": severity,
            }
        )
    for corruption, severity in UNLABELED:
        datasets.append(
            {
                "name": f"{corruption}-{severity}-unlabeled",
                "spec": "digits",
                "params": digits | {"labeled": False},
                "corruption": corruption,
                "severity": severity,
            }
        )
    return {
        "models": [
            {
                "name": r.name,
                "spec": "python:invkit.demo.models:build",
                "params": {
                    "checkpoint": str(checkpoints[r.name]),
                    "kwargs": {"kind": r.kind, "width": r.width, "depth": r.depth, "size": SIZE},
                },
            }
            for r in RECIPES
        ],
        "datasets": datasets,
        "transforms": ["rotation", "grayscale"],
        "measures": ["ei", "agreement", "js"],
        "analyses": [
            {"name": "model_centric", "params": {"n_bootstrap": 1000, "seed": 0}},
            {"name": "dataset_centric", "params": {"n_bootstrap": 1000, "seed": 0}},
            {"name": "predict_accuracy", "params": {"points": "dataset"}},
        ],
        "run": {"out": "invkit-demo", "batch_size": 256},
    }


def demo_config(echo: Callable[[str], None] = print) -> StudyConfig:
    """Train (or load from the cache) the demo models and return the demo study config."""
    checkpoints = trained_models(echo=echo)
    return parse_config(demo_config_dict(checkpoints), base_dir=Path.cwd())
