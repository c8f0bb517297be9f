"""Named components of each kind, as plugins registered them, and how to describe and build them."""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from invkit.errors import ComponentParameterError, DuplicateComponentError, UnknownComponentError


@dataclass(frozen=True)
class Kind:
    """One kind of component: its name, its register hook, and whether it is keyed by a scheme."""

    name: str
    hook: str
    takes_spec: bool = False  # loaders get the part of a spec after "scheme:" as first argument


KINDS: dict[str, Kind] = {
    kind.name: kind
    for kind in (
        Kind("transform", "register_transforms"),
        Kind("measure", "register_measures"),
        Kind("model", "register_models", takes_spec=True),
        Kind("dataset", "register_datasets", takes_spec=True),
        Kind("analysis", "register_analyses"),
        Kind("executor", "register_executors"),
    )
}

REQUIRED = inspect.Parameter.empty


@dataclass(frozen=True)
class Param:
    """One parameter of a component: name, type as text, and default (``REQUIRED`` if none)."""

    name: str
    type: str
    default: Any = REQUIRED

    @property
    def required(self) -> bool:
        return self.default is REQUIRED

    def describe(self) -> str:
        text = f"{self.name}: {self.type}" if self.type else self.name
        return text if self.required else f"{text} = {self.default!r}"


@dataclass(frozen=True)
class Component:
    """A registered component: what ``invkit list`` shows and what ``get_*`` builds."""

    kind: str
    name: str
    factory: Callable[..., Any] = field(repr=False)
    plugin: str
    description: str
    params: tuple[Param, ...]
    accepts_any: bool = False  # the factory takes **kwargs

    def create(self, *spec: str, **params: Any) -> Any:
        """Build the component after checking ``params`` against its declared parameters."""
        self._check(params)
        return self.factory(*spec, **params)

    def _check(self, params: dict[str, Any]) -> None:
        known = [p.name for p in self.params]
        if not self.accepts_any:
            for key in params:
                if key not in known:
                    close = difflib.get_close_matches(key, known, n=1)
                    hint = f"did you mean {close[0]!r}? " if close else ""
                    takes = ", ".join(known) if known else "no parameters"
                    raise ComponentParameterError(
                        f"{self.kind} {self.name!r} has no parameter {key!r}; {hint}"
                        f"it takes: {takes}"
                    )
        missing = [p.name for p in self.params if p.required and p.name not in params]
        if missing:
            raise ComponentParameterError(
                f"{self.kind} {self.name!r} needs the parameter(s) {', '.join(missing)}"
            )

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "name": self.name,
            "plugin": self.plugin,
            "description": self.description,
            "params": [
                {
                    "name": p.name,
                    "type": p.type,
                    "required": p.required,
                    **({} if p.required else {"default": _jsonable(p.default)}),
                }
                for p in self.params
            ],
        }


def _jsonable(value: Any) -> Any:
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return repr(value)


def _type_text(annotation: Any) -> str:
    if annotation is inspect.Parameter.empty:
        return ""
    if isinstance(annotation, str):
        return annotation
    if isinstance(annotation, type):
        return annotation.__name__
    return str(annotation).replace("typing.", "").replace("collections.abc.", "")


def component_name(factory: Callable[..., Any], name: str | None) -> str:
    """The name a factory is registered under: explicit, else its ``name`` attribute or name."""
    chosen = name or getattr(factory, "name", None) or getattr(factory, "__name__", None)
    if not isinstance(chosen, str) or not chosen:
        raise ComponentParameterError(
            f"cannot tell the name of component {factory!r}: pass register(factory, name=...)"
        )
    return chosen


def describe(kind: Kind, factory: Callable[..., Any], name: str, plugin: str) -> Component:
    """Read a factory's docstring and signature into a ``Component``."""
    if not callable(factory):
        raise ComponentParameterError(
            f"plugin {plugin!r} registered {kind.name} {name!r} as {factory!r}, "
            "which is not callable: register a class or a function"
        )
    doc = inspect.getdoc(factory) or ""
    description = doc.strip().splitlines()[0] if doc.strip() else ""
    try:
        signature = inspect.signature(factory, eval_str=True)
    except (NameError, TypeError):
        signature = inspect.signature(factory)
    params = list(signature.parameters.values())
    if kind.takes_spec:
        params = params[1:]  # the spec's rest, not a user-set parameter
    accepts_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params)
    declared = tuple(
        Param(p.name, _type_text(p.annotation), p.default)
        for p in params
        if p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    )
    return Component(kind.name, name, factory, plugin, description, declared, accepts_any)


class Registry:
    """All components, by kind and name; fills itself from plugins and refuses duplicates."""

    def __init__(self) -> None:
        self._components: dict[str, dict[str, Component]] = {kind: {} for kind in KINDS}

    def add(self, component: Component) -> None:
        existing = self._components[component.kind].get(component.name)
        if existing is not None:
            raise DuplicateComponentError(
                f"{component.kind} {component.name!r} is registered twice: by plugin "
                f"{existing.plugin!r} and by plugin {component.plugin!r}; uninstall or disable "
                "one of them (INVKIT_DISABLE_PLUGINS=name)"
            )
        self._components[component.kind][component.name] = component

    def get(self, kind: str, name: str) -> Component:
        components = self._components[kind]
        if name in components:
            return components[name]
        known = sorted(components)
        close = difflib.get_close_matches(name, known, n=3, cutoff=0.5)
        raise UnknownComponentError(kind, name, close, known)

    def all(self, kind: str) -> list[Component]:
        return sorted(self._components[kind].values(), key=lambda c: c.name)

    def __iter__(self) -> Iterator[Component]:
        for kind in KINDS:
            yield from self.all(kind)
