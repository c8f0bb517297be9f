"""What a model's input must be, checked before any image is read.

A model's ``Preprocessing`` (from its loader, overridden by the config) decides the channel
count, size and normalization of everything the data pipeline hands it. Values that would
fail inside torch later, or quietly give wrong numbers (a zero ``std``, a 3-value ``mean`` for
a 1-channel model), are refused here with the key that holds them. One blank forward pass
then tells the model's number of outputs, so class matching never has to guess it.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

from invkit.errors import InvkitError
from invkit.plugin.components import LoadedModel

INTERPOLATIONS = ("nearest", "nearest-exact", "bilinear", "bicubic")
CHANNELS = (1, 3)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _numbers(where: str, key: str, value: Any, positive: bool) -> list[float]:
    what = "positive numbers" if positive else "numbers"
    if not isinstance(value, list | tuple) or not value or not all(map(_is_number, value)):
        raise InvkitError(f"{where}: preprocessing.{key} must be a list of {what}; got {value!r}")
    if positive and any(v <= 0 for v in value):
        raise InvkitError(
            f"{where}: preprocessing.{key} must be positive (it divides the pixels); got {value!r}"
        )
    return list(value)


def check_preprocessing(values: Mapping[str, Any], where: str) -> None:
    """Refuse bad preprocessing values, naming ``where`` and the key; ``values`` may be partial
    (a config's overrides) or whole (a loaded model's)."""
    channels = None
    if values.get("input_size") is not None:
        size = values["input_size"]
        if (
            not isinstance(size, list | tuple)
            or len(size) != 3
            or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in size)
        ):
            raise InvkitError(
                f"{where}: preprocessing.input_size must be [channels, height, width], three "
                f"positive integers such as [3, 224, 224]; got {size!r}"
            )
        channels = size[0]
        if channels not in CHANNELS:
            raise InvkitError(
                f"{where}: preprocessing.input_size has {channels} channels; invkit feeds models "
                "1 (grayscale) or 3 (RGB) channels"
            )
    if values.get("interpolation") is not None and values["interpolation"] not in INTERPOLATIONS:
        raise InvkitError(
            f"{where}: preprocessing.interpolation {values['interpolation']!r} is not one of "
            f"{', '.join(INTERPOLATIONS)}"
        )
    crop = values.get("crop_pct")
    if crop is not None and not (_is_number(crop) and 0 < crop <= 1):
        raise InvkitError(
            f"{where}: preprocessing.crop_pct must be a number in (0, 1] (the fraction of the "
            f"resized image kept by the centre crop; 1.0 keeps it all); got {crop!r}"
        )
    lengths = {}
    for key, positive in (("mean", False), ("std", True)):
        if values.get(key) is not None:
            lengths[key] = len(_numbers(where, key, values[key], positive))
    for key, length in lengths.items():
        if length not in CHANNELS:
            raise InvkitError(
                f"{where}: preprocessing.{key} has {length} values; give one per channel: 3 for "
                "an RGB model, 1 for a grayscale one"
            )
        if channels is not None and length != channels:
            raise InvkitError(
                f"{where}: preprocessing.{key} has {length} value(s) but the model takes "
                f"{channels} channel(s) (input_size {list(values['input_size'])}); give "
                f"{key} {channels} value(s)"
            )
    if len(set(lengths.values())) > 1:
        raise InvkitError(
            f"{where}: preprocessing.mean and std differ in length ({lengths['mean']} and "
            f"{lengths['std']}); give one value per channel in each"
        )


def channels_needed(transform: Any) -> tuple[int, ...] | None:
    """The channel counts a transform accepts (its ``channels`` attribute); ``None``: any."""
    return getattr(transform, "channels", None)


def check_channels(transforms: Mapping[str, Any], channels: int, model: str) -> None:
    """Refuse a transform that cannot act on this model's input, before any forward pass."""
    for label, transform in transforms.items():
        accepted = channels_needed(transform)
        if accepted is not None and channels not in accepted:
            raise InvkitError(
                f"transform {label!r} needs {' or '.join(map(str, accepted))}-channel images, "
                f"but model {model!r} takes {channels} channel(s)"
                + (
                    ": a 1-channel image is already gray, so invariance to this transform says "
                    "nothing; leave it out for this model (or study it in its own config)"
                    if channels == 1
                    else ""
                )
            )


def model_outputs(loaded: LoadedModel, model: str) -> int:
    """One blank image through the model (on the CPU): its number of outputs, checked to be a
    ``(batch, classes)`` tensor."""
    import torch

    blank = torch.zeros(1, *loaded.preprocessing.input_size)
    module = loaded.module.eval()
    try:
        with torch.inference_mode():
            output = module(blank)
    except Exception as error:  # a user's module may raise anything on the wrong input
        first = str(error).splitlines()[0] if str(error) else ""
        raise InvkitError(
            f"model {model!r} fails on a blank {tuple(blank.shape)} input: "
            f"{type(error).__name__}: {first} (check preprocessing.input_size)"
        ) from None
    if not isinstance(output, torch.Tensor) or output.ndim != 2 or output.shape[0] != 1:
        shape = tuple(output.shape) if isinstance(output, torch.Tensor) else type(output).__name__
        raise InvkitError(
            f"model {model!r} returned {shape} for a batch of one {tuple(blank.shape)} image; "
            "invkit needs logits of shape (batch, classes): wrap the model so that it returns "
            "one logit vector per image"
        )
    return int(output.shape[1])


def checked_model(loaded: LoadedModel, transforms: Mapping[str, Any], model: str) -> LoadedModel:
    """A loaded model whose preprocessing is valid for the study's transforms, with its number
    of outputs measured (and a declared ``num_classes`` checked against it)."""
    preprocessing = loaded.preprocessing
    check_preprocessing(dataclasses.asdict(preprocessing), f"model {model!r}")
    check_channels(transforms, preprocessing.input_size[0], model)
    outputs = model_outputs(loaded, model)
    declared = preprocessing.num_classes
    if declared is not None and declared != outputs:
        raise InvkitError(
            f"model {model!r} declares {declared} classes but returns {outputs} outputs; fix "
            "params.num_classes (or the checkpoint)"
        )
    if declared is None:
        loaded.preprocessing = dataclasses.replace(preprocessing, num_classes=outputs)
    return loaded
