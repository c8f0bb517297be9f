"""Named components of each kind, as plugins registered them, and how to describe and build them."""

from __future__ import annotations

import difflib
import inspect
import re
import types
import typing
from collections import abc
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from invkit.errors import (
    ComponentParameterError,
    DuplicateComponentError,
    InvkitError,
    UnknownComponentError,
    plural,
)


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
        Kind("layer_measure", "register_layer_measures"),
        Kind("model", "register_models", takes_spec=True),
        Kind("dataset", "register_datasets", takes_spec=True),
        Kind("shift", "register_shifts"),
        Kind("analysis", "register_analyses"),
        Kind("estimator", "register_estimators"),
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
    annotation: Any = field(default=inspect.Parameter.empty, repr=False, compare=False)

    @property
    def is_path(self) -> bool:
        """Annotated ``pathlib.Path`` (or ``Path | None``): a file the study resolves and hashes."""
        return self.annotation is Path or Path in typing.get_args(self.annotation)

    def accepts(self, value: Any) -> bool:
        """Whether ``value`` fits the annotation (as far as a config value can be checked)."""
        return value is self.default or _fits(value, self.annotation) is not False

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
        self.check(params)
        try:
            return self.factory(*spec, **params)
        except InvkitError:
            raise
        except (TypeError, ValueError) as error:  # a parameter of the wrong kind, mostly
            given = ", ".join(f"{k}={v!r}" for k, v in params.items()) or "no parameters"
            raise ComponentParameterError(
                f"{self.kind} {self.name!r} cannot be built with {given}: "
                f"{type(error).__name__}: {error} "
                f"(`invkit list {plural(self.kind)}` shows its parameters)"
            ) from error

    def check(self, params: dict[str, Any]) -> None:
        """Raise ``ComponentParameterError`` for unknown, missing or mistyped parameters."""
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
        for param in self.params:
            if param.name in params and not param.accepts(params[param.name]):
                value = params[param.name]
                raise ComponentParameterError(
                    f"{self.kind} {self.name!r} parameter {param.name!r} must be {param.type}; "
                    f"got {value!r} ({type(value).__name__})"
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


def _fits(value: Any, annotation: Any) -> bool | None:
    """True or False for the annotations configs use; ``None`` when it cannot tell."""
    if annotation is inspect.Parameter.empty or annotation is Any:
        return None
    if annotation is None or annotation is type(None):
        return value is None
    if annotation is bool:
        return isinstance(value, bool)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if annotation is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if annotation is str:
        return isinstance(value, str)
    if annotation is Path:
        return isinstance(value, str | Path)
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        verdicts = [_fits(value, arg) for arg in args]
        return True if True in verdicts else (None if None in verdicts else False)
    if annotation in (dict, Mapping) or origin in (dict, Mapping, abc.Mapping):
        return isinstance(value, Mapping)
    if annotation in (list, tuple, Sequence) or origin in (list, tuple, abc.Sequence):
        if isinstance(value, str) or not isinstance(value, list | tuple):
            return False
        if args and origin is not tuple:
            verdicts = [_fits(item, args[0]) for item in value]
            return False not in verdicts
        return True
    return None


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
    text = str(annotation)
    for module in ("typing.", "collections.abc.", "pathlib."):
        text = text.replace(module, "")
    return text


def component_name(factory: Callable[..., Any], name: str | None) -> str:
    """The name a factory is registered under: explicit, else its ``name`` attribute or name."""
    chosen = name or getattr(factory, "name", None) or getattr(factory, "__name__", None)
    if not isinstance(chosen, str) or not chosen:
        raise ComponentParameterError(
            f"cannot tell the name of component {factory!r}: pass register(factory, name=...)"
        )
    return chosen


SENTENCE_END = re.compile(r"(?<!\bal)(?<!\be\.g)(?<!\bi\.e)(?<!\bvs)\.(?=\s|$)")


def first_sentence(doc: str) -> str:
    """A docstring's first sentence (its first paragraph's lines joined): what ``invkit list``
    shows, never cut mid-sentence at a line break ("et al." and "e.g." end none)."""
    paragraph = " ".join(doc.strip().split("\n\n", 1)[0].split())
    end = SENTENCE_END.search(paragraph)
    return paragraph[: end.end()] if end else paragraph


def describe(kind: Kind, factory: Callable[..., Any], name: str, plugin: str) -> Component:
    """Read a factory's docstring and signature into a ``Component``."""
    if not callable(factory):
        raise ComponentParameterError(
            f"plugin {plugin!r} registered {kind.name} {name!r} as {factory!r}, "
            "which is not callable: register a class or a function"
        )
    doc = inspect.getdoc(factory) or ""
    description = first_sentence(doc)
    try:
        signature = inspect.signature(factory, eval_str=True)
    except (NameError, TypeError):
        signature = inspect.signature(factory)
    params = list(signature.parameters.values())
    if kind.takes_spec:
        params = params[1:]  # the spec's rest, not a user-set parameter
    accepts_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params)
    declared = tuple(
        Param(p.name, _type_text(p.annotation), p.default, p.annotation)
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
        by_lower = {k.lower(): k for k in known}  # suggestions ignore case: "EI" → 'ei'
        close = difflib.get_close_matches(name.lower(), list(by_lower), n=3, cutoff=0.5)
        label = f"{kind} loader" if KINDS[kind].takes_spec else kind  # the scheme of a spec
        raise UnknownComponentError(kind, name, [by_lower[c] for c in close], known, label=label)

    def all(self, kind: str) -> list[Component]:
        return sorted(self._components[kind].values(), key=lambda c: c.name)

    def __iter__(self) -> Iterator[Component]:
        for kind in KINDS:
            yield from self.all(kind)
