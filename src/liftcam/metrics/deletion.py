"""Deletion AUC (RISE): pixels replaced by ``fill`` (in input-tensor space), most important first;
lower is better. The curve is returned as ``deletion_curve``."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from .base import Metric, MetricBatch, Scorer
from .curves import perturbation_curves, trapezoid_auc


class Deletion(Metric):
    name = "deletion"
    higher_is_better = False

    def __init__(self, step: float = 1 / 224, fill: float = 0.0) -> None:
        self.step = step
        self.fill = fill

    @property
    def values(self) -> tuple[str, ...]:
        return ("deletion", "deletion_curve")

    def parameters(self) -> dict[str, Any]:
        return {"step": self.step, "fill": self.fill}

    def compute(self, batch: MetricBatch, scorer: Scorer) -> dict[str, dict[str, Tensor]]:
        filled = torch.full_like(batch.inputs, self.fill)
        curves, counts = perturbation_curves(batch, scorer, batch.inputs, filled, self.step)
        return {m: {"deletion": trapezoid_auc(c, counts), "deletion_curve": c} for m, c in curves.items()}
