"""The user's own code named by a ``python:`` model spec: what may be imported, and its fingerprint.

A ``python:`` spec runs code, so invkit only runs code that is plausibly a model's: a factory
from a ``.py`` file the user names, or from an installed package that is neither the standard
library nor invkit itself. ``python:os:system`` or ``python:subprocess:run`` are refused from
their names alone, before anything is imported; a factory that is a re-export of such a
function (``from os import system`` in a user's module) is refused before it is called.
"""

from __future__ import annotations

import functools
import importlib
import importlib.metadata
import importlib.util
import inspect
import os
import re
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from invkit.errors import InvkitError
from invkit.fingerprint import file_sha256
from invkit.inputs.checkpoints import existing_file

USAGE = "python:path/to/models.py:FACTORY or python:package.module:FACTORY"
FILE_MODULE_PREFIX = "invkit_user_model_"


def split_python_spec(rest: str) -> tuple[str, str]:
    """``MODULE:FACTORY`` or ``FILE.py:FACTORY`` → (module or file, factory name)."""
    module_name, sep, factory_name = rest.rpartition(":")
    if not sep or not module_name or not factory_name:
        raise InvkitError(f"python model spec {rest!r} must be MODULE:FACTORY, e.g. {USAGE}")
    return module_name, factory_name


INVKIT_MODEL_MODULES = ("invkit.demo.models",)  # invkit's own model code: the demo's population

# Libraries whose loaders read pickles or run code, whether or not invkit depends on them.
DESERIALISERS = ("cloudpickle", "dill", "joblib", "jsonpickle", "pandas", "yaml", "onnx")
# What to write instead of a dependency's own loader, by its top-level module.
INSTEAD = {
    "timm": 'spec = "timm:NAME" (weights = "file.safetensors" for local weights)',
    "torchvision": 'spec = "torchvision:NAME" (weights_file = "state_dict.pt" for local weights)',
    "torch": 'spec = "torchscript:model.pt" for a TorchScript file, or your own python: factory '
    'with checkpoint = "weights.safetensors" (torch.load and torch.hub run pickles and code)',
}
DEFAULT_INSTEAD = (
    'your own python: factory (a .py file or your package) with checkpoint = "weights.safetensors"'
    "; checkpoints load as tensors only, unless --trust-checkpoints"
)


def module_owners() -> Mapping[str, list[str]]:
    """Each installed top-level module → the distributions providing it. Reading it walks
    every installed file (0.7 s here, which 150 ``python:`` models would pay 150 times), so it
    is read again only when the import path or one of its folders changed (an install)."""
    return _owners(tuple((entry, _changed(entry)) for entry in sys.path))


def _changed(entry: str) -> int:
    try:
        return os.stat(entry or ".").st_mtime_ns
    except OSError:
        return 0


@functools.lru_cache(maxsize=1)
def _owners(import_path: tuple[tuple[str, int], ...]) -> Mapping[str, list[str]]:
    return importlib.metadata.packages_distributions()


@functools.cache
def dependency_modules() -> frozenset[str]:
    """The top-level modules of invkit's installed dependencies, direct and indirect (with every
    extra), and of the known deserialisers: none of them is a model's code, and many have
    loaders that run pickles (``torch.load``, ``numpy.load``) or code (``torch.hub.load``)."""
    from invkit.plugins import normalize

    provided: dict[str, set[str]] = {}  # distribution → the import names it provides
    for top, owners in module_owners().items():
        for owner in owners:
            provided.setdefault(normalize(owner), set()).add(top)
    seen: set[str] = set()
    pending = ["invkit"]
    while pending:
        name = pending.pop()
        try:
            requires = importlib.metadata.requires(name) or []
        except importlib.metadata.PackageNotFoundError:
            continue
        for requirement in requires:
            match = re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", requirement)
            if match and match.group(0).lower() not in seen:
                seen.add(match.group(0).lower())
                pending.append(match.group(0))
    modules = set(DESERIALISERS) | set(INSTEAD) | {"numpy", "safetensors", "kornia", "PIL"}
    for distribution in seen:
        modules |= provided.get(normalize(distribution), set())
    return frozenset(modules)


LAYER_MODULES = ("torch.nn",)  # layer classes (python:torch.nn:Identity): classes only, no loader


def _is_layer_module(module_name: str) -> bool:
    return any(module_name == m or module_name.startswith(f"{m}.") for m in LAYER_MODULES)


def _forbidden_reason(module_name: str) -> str | None:
    if module_name in INVKIT_MODEL_MODULES or _is_layer_module(module_name):
        return None
    top = module_name.split(".")[0]
    if top in sys.stdlib_module_names or top == "__main__":
        return "is Python's standard library, not a model's code"
    if top == "invkit":
        return "is invkit itself, not a model's code"
    if top in dependency_modules():
        return (
            "is a library that invkit or a loader depends on, not a model's code; instead use "
            + INSTEAD.get(top, DEFAULT_INSTEAD)
        )
    return None


def check_python_spec(rest: str) -> None:
    """Refuse, from the spec's text alone, a module that cannot hold a model factory."""
    module_name, _ = split_python_spec(rest)
    if module_name.endswith(".py"):
        return
    reason = _forbidden_reason(module_name)
    if reason is not None:
        raise InvkitError(
            f"python:{rest} is refused: {module_name!r} {reason}. A python: spec names your own "
            f"model factory: {USAGE} (docs/reliability.md)"
        )


def _load_file_module(path: Path) -> Any:
    spec = importlib.util.spec_from_file_location(f"{FILE_MODULE_PREFIX}{path.stem}", path)
    if spec is None or spec.loader is None:
        raise InvkitError(f"cannot import {str(path)!r} as a Python file")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _import_module(module_name: str, rest: str) -> Any:
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as error:
        raise InvkitError(
            f"cannot import module {module_name!r} for python:{rest} ({error}); install it, "
            "add its folder to PYTHONPATH, or give a file: python:path/to/models.py:FACTORY"
        ) from None


def _is_module_class(factory: Any) -> bool:
    import torch

    return isinstance(factory, type) and issubclass(factory, torch.nn.Module)


def import_factory(rest: str) -> Any:
    """The factory a ``python:`` spec names, checked to be a model's code before any call.

    Accepted: a ``torch.nn.Module`` subclass, or a function defined in the named file or in a
    non-standard-library, non-invkit module.
    """
    check_python_spec(rest)
    module_name, factory_name = split_python_spec(rest)
    if module_name.endswith(".py"):
        module = _load_file_module(existing_file(module_name, "model file"))
    else:
        module = _import_module(module_name, rest)
    factory = getattr(module, factory_name, None)
    if not callable(factory):
        raise InvkitError(f"module {module_name!r} has no callable {factory_name!r}")
    if _is_module_class(factory):
        return factory
    if _is_layer_module(module_name):
        raise InvkitError(
            f"python:{rest} is refused: from {module_name!r} only a torch.nn.Module class (a "
            f"layer such as python:torch.nn:Identity) is accepted; {factory_name!r} is not one"
        )
    if not inspect.isfunction(factory):
        raise InvkitError(
            f"python:{rest} names a {type(factory).__name__}, not a function or a "
            "torch.nn.Module subclass; a python: spec names a factory that builds your model"
        )
    home = getattr(factory, "__module__", "") or ""
    defined_in_file = module_name.endswith(".py") and home == module.__name__
    reason = None if defined_in_file else _forbidden_reason(home)
    if reason is not None:
        raise InvkitError(
            f"python:{rest} is refused: {factory_name!r} comes from {home!r}, which {reason}; "
            f"name a factory defined in your own file or package ({USAGE})"
        )
    return factory


def distribution_versions(top_level: str) -> list[str]:
    """``name==version`` of each installed distribution providing a top-level module."""
    names = module_owners().get(top_level, [])
    versions = []
    for name in sorted(set(names)):
        try:
            versions.append(f"{name}=={importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            continue
    return versions


def python_spec_fingerprint(rest: str) -> dict[str, Any]:
    """What identifies the code a ``python:`` spec runs: a file's bytes, or a module's source
    file and its distribution's version. Editing the code changes it; touching it does not."""
    check_python_spec(rest)
    module_name, _ = split_python_spec(rest)
    if module_name.endswith(".py"):
        path = existing_file(module_name, "model file")
        return {"file": file_sha256(path)}
    try:
        spec = importlib.util.find_spec(module_name)
    except (ImportError, ValueError):
        spec = None
    if spec is None:
        raise InvkitError(
            f"cannot find module {module_name!r} for python:{rest}; install it, add its folder "
            "to PYTHONPATH, or give a file: python:path/to/models.py:FACTORY"
        )
    origin = spec.origin if spec.origin and Path(spec.origin).is_file() else None
    return {
        "source": file_sha256(origin) if origin else None,
        "distribution": distribution_versions(module_name.split(".")[0]),
    }
