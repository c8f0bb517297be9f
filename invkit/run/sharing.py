"""Decode once for many models: passes over one dataset whose models take the same input are
bundled into one ``PassSpec`` (``shared``), so each image is read, decoded and resized once
for all of them.

A 150-model study of timm models decodes ImageNet-val once per preprocessing recipe, not 150
times. Every model still gets exactly the results it would get alone, and the store and resume
stay per cell.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from invkit.plugin.passes import PassSpec

AUTO_MODELS = 8  # models_per_pass = "auto": at most this many models in a bundle ...
AUTO_PARAMETER_BYTES = 4 * 2**30  # ... whose parameters and buffers fit in this many bytes


@dataclass(frozen=True)
class ModelInput:
    """What the study learnt about a model when it checked it: the input it takes (models
    with equal ``key`` can share decoding) and the bytes its parameters and buffers take."""

    key: tuple[Any, ...]
    bytes: int


def share_decoding(
    specs: Sequence[PassSpec], inputs: Mapping[str, ModelInput], models_per_pass: int | str
) -> list[PassSpec]:
    """The passes with those over one dataset and one input bundled, in order of first
    appearance; at most ``models_per_pass`` models per bundle ("auto": ``AUTO_MODELS``, and
    ``AUTO_PARAMETER_BYTES`` of parameters). Models missing from ``inputs`` run alone."""
    auto = models_per_pass == "auto"
    most = AUTO_MODELS if auto else int(models_per_pass)
    budget = AUTO_PARAMETER_BYTES if auto else None
    bundles: list[list[PassSpec]] = []
    open_bundles: dict[tuple[Any, ...], tuple[list[PassSpec], int]] = {}
    for spec in specs:
        model = inputs.get(spec.model.name)
        if model is None or most == 1:
            bundles.append([spec])
            continue
        key = (spec.dataset.name, model.key)
        bundle, size = open_bundles.get(key, ([], 0))
        over_budget = budget is not None and size + model.bytes > budget
        if not bundle or len(bundle) >= most or over_budget:
            bundle, size = [], 0
            bundles.append(bundle)
        bundle.append(spec)
        open_bundles[key] = (bundle, size + model.bytes)
    return [dataclasses.replace(bundle[0], shared=tuple(bundle[1:])) for bundle in bundles]
