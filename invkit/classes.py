"""Matching a dataset's classes to a model's outputs, and restricting them to a class subset.

A dataset names its classes (folder names such as ImageNet WordNet ids); a model's outputs are
indexed 0..K-1, with names when known. The plan says which logit columns to keep (all, or a
subset such as ImageNet-R's 200) and, for every dataset class, its target index among them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from invkit.components import Preprocessing
from invkit.errors import InvkitError

TIMM_SUBSETS = {"imagenet-r": "imagenet_r_indices.txt", "imagenet-a": "imagenet_a_indices.txt"}


@dataclass(frozen=True)
class LabelPlan:
    """``targets[c]``: the target index of dataset class ``c``; ``logit_index``: columns kept."""

    targets: tuple[int, ...] | None  # None: dataset labels are already model indices
    logit_index: tuple[int, ...] | None  # None: every logit

    def target(self, label: int) -> int:
        if label < 0 or self.targets is None:
            return label
        return self.targets[label]


def timm_subset_indices(name: str) -> list[int]:
    """ImageNet-1k indices of a 200-class subset, from the lists timm ships."""
    text = resources.files("timm.data._info").joinpath(TIMM_SUBSETS[name]).read_text()
    return [int(line) for line in text.split()]


def _read_class_map(path: Path, class_names: list[str] | None) -> dict[str, int]:
    """A class map file: JSON ``{"folder": index or class name}``, or lines ``folder index``."""
    if not path.is_file():
        raise InvkitError(f"class map {str(path)!r} does not exist")
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".json":
        try:
            raw = json.loads(text)
        except json.JSONDecodeError as error:
            raise InvkitError(f"class map {str(path)!r} is not valid JSON: {error}") from None
        if not isinstance(raw, dict):
            raise InvkitError(f'class map {str(path)!r} must be a JSON object {{"folder": index}}')
        pairs = list(raw.items())
    else:
        pairs = []
        for number, line in enumerate(text.splitlines(), start=1):
            if line.strip() and not line.startswith("#"):
                parts = line.split()
                if len(parts) != 2:
                    raise InvkitError(
                        f"class map {path}:{number}: expected 'folder index', got {line!r}"
                    )
                pairs.append((parts[0], parts[1]))
    mapping = {}
    for folder, target in pairs:
        mapping[str(folder)] = _model_index(str(target), class_names, f"class map {path}")
    return mapping


def _model_index(value: str, class_names: list[str] | None, where: str) -> int:
    if value.lstrip("-").isdigit():
        return int(value)
    if class_names and value in class_names:
        return class_names.index(value)
    raise InvkitError(f"{where}: {value!r} is neither a class index nor a class name of the model")


def _subset(subset: str, model_indices: list[int], class_names: list[str] | None) -> list[int]:
    if subset in TIMM_SUBSETS:
        return timm_subset_indices(subset)
    if subset == "folders":
        return sorted(set(model_indices))
    path = Path(subset)
    if not path.is_file():
        raise InvkitError(
            f"class_subset {subset!r} is neither {', '.join(TIMM_SUBSETS)}, 'folders', nor a file "
            "listing one class index or name per line"
        )
    lines = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    return [_model_index(line, class_names, f"class subset {path}") for line in lines]


def plan_labels(
    dataset_classes: list[str] | None,
    preprocessing: Preprocessing,
    class_map: str | None = None,
    class_subset: str | None = None,
    context: str = "",
) -> LabelPlan:
    """Map dataset classes to model outputs; ``context`` (model and dataset) goes in errors."""
    names = list(preprocessing.class_names) if preprocessing.class_names else None
    num_classes = preprocessing.num_classes
    prefix = f"{context}: " if context else ""
    if dataset_classes is None:
        model_indices = None
    elif class_map is not None:
        mapping = _read_class_map(Path(class_map), names)
        missing = [c for c in dataset_classes if c not in mapping]
        if missing:
            raise InvkitError(
                f"{prefix}class map {class_map} does not map the folder(s) {', '.join(missing[:5])}"
            )
        model_indices = [mapping[c] for c in dataset_classes]
    elif names is not None:
        unmatched = [c for c in dataset_classes if c not in names]
        if unmatched:
            raise InvkitError(
                f"{prefix}{len(unmatched)} dataset class(es) match no class of the model, e.g. "
                f"{', '.join(repr(c) for c in unmatched[:3])} (model classes look like "
                f"{', '.join(names[:3])}); name the folders after the model's classes or give "
                "a class_map file"
            )
        model_indices = [names.index(c) for c in dataset_classes]
    else:
        if num_classes is not None and len(dataset_classes) > num_classes:
            raise InvkitError(
                f"{prefix}the dataset has {len(dataset_classes)} classes but the model only "
                f"{num_classes} outputs; give a class_map file or check the model's num_classes"
            )
        model_indices = list(range(len(dataset_classes)))  # i-th class (sorted) → output i
    if model_indices is not None and num_classes is not None:
        too_large = [i for i in model_indices if not 0 <= i < num_classes]
        if too_large:
            raise InvkitError(
                f"{prefix}class index {too_large[0]} is outside the model's {num_classes} outputs"
            )
    if class_subset is None:
        return LabelPlan(tuple(model_indices) if model_indices is not None else None, None)
    if model_indices is None:
        raise InvkitError(f"{prefix}class_subset needs a dataset with named classes")
    subset = _subset(class_subset, model_indices, names)
    position = {index: i for i, index in enumerate(subset)}
    outside = [c for c, i in zip(dataset_classes, model_indices, strict=True) if i not in position]
    if outside:
        raise InvkitError(
            f"{prefix}class(es) {', '.join(outside[:5])} are not in class_subset {class_subset!r}"
        )
    return LabelPlan(tuple(position[i] for i in model_indices), tuple(subset))
