"""invkit: how invariant are image classifiers to transformations of their input, and how does
that invariance correlate with accuracy?

Importing this package is cheap: plugins (and torch) load on first use.
"""

from invkit import moved
from invkit.api import (
    get_analysis,
    get_component,
    get_executor,
    get_layer_measure,
    get_measure,
    get_shift,
    get_transform,
    list_components,
    load_dataset,
    load_model,
    load_outputs,
    load_per_view,
    open_study,
    run_pass,
    run_study,
)
from invkit.errors import InvkitError
from invkit.plugin.components import (
    Estimate,
    Estimator,
    LayerAccumulator,
    LayerMeasure,
    LoadedModel,
    Measure,
    Preprocessing,
    Transform,
)
from invkit.plugin.hookspecs import hookimpl
from invkit.plugin.passes import JobOutcome
from invkit.version import __version__

MOVED_MODULES = moved.install()


__all__ = [
    "Estimate",
    "Estimator",
    "InvkitError",
    "JobOutcome",
    "LayerAccumulator",
    "LayerMeasure",
    "LoadedModel",
    "Measure",
    "Preprocessing",
    "Transform",
    "__version__",
    "get_analysis",
    "get_component",
    "get_executor",
    "get_layer_measure",
    "get_measure",
    "get_shift",
    "get_transform",
    "hookimpl",
    "list_components",
    "load_dataset",
    "load_model",
    "load_outputs",
    "load_per_view",
    "open_study",
    "run_pass",
    "run_study",
]
