"""Built-in analyses: model-centric and dataset-centric correlation, accuracy prediction,
label-free accuracy estimation, and invariance profiles over magnitudes."""

from __future__ import annotations

from invkit.analysis.analyses import DatasetCentric, ModelCentric, PredictAccuracy
from invkit.analysis.estimation import EstimateAccuracy
from invkit.analysis.profiles import InvarianceProfile, LayerProfile
from invkit.plugin.hookspecs import hookimpl


@hookimpl
def register_analyses(register):
    register(ModelCentric)
    register(DatasetCentric)
    register(PredictAccuracy)
    register(EstimateAccuracy)
    register(InvarianceProfile)
    register(LayerProfile)
