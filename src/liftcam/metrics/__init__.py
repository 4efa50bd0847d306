"""Evaluation metrics, one per module, sharing batched model evaluation (:mod:`.base`).

Faithfulness: Average Drop, Increase in Confidence, Average Drop in Deletion, ADCC, Deletion and
Insertion AUC. Localisation: energy-based pointing game, pointing game. Fidelity of coefficients to
Shapley values: :mod:`.shapley_fidelity`.
"""

from __future__ import annotations

from typing import Any

from ..errors import LiftCamError
from .adcc import Adcc
from .average_drop import AverageDrop
from .average_drop_in_deletion import AverageDropInDeletion
from .base import Metric, MetricBatch, Scorer
from .deletion import Deletion
from .energy_pointing_game import EnergyPointingGame
from .increase_in_confidence import IncreaseInConfidence
from .insertion import Insertion
from .pointing_game import PointingGame
from .shapley_fidelity import FIDELITY_METRICS, fidelity

_METRICS: dict[str, type[Metric]] = {
    m.name: m
    for m in (
        AverageDrop,
        IncreaseInConfidence,
        AverageDropInDeletion,
        Adcc,
        Deletion,
        Insertion,
        EnergyPointingGame,
        PointingGame,
    )
}
#: Names of the evaluation metrics.
METRICS: tuple[str, ...] = tuple(_METRICS)


def get_metric(name: str, **parameters: Any) -> Metric:
    """The metric registered under ``name``, with the parameters it accepts."""
    try:
        cls = _METRICS[name]
    except KeyError:
        raise LiftCamError(f"unknown metric {name!r}; available: {', '.join(METRICS)}") from None
    import inspect

    accepted = inspect.signature(cls).parameters
    return cls(**{k: v for k, v in parameters.items() if k in accepted})


__all__ = [
    "FIDELITY_METRICS",
    "METRICS",
    "Adcc",
    "AverageDrop",
    "AverageDropInDeletion",
    "Deletion",
    "EnergyPointingGame",
    "IncreaseInConfidence",
    "Insertion",
    "Metric",
    "MetricBatch",
    "PointingGame",
    "Scorer",
    "fidelity",
    "get_metric",
]
