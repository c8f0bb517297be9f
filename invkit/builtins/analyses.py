"""Built-in analyses: model-centric and dataset-centric correlation, accuracy prediction."""

from __future__ import annotations

from invkit.analysis import DatasetCentric, ModelCentric, PredictAccuracy
from invkit.plugin.hookspecs import hookimpl


@hookimpl
def register_analyses(register):
    register(ModelCentric)
    register(DatasetCentric)
    register(PredictAccuracy)
