"""Average Drop in Deletion (Jung & Oh, ICCV 2021): ``ADD = 100 * mean(max(0, Y - D) / Y)``.

``D = p_c(x * (1 - L))``: the explained region deleted; higher is better. 0 where ``Y = 0``.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor

from .base import Metric, MetricBatch, Scorer, masked_scores, relative_drop


class AverageDropInDeletion(Metric):
    name = "average_drop_in_deletion"

    def __init__(self, clip: bool = True) -> None:
        self.clip = clip

    def parameters(self) -> dict[str, Any]:
        return {"clip": self.clip}

    def compute(self, batch: MetricBatch, scorer: Scorer) -> dict[str, dict[str, Tensor]]:
        base = batch.base_scores(scorer)
        deleted = masked_scores(batch, scorer, keep=False)
        return {m: {self.name: relative_drop(base, d, self.clip)} for m, d in deleted.items()}
