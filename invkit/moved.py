"""Modules that moved keep their old import names, for plugins written against an older invkit
(docs/architecture.md): the finder below serves each old name with the module at its new
place, and a folder that was once a module gives that module's names (``names_of``)."""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
from collections.abc import Callable
from typing import Any

MOVED_MODULES = {  # old name → where the module lives now (docs/architecture.md)
    "invkit.aggregate": "invkit.analysis.aggregate",
    "invkit.analysis_render": "invkit.analysis.render",
    "invkit.checkpoints": "invkit.inputs.checkpoints",
    "invkit.classes": "invkit.inputs.classes",
    "invkit.data": "invkit.inputs.data",
    "invkit.engine": "invkit.run.engine",
    "invkit.hub": "invkit.inputs.hub",
    "invkit.preprocessing": "invkit.inputs.preprocessing",
    "invkit.reaper": "invkit.run.reaper",
    "invkit.report_formats": "invkit.report.formats",
    "invkit.results.aggregate": "invkit.analysis.aggregate",
    "invkit.results.analyses": "invkit.analysis.analyses",
    "invkit.results.estimation": "invkit.analysis.estimation",
    "invkit.results.formats": "invkit.report.formats",
    "invkit.results.render": "invkit.analysis.render",
    "invkit.results.report": "invkit.report.report",
    "invkit.results.stats": "invkit.analysis.stats",
    "invkit.stats": "invkit.analysis.stats",
    "invkit.store": "invkit.results.store",
    "invkit.usercode": "invkit.inputs.usercode",
}


class _MovedModules(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Imports of a module by its old name (``from invkit.stats import pearson``, as a plugin
    may have written) give the module at its new place: the same module object, loaded only
    when asked for."""

    def find_spec(self, name, path, target=None):
        return importlib.util.spec_from_loader(name, self) if name in MOVED_MODULES else None

    def create_module(self, spec):
        return importlib.import_module(MOVED_MODULES[spec.name])

    def exec_module(self, module):
        pass


def install() -> dict[str, str]:
    """Let the old names import (once per process); returns the map of old to new names."""
    if not any(isinstance(finder, _MovedModules) for finder in sys.meta_path):
        sys.meta_path.append(_MovedModules())
    return MOVED_MODULES


def names_of(module: str) -> Callable[[str], Any]:
    """A folder's ``__getattr__`` that gives the public names of ``module``, the module the
    folder's name once was (``from invkit.report import rerender``)."""

    def __getattr__(name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(importlib.import_module(module), name)

    return __getattr__
