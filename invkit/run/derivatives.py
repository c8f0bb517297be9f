"""Jacobian-vector products through a model: the derivative of its softmax along a direction in
pixel space, exactly (never by finite differences).

Forward mode (``torch.func.jvp``) costs about one extra forward pass. Where a model's
operations have no forward-mode rule (PyTorch's fused attention on the CPU, say), the same
product comes from reverse mode twice (``torch.autograd.functional.jvp``: the double-backward
trick), at about twice the cost. ``method = "auto"`` tries forward mode, then double backward.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import TYPE_CHECKING

from invkit.errors import InvkitError

if TYPE_CHECKING:
    import torch

METHODS = ("auto", "forward", "double_backward")
FUSED_ATTENTION_FIX = (
    "for a timm model, turn fused attention off before loading it (timm.layers.set_fused_attn("
    "False), or the environment variable TIMM_FUSED_ATTN=0)"
)


def jvp(
    function: Callable[[torch.Tensor], torch.Tensor],
    point: torch.Tensor,
    direction: torch.Tensor,
    method: str = "auto",
) -> torch.Tensor:
    """``J(point) · direction`` for ``function``'s Jacobian, by ``method``; an error naming the
    operation and the fix when the model's operations allow neither product."""
    import torch

    if method not in METHODS:
        raise InvkitError(f"jvp method {method!r} is not one of {', '.join(METHODS)}")
    with torch.inference_mode(False), torch.enable_grad():
        point, direction = point.clone(), direction.clone()  # tensors autograd may track
        if method in ("auto", "forward"):
            try:
                with warnings.catch_warnings():  # torch's own forward-mode rules, loaded once
                    warnings.filterwarnings("ignore", "`torch.jit.script` is deprecated")
                    return torch.func.jvp(function, (point,), (direction,))[1].detach()
            except (NotImplementedError, RuntimeError) as error:
                function(point)  # an error of the model itself, not of its derivative: as it is
                if method == "forward":
                    raise _unsupported("forward mode", error) from None
                forward_error = error
        try:
            return torch.autograd.functional.jvp(function, point, direction, strict=True)[
                1
            ].detach()
        except (NotImplementedError, RuntimeError) as error:
            if method == "auto":
                raise _unsupported(
                    f"forward mode ({forward_error}) or double backward", error
                ) from None
            raise _unsupported("double backward", error) from None


def _unsupported(products: str, error: BaseException) -> InvkitError:
    return InvkitError(
        f"the model's derivative cannot be taken by {products}: {type(error).__name__}: "
        f"{error}. An operation of the model has no such rule; {FUSED_ATTENTION_FIX}"
    )
