"""Everything a plugin author needs, and nothing else: the hooks, the ``hookimpl`` marker, the
component base classes and records, and the types a study's passes and executors exchange.

``docs/hooks.md`` documents each hook; ``docs/architecture.md`` shows where each fits.
"""

from invkit.plugin.components import JobOutcome, LoadedModel, Measure, Preprocessing, Transform
from invkit.plugin.hookspecs import hookimpl

__all__ = ["JobOutcome", "LoadedModel", "Measure", "Preprocessing", "Transform", "hookimpl"]
