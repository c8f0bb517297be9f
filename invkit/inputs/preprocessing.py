"""What a model's input must be, checked before any image is read.

A model's ``Preprocessing`` (from its loader, overridden by the config) decides the channel
count, size and normalization of everything the data pipeline hands it. Values that would
fail inside torch later, or quietly give wrong numbers (a zero ``std``, a 3-value ``mean`` for
a 1-channel model), are refused here with the key that holds them. One blank forward pass
then tells the model's number of outputs, so class matching never has to guess it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from invkit.config import check_preprocessing
from invkit.errors import InvkitError
from invkit.plugin.components import LoadedModel


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
