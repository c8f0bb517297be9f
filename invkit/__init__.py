"""invkit: how invariant are image classifiers to transformations of their input, and how does
that invariance correlate with accuracy?

Importing this package is cheap: plugins (and torch) load on first use.
"""

import importlib as _importlib
import importlib.abc as _abc
import importlib.util as _util
import sys as _sys
from importlib import metadata as _metadata

from invkit.api import (
    get_analysis,
    get_component,
    get_executor,
    get_measure,
    get_shift,
    get_transform,
    list_components,
    load_dataset,
    load_model,
    load_outputs,
    run_pass,
)
from invkit.errors import InvkitError
from invkit.plugin.components import Estimator, LoadedModel, Measure, Preprocessing, Transform
from invkit.plugin.hookspecs import hookimpl
from invkit.plugin.passes import JobOutcome

MOVED_MODULES = {  # old name → where the module lives now (docs/architecture.md)
    "invkit.aggregate": "invkit.results.aggregate",
    "invkit.analysis": "invkit.results.analyses",
    "invkit.analysis_render": "invkit.results.render",
    "invkit.engine": "invkit.run.engine",
    "invkit.report": "invkit.results.report",
    "invkit.report_formats": "invkit.results.formats",
    "invkit.stats": "invkit.results.stats",
    "invkit.store": "invkit.results.store",
}


class _MovedModules(_abc.MetaPathFinder, _abc.Loader):
    """Imports of a module by its old name (``from invkit.stats import pearson``, as a plugin
    may have written) give the module at its new place: the same module object, loaded only
    when asked for."""

    def find_spec(self, name, path, target=None):
        return _util.spec_from_loader(name, self) if name in MOVED_MODULES else None

    def create_module(self, spec):
        return _importlib.import_module(MOVED_MODULES[spec.name])

    def exec_module(self, module):
        pass


_sys.meta_path.append(_MovedModules())

try:
    __version__ = _metadata.version("invkit")
except _metadata.PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+unknown"

__all__ = [
    "Estimator",
    "InvkitError",
    "JobOutcome",
    "LoadedModel",
    "Measure",
    "Preprocessing",
    "Transform",
    "__version__",
    "get_analysis",
    "get_component",
    "get_executor",
    "get_measure",
    "get_shift",
    "get_transform",
    "hookimpl",
    "list_components",
    "load_dataset",
    "load_model",
    "load_outputs",
    "run_pass",
]
