"""What code a registered component runs, as a digest, so that editing it recomputes exactly the
numbers it shapes (docs/reliability.md, "Fingerprints see code").

The rule, for the module that defines the component and the module of the plugin that
registered it:

- a module of a plugin's own (any package that is neither invkit nor one of its dependencies):
  the bytes of every ``.py`` file of its top-level package (or of its one file), so that an
  edit anywhere in the plugin counts, helpers and constants included;
- a module with no file (a class typed into a notebook cell or ``python -c``): the live code
  of the component itself (each function's bytecode and constants), since nothing else holds it;
- invkit's own modules: invkit's version and the bytes of the defining module;
- a dependency of invkit (torch, kornia, …): its distributions' versions.
"""

from __future__ import annotations

import functools
import inspect
import marshal
import sys
import types
from pathlib import Path
from typing import Any

from invkit.fingerprint import digest, file_sha256


def component_version(kind: str, name: str) -> str:
    """``plugin==version code=DIGEST``: the plugin providing a component and the digest of the
    code it runs, the part of fingerprints that sees an edited plugin."""
    from invkit.lookup import get_component
    from invkit.plugins import get_host

    component = get_component(kind, name)
    host = get_host()
    versions = {p.name: p.version for p in host.plugins(include_builtins=True)}
    code = component_code(component.factory, host.pm.get_plugin(component.plugin))
    return f"{component.plugin}=={versions.get(component.plugin, '?')} code={code[:16]}"


def component_code(factory: Any, plugin: Any) -> str:
    """The digest of the code a component runs: its factory's module and its plugin's own."""
    modules = [_module_of(factory), _module_of(plugin)]
    parts = []
    for module in dict.fromkeys(m for m in modules if m is not None):
        parts.append(module_code(module, factory))
    return digest(parts)


def _module_of(obj: Any) -> types.ModuleType | None:
    if isinstance(obj, types.ModuleType):
        return obj
    name = getattr(obj, "__module__", None) or type(obj).__module__
    return sys.modules.get(name)


def module_code(module: types.ModuleType, factory: Any) -> list[Any]:
    """One module's part of a component's code digest (the rule in this module's docstring)."""
    from invkit.inputs.usercode import dependency_modules, distribution_versions
    from invkit.version import __version__

    top = module.__name__.split(".")[0]
    file = getattr(module, "__file__", None)
    if top == "invkit":
        return ["invkit", __version__, module.__name__, file_sha256(file) if file else None]
    if top in dependency_modules():
        return [top, distribution_versions(top)]
    package = sys.modules.get(top, module)
    folders = list(getattr(package, "__path__", []) or [])
    if folders:
        return [top, _folder_files(tuple(str(Path(f).resolve()) for f in folders))]
    if file and Path(file).is_file():
        return [top, file_sha256(file)]
    return [top, "live", live_code(factory)]


def _folder_files(folders: tuple[str, ...]) -> list[tuple[str, str]]:
    """Every ``.py`` file under a package's folders, by relative path, with its hash (each file's
    hash is cached by ``file_sha256`` for as long as the file is unchanged)."""
    files = []
    for folder in folders:
        for path in sorted(Path(folder).rglob("*.py")):
            if path.is_file():
                files.append((str(path.relative_to(folder)), file_sha256(path)))
    return files


def live_code(obj: Any) -> str:
    """A digest of an object's code as it runs now: a function's bytecode, constants and
    defaults; a class's methods and plain attributes, its bases included."""
    return digest(_live_parts(obj, set()))


def _live_parts(obj: Any, seen: set[int]) -> Any:
    if id(obj) in seen:
        return "(cycle)"
    seen.add(id(obj))
    if isinstance(obj, staticmethod | classmethod):
        return _live_parts(obj.__func__, seen)
    if isinstance(obj, property):
        return [_live_parts(f, seen) for f in (obj.fget, obj.fset, obj.fdel) if f is not None]
    if isinstance(obj, functools.partial):
        return [_live_parts(obj.func, seen), repr(obj.args), repr(sorted(obj.keywords.items()))]
    if inspect.isfunction(obj) or inspect.ismethod(obj):
        function = obj.__func__ if inspect.ismethod(obj) else obj
        return [
            marshal.dumps(function.__code__).hex(),
            repr(function.__defaults__),
            repr(function.__kwdefaults__),
        ]
    if isinstance(obj, type):
        parts: list[Any] = [obj.__qualname__]
        for base in obj.__mro__[1:]:  # a base defined beside it counts whole; others by name
            same_home = base.__module__ == obj.__module__
            parts.append(_live_parts(base, seen) if same_home else base.__qualname__)
        for name, value in sorted(vars(obj).items()):
            if name.startswith("__") and name not in ("__init__", "__call__"):
                continue
            parts.append([name, _live_parts(value, seen)])
        return parts
    if callable(obj) and hasattr(obj, "__dict__"):  # an instance that is called
        return [_live_parts(type(obj), seen), repr(sorted(vars(obj).items()))]
    return repr(obj)
