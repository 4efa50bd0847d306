"""Evaluation metrics, one per module, sharing batched model evaluation (:mod:`.base`).

Faithfulness: Average Drop, Increase in Confidence, Average Drop in Deletion, ADCC, Deletion and
Insertion AUC, ROAD, ARCC, Faithfulness Correlation. Localisation: energy-based pointing game, pointing
game, Relevance Mass Accuracy. Complexity of the map alone: Sparseness, entropy complexity. Robustness:
Max-Sensitivity. Sanity: the random logit test, model parameter randomisation (:mod:`.randomisation`,
similarities in :mod:`.similarity`). Fidelity of coefficients to Shapley values: :mod:`.shapley_fidelity`.
"""

from __future__ import annotations

import inspect
from typing import Any

from ..errors import LiftCamError
from .adcc import Adcc
from .arcc import Arcc
from .average_drop import AverageDrop
from .average_drop_in_deletion import AverageDropInDeletion
from .base import Metric, MetricBatch, Scorer
from .deletion import Deletion
from .energy_pointing_game import EnergyPointingGame
from .entropy_complexity import EntropyComplexity
from .faithfulness_correlation import FaithfulnessCorrelation
from .increase_in_confidence import IncreaseInConfidence
from .insertion import Insertion
from .max_sensitivity import MaxSensitivity
from .pointing_game import PointingGame
from .random_logit import RandomLogit
from .randomisation import ModelParameterRandomisation, model_parameter_randomisation
from .relevance_mass_accuracy import RelevanceMassAccuracy
from .road import Road
from .shapley_fidelity import FIDELITY_METRICS, fidelity
from .sparseness import Sparseness

_METRICS: dict[str, type[Metric]] = {
    m.name: m
    for m in (
        AverageDrop,
        IncreaseInConfidence,
        AverageDropInDeletion,
        Adcc,
        Arcc,
        Deletion,
        Insertion,
        EnergyPointingGame,
        PointingGame,
        Road,
        FaithfulnessCorrelation,
        RelevanceMassAccuracy,
        Sparseness,
        EntropyComplexity,
        MaxSensitivity,
        RandomLogit,
        ModelParameterRandomisation,
    )
}
#: Names of the evaluation metrics.
METRICS: tuple[str, ...] = tuple(_METRICS)
#: Metrics computed only when named (``--metrics all`` leaves them out): the randomisation test explains
#: every image again after re-initialising each of the model's layers.
ON_REQUEST_METRICS: tuple[str, ...] = ("mprt",)


def _metric_class(name: str) -> type[Metric]:
    try:
        return _METRICS[name]
    except KeyError:
        raise LiftCamError(f"unknown metric {name!r}; available: {', '.join(METRICS)}") from None


def metric_parameters(name: str) -> tuple[str, ...]:
    """The names of the parameters the metric ``name`` accepts."""
    return tuple(inspect.signature(_metric_class(name)).parameters)


def get_metric(name: str, **parameters: Any) -> Metric:
    """The metric registered under ``name``, configured with ``parameters``; an unknown parameter
    (a misspelled ``stpe=``) is refused, never dropped."""
    accepted = metric_parameters(name)
    unknown = sorted(set(parameters) - set(accepted))
    if unknown:
        raise LiftCamError(
            f"metric {name!r} has no parameter {', '.join(unknown)}; its parameters: {', '.join(accepted) or 'none'}"
        )
    return _metric_class(name)(**parameters)


__all__ = [
    "FIDELITY_METRICS",
    "METRICS",
    "ON_REQUEST_METRICS",
    "Adcc",
    "Arcc",
    "AverageDrop",
    "AverageDropInDeletion",
    "Deletion",
    "EnergyPointingGame",
    "EntropyComplexity",
    "FaithfulnessCorrelation",
    "IncreaseInConfidence",
    "Insertion",
    "MaxSensitivity",
    "Metric",
    "MetricBatch",
    "ModelParameterRandomisation",
    "PointingGame",
    "RandomLogit",
    "RelevanceMassAccuracy",
    "Road",
    "Scorer",
    "Sparseness",
    "fidelity",
    "get_metric",
    "metric_parameters",
    "model_parameter_randomisation",
]
