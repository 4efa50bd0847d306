"""Increase in Confidence (Chattopadhay et al., 2018): ``IC = 100 * mean(1[O > Y])``, higher is better."""

from __future__ import annotations

from torch import Tensor

from .base import Metric, MetricBatch, Scorer, masked_scores


class IncreaseInConfidence(Metric):
    name = "increase_in_confidence"

    def compute(self, batch: MetricBatch, scorer: Scorer) -> dict[str, dict[str, Tensor]]:
        base = batch.base_scores(scorer)
        kept = masked_scores(batch, scorer, keep=True)
        return {m: {self.name: 100 * (o > base).float()} for m, o in kept.items()}
