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

from invkit.errors import InvkitError
from invkit.plugin.components import Preprocessing

TIMM_SUBSETS = {"imagenet-r": "imagenet_r_indices.txt", "imagenet-a": "imagenet_a_indices.txt"}


BY_NAME, BY_INDEX, BY_POSITION, BY_CLASS_MAP = "by name", "by index", "by position", "class_map"
AS_GIVEN = "labels as given"  # a dataset without class names: its labels are model indices


@dataclass(frozen=True)
class LabelPlan:
    """``targets[c]``: the target index of dataset class ``c``; ``logit_index``: columns kept;
    ``method``: how dataset classes were matched to model outputs (shown and stored)."""

    targets: tuple[int, ...] | None  # None: dataset labels are already model indices
    logit_index: tuple[int, ...] | None  # None: every logit
    method: str = AS_GIVEN

    def target(self, label: int) -> int:
        if label < 0 or self.targets is None:
            return label
        return self.targets[label]


def timm_subset_indices(name: str) -> list[int]:
    """ImageNet-1k indices of a 200-class subset, from the lists timm ships."""
    text = resources.files("timm.data._info").joinpath(TIMM_SUBSETS[name]).read_text()
    return [int(line) for line in text.split()]


def _class_map_pairs(path: Path) -> list[tuple[str, str]]:
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
    return [(str(folder), str(target)) for folder, target in pairs]


def check_class_map(path: Path) -> None:
    """Refuse a class map that is malformed or has a negative index, before any model loads
    (an index past the model's outputs is refused once the model's outputs are known)."""
    for _, target in _class_map_pairs(path):
        if target.lstrip("-").isdigit():
            _model_index(target, None, f"class map {path}")


def _read_class_map(path: Path, class_names: list[str] | None) -> dict[str, int]:
    return {
        folder: _model_index(target, class_names, f"class map {path}")
        for folder, target in _class_map_pairs(path)
    }


def _model_index(value: str, class_names: list[str] | None, where: str) -> int:
    if value.lstrip("-").isdigit():
        if value.startswith("-"):
            raise InvkitError(f"{where}: class index {value} is negative; model outputs start at 0")
        return int(value)
    if class_names and value in class_names:
        return class_names.index(value)
    raise InvkitError(f"{where}: {value!r} is neither a class index nor a class name of the model")


SUBSET_KEYWORDS = (*TIMM_SUBSETS, "folders")  # class_subset values that are not file names


def subset_lines(path: Path) -> list[str]:
    """The classes a class subset file lists, one per line (blank lines and ``#`` comments
    skipped); a class listed twice is refused, since it would count its images twice."""
    if not path.is_file():
        raise InvkitError(
            f"class_subset {str(path)!r} does not exist; give {', '.join(SUBSET_KEYWORDS)}, or a "
            "file listing one class index or name per line"
        )
    lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
    lines = [line for line in lines if line and not line.startswith("#")]
    seen: dict[str, int] = {}
    for number, line in enumerate(lines, start=1):
        if line in seen:
            raise InvkitError(
                f"class subset {str(path)!r} lists {line!r} twice (entries {seen[line]} and "
                f"{number}); list each class once"
            )
        seen[line] = number
    for line in lines:
        if line.lstrip("-").isdigit():
            _model_index(line, None, f"class subset {path}")
    return lines


def _subset(
    subset: str, model_indices: list[int], class_names: list[str] | None, num_classes: int | None
) -> list[int]:
    if subset in TIMM_SUBSETS:
        indices = timm_subset_indices(subset)
    elif subset == "folders":
        return sorted(set(model_indices))
    else:
        path = Path(subset)
        where = f"class subset {path}"
        indices = [_model_index(line, class_names, where) for line in subset_lines(path)]
        if len(set(indices)) < len(indices):
            raise InvkitError(f"{where} names one class twice (by its name and its index)")
    outside = [i for i in indices if num_classes is not None and not 0 <= i < num_classes]
    if outside:
        raise InvkitError(
            f"class_subset {subset!r} holds class index {outside[0]}, outside the model's "
            f"{num_classes} outputs (0 to {num_classes - 1})"
        )
    return indices


def _is_index(name: str) -> bool:
    return name.isascii() and name.isdigit()


def _no_match_error(prefix: str, folders: list[str], outputs: int) -> InvkitError:
    shown = ", ".join(folders[:8]) + (", …" if len(folders) > 8 else "")
    example = "\n".join(f"    {folder} {i}" for i, folder in enumerate(folders[:3]))
    return InvkitError(
        f"{prefix}cannot tell which model output each class folder is: the dataset has "
        f"{len(folders)} folder(s) ({shown}), the model has {outputs} outputs and no class "
        "names, and the folder names are not class indices. Matching by position would need "
        f"exactly {outputs} folders. Fix: name the folders by class index (3/ is output 3), or "
        'give the dataset class_map = "classes.txt" with one line "FOLDER INDEX" per folder:\n'
        f"{example}\n"
        'and, if the folders are a subset of the model\'s classes, class_subset = "folders" to '
        "take the softmax over those classes only"
    )


def _unmatched_error(prefix: str, unmatched: list[str], names: list[str]) -> InvkitError:
    """Folders that are not the model's class names: the class_map lines that would map
    them, each to the closest class name (to be checked: a suggestion, never applied)."""
    import difflib

    lines = []
    for folder in unmatched[:3]:
        close = difflib.get_close_matches(folder, names, n=1, cutoff=0.0)
        lines.append(f"    {folder} {close[0] if close else names[0]}")
    return InvkitError(
        f"{prefix}{len(unmatched)} dataset class(es) match no class of the model, e.g. "
        f"{', '.join(repr(c) for c in unmatched[:3])} (model classes look like "
        f"{', '.join(names[:3])}). Fix: name the folders after the model's classes, or by class "
        'index (3/ is output 3), or give the dataset class_map = "classes.txt" with one line '
        '"FOLDER CLASS" (a class name or index) per folder, such as (closest names, check '
        "them):\n" + "\n".join(lines)
    )


def _match(
    dataset_classes: list[str],
    names: list[str] | None,
    num_classes: int | None,
    class_map: str | None,
    prefix: str,
) -> tuple[list[int], str]:
    """Model output index of each dataset class, and how it was found."""
    if class_map is not None:
        mapping = _read_class_map(Path(class_map), names)
        missing = [c for c in dataset_classes if c not in mapping]
        if missing:
            raise InvkitError(
                f"{prefix}class map {class_map} does not map the folder(s) {', '.join(missing[:5])}"
            )
        return [mapping[c] for c in dataset_classes], BY_CLASS_MAP
    unmatched = [c for c in dataset_classes if c not in names] if names is not None else []
    by_index = all(map(_is_index, dataset_classes))
    if names is not None and not (by_index and len(unmatched) == len(dataset_classes)):
        if unmatched:
            raise _unmatched_error(prefix, unmatched, names)
        return [names.index(c) for c in dataset_classes], BY_NAME
    # no class names, or whole-number folders none of which is a class name (ImageNet-V2)
    if by_index:
        indices = [int(c) for c in dataset_classes]
        if len(set(indices)) < len(indices):
            raise InvkitError(
                f"{prefix}two class folders name the same class index ({', '.join(dataset_classes)}"
                "); rename one, or give a class_map"
            )
        return indices, BY_INDEX
    if num_classes is None or len(dataset_classes) != num_classes:
        raise _no_match_error(prefix, dataset_classes, num_classes or 0)
    return list(range(len(dataset_classes))), BY_POSITION  # i-th folder (sorted) → output i


def plan_labels(
    dataset_classes: list[str] | None,
    preprocessing: Preprocessing,
    class_map: str | None = None,
    class_subset: str | None = None,
    context: str = "",
) -> LabelPlan:
    """Map dataset classes to model outputs, never by a guess: by the model's class names, by
    folders named as class indices, through a class map, or by position only when the counts
    are equal. ``context`` (model and dataset) goes in errors."""
    names = list(preprocessing.class_names) if preprocessing.class_names else None
    num_classes = preprocessing.num_classes
    prefix = f"{context}: " if context else ""
    if dataset_classes is None:
        model_indices, method = None, AS_GIVEN
    else:
        model_indices, method = _match(dataset_classes, names, num_classes, class_map, prefix)
    if model_indices is not None and num_classes is not None:
        too_large = [i for i in model_indices if not 0 <= i < num_classes]
        if too_large:
            raise InvkitError(
                f"{prefix}class index {too_large[0]} ({method}) is outside the model's "
                f"{num_classes} outputs (0 to {num_classes - 1})"
            )
    if class_subset is None:
        targets = tuple(model_indices) if model_indices is not None else None
        return LabelPlan(targets, None, method)
    if model_indices is None:
        raise InvkitError(f"{prefix}class_subset needs a dataset with named classes")
    subset = _subset(class_subset, model_indices, names, num_classes)
    position = {index: i for i, index in enumerate(subset)}
    outside = [c for c, i in zip(dataset_classes, model_indices, strict=True) if i not in position]
    if outside:
        raise InvkitError(
            f"{prefix}class(es) {', '.join(outside[:5])} are not in class_subset {class_subset!r}"
        )
    return LabelPlan(tuple(position[i] for i in model_indices), tuple(subset), method)
