"""A model's layers as a study names them: module names, ``"output"`` (the model's own output)
and ``"stages"`` (a timm model's ``feature_info``), found in the module, with their relative
depth; and how a layer cell is labelled in the store (``measure@layer``)."""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from typing import Any

from invkit.config import LAYER_SEPARATOR as SEPARATOR
from invkit.errors import InvkitError

OUTPUT = "output"  # the model's own output (its logits)
STAGES = "stages"  # a timm model's feature stages (feature_info)


def layer_cell(measure: str, layer: str) -> str:
    """The store's label of a layer measure's cell at a layer."""
    return f"{measure}{SEPARATOR}{layer}"


def split_layer_cell(label: str) -> tuple[str, str] | None:
    """``(measure, layer)`` of a layer cell's label; ``None`` for an output measure's."""
    measure, separator, layer = label.partition(SEPARATOR)
    return (measure, layer) if separator else None


def timm_stages(model_name: str) -> list[str]:
    """The module names of a timm model's feature stages, read from ``feature_info`` of the
    architecture built on the meta device (no weights, no memory, no download)."""
    import timm
    import torch

    with torch.device("meta"):
        model = timm.create_model(model_name, pretrained=False)
    info = getattr(model, "feature_info", None)
    if not info:
        raise InvkitError(f"timm:{model_name} declares no feature_info; name its layers instead")
    return [stage["module"] for stage in info]


def resolve_layers(names: Sequence[str], scheme: str, rest: str, where: str) -> list[str]:
    """The layers a model entry names, ``"stages"`` replaced by the model's stages (timm
    models); any other model is asked for its module names."""
    resolved: list[str] = []
    for name in names:
        if name != STAGES:
            resolved.append(name)
        elif scheme == "timm":
            resolved += timm_stages(rest)
        else:
            raise InvkitError(
                f'{where}: layers = "stages" reads a timm model\'s feature_info; {scheme}: '
                f"models have none. Name the modules instead (`invkit layers {scheme}:{rest}` "
                "lists them)"
            )
    return list(dict.fromkeys(resolved))


def find_layers(module: Any, names: Sequence[str], where: str, spec: str) -> dict[str, Any]:
    """The modules ``names`` name in ``module`` (``"output"``: the module itself); a name
    that is not there is refused with the nearest ones, the error opening with ``where``."""
    modules = dict(module.named_modules())
    found, unknown = {}, []
    for name in names:
        if name == OUTPUT:
            found[name] = module
        elif name in modules and name:
            found[name] = modules[name]
        else:
            unknown.append(name)
    if unknown:
        near = difflib.get_close_matches(unknown[0], [n for n in modules if n], n=4, cutoff=0.5)
        hint = f"; did you mean {', '.join(repr(n) for n in near)}?" if near else ""
        raise InvkitError(
            f"{where} has no layer {unknown[0]!r}{hint} (`invkit layers {spec}` lists "
            'its modules and their output shapes; "output" is its own output)'
        )
    return found


def layer_depths(module: Any, names: Sequence[str]) -> dict[str, float]:
    """Each layer's relative depth: its position among the model's modules in definition
    order, 0 the first, 1 the model's output."""
    order = [name for name, _ in module.named_modules() if name]
    last = max(len(order) - 1, 1)
    return {
        name: 1.0 if name == OUTPUT else order.index(name) / last
        for name in names
        if name == OUTPUT or name in order
    }


def module_outputs(module: Any, input_size: Sequence[int]) -> list[tuple[str, str, str]]:
    """Each module's name, type and output on one blank image of ``input_size`` ``[C, H, W]``:
    its shape without the batch, or what it returns when that is not one tensor."""
    import torch

    seen: dict[str, str] = {}

    def record(name: str) -> Any:
        def hook(_: Any, __: Any, output: Any) -> None:
            if isinstance(output, torch.Tensor):
                seen.setdefault(name, "×".join(map(str, output.shape[1:])) or "scalar")
            else:
                seen.setdefault(name, f"a {type(output).__name__}: not measurable")

        return hook

    named = [(name or OUTPUT, child) for name, child in module.named_modules()]
    hooks = [child.register_forward_hook(record(name)) for name, child in named]
    try:
        with torch.inference_mode():
            module.eval()(torch.zeros(1, *input_size))
    finally:
        for hook in hooks:
            hook.remove()
    rows = [(name, type(child).__name__, seen.get(name, "not run")) for name, child in named]
    return rows[1:] + rows[:1]  # the model's own output last, as "output"
