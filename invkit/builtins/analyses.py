"""Built-in analyses: model-centric and dataset-centric correlation, accuracy prediction."""

from __future__ import annotations

from invkit.plugin.hookspecs import hookimpl
from invkit.results.analyses import DatasetCentric, ModelCentric, PredictAccuracy


@hookimpl
def register_analyses(register):
    register(ModelCentric)
    register(DatasetCentric)
    register(PredictAccuracy)
