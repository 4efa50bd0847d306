"""Average Drop (Chattopadhay et al., 2018): ``AD = 100 * mean(max(0, Y - O) / Y)``, lower is better.

``Y = p_c(x)``, ``O = p_c(x * L)``: the map multiplies the model's input tensor. 0 where ``Y = 0``.
"""

from __future__ import annotations

from torch import Tensor

from .base import Metric, MetricBatch, Scorer, masked_scores, relative_drop


class AverageDrop(Metric):
    name = "average_drop"
    higher_is_better = False

    def compute(self, batch: MetricBatch, scorer: Scorer) -> dict[str, dict[str, Tensor]]:
        base = batch.base_scores(scorer)
        kept = masked_scores(batch, scorer, keep=True)
        return {m: {self.name: relative_drop(base, o)} for m, o in kept.items()}
