"""Find and build registered components by name: the lookups every layer uses, beside the
registry (``invkit.api`` re-exports them as the public face)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from invkit.errors import InvkitError, UnknownComponentError, plural
from invkit.plugins import get_host
from invkit.registry import KINDS, Component

if TYPE_CHECKING:
    from invkit.plugin.components import LayerMeasure, Measure, Shift, Transform


def _kind(kind: str) -> str:
    singular = {plural(k): k for k in KINDS}
    chosen = singular.get(kind, kind)
    if chosen not in KINDS:
        raise InvkitError(f"unknown component kind {kind!r}; kinds: {', '.join(KINDS)}")
    return chosen


def get_component(kind: str, name: str) -> Component:
    """The registered component of ``kind`` called ``name`` (its description and parameters)."""
    host = get_host()
    try:
        return host.registry.get(_kind(kind), name)
    except UnknownComponentError as error:
        left_out = host.filtered()
        if not left_out:
            raise
        names = ", ".join(f"{info.name} ({info.filtered_by})" for info in left_out)
        raise UnknownComponentError(
            error.kind,
            name,
            error.suggestions,
            [],
            f"; installed but not loaded: {names}, which may provide it",
            label=error.label,
        ) from None


def list_components(kind: str | None = None) -> list[Component]:
    """Every registered component, or those of one kind (``"transform"`` or ``"transforms"``)."""
    registry = get_host().registry
    if kind is None:
        return list(registry)
    return registry.all(_kind(kind))


def get_transform(name: str, **params: Any) -> Transform:
    """Build the transform ``name`` with ``params``: ``get_transform("rotation", angles=[90])``."""
    return get_component("transform", name).create(**params)


def get_measure(name: str, **params: Any) -> Measure:
    """Build the measure ``name``: ``get_measure("ei")(original_probs, view_probs)``."""
    return get_component("measure", name).create(**params)


def get_layer_measure(name: str, **params: Any) -> LayerMeasure:
    """Build the layer measure ``name``: ``get_layer_measure("cka").accumulator()``."""
    return get_component("layer_measure", name).create(**params)


def get_shift(name: str, **params: Any) -> Shift:
    """Build the dataset shift ``name``: ``get_shift("contrast", severity=3)(image, seed)``."""
    return get_component("shift", name).create(**params)


def get_analysis(name: str, **params: Any) -> Any:
    """Build the analysis ``name``: ``get_analysis("model_centric")(rows)``."""
    return get_component("analysis", name).create(**params)


def get_executor(name: str, **params: Any) -> Any:
    """Build the executor ``name`` (``local`` runs jobs one after the other)."""
    return get_component("executor", name).create(**params)


def split_spec(spec: str) -> tuple[str, str]:
    """``"timm:resnet18"`` → ``("timm", "resnet18")``; ``"digits"`` → ``("digits", "")``."""
    scheme, _, rest = spec.partition(":")
    if not scheme:
        raise InvkitError(
            f"spec {spec!r} has no scheme; write it as scheme:rest, e.g. timm:resnet18"
        )
    return scheme, rest
