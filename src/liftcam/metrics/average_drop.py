"""Average Drop (Chattopadhay et al., 2018): ``AD = 100 * mean(max(0, Y - O) / Y)``, lower is better.

``Y = p_c(x)``, ``O = p_c(x * L)``: the map multiplies the model's input tensor. 0 where ``Y = 0``.
``clip=False`` drops the ``max(0, .)`` (a variant some papers report).
"""

from __future__ import annotations

from typing import Any

from torch import Tensor

from .base import Metric, MetricBatch, Scorer, masked_scores, relative_drop


class AverageDrop(Metric):
    name = "average_drop"
    higher_is_better = False

    def __init__(self, clip: bool = True) -> None:
        self.clip = clip

    def parameters(self) -> dict[str, Any]:
        return {"clip": self.clip}

    def compute(self, batch: MetricBatch, scorer: Scorer) -> dict[str, dict[str, Tensor]]:
        base = batch.base_scores(scorer)
        kept = masked_scores(batch, scorer, keep=True)
        return {m: {self.name: relative_drop(base, o, self.clip)} for m, o in kept.items()}
