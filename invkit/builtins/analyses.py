"""Built-in analyses: model-centric and dataset-centric correlation, accuracy prediction, and
label-free accuracy estimation."""

from __future__ import annotations

from invkit.analysis.analyses import DatasetCentric, ModelCentric, PredictAccuracy
from invkit.analysis.estimation import EstimateAccuracy
from invkit.plugin.hookspecs import hookimpl


@hookimpl
def register_analyses(register):
    register(ModelCentric)
    register(DatasetCentric)
    register(PredictAccuracy)
    register(EstimateAccuracy)
