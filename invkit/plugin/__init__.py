"""Everything a plugin author needs, and nothing else: the hooks, the ``hookimpl`` marker, the
component base classes and records, and the types a study's passes and executors exchange.

``docs/hooks.md`` documents each hook; ``docs/architecture.md`` shows where each fits.
"""

from invkit.plugin.components import (
    Estimate,
    Estimator,
    LoadedModel,
    Measure,
    Preprocessing,
    Shift,
    Transform,
)
from invkit.plugin.hookspecs import hookimpl
from invkit.plugin.passes import Cell, JobOutcome, PassResult, PassSpec, Resolved

__all__ = [
    "Cell",
    "Estimate",
    "Estimator",
    "JobOutcome",
    "LoadedModel",
    "Measure",
    "PassResult",
    "PassSpec",
    "Preprocessing",
    "Resolved",
    "Shift",
    "Transform",
    "hookimpl",
]
