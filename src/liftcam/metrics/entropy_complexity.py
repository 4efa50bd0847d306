"""Complexity (Bhatt et al., IJCAI 2020), Quantus's ``Complexity``: the entropy of the map's values as a
distribution over the pixels,

``H = -sum_i p_i log(p_i + 1e-12)``,  ``p_i = |a_i| / sum_j |a_j|``,

between 0 (all the mass on one pixel) and ``log n`` (a flat map); lower is simpler. Named ``entropy_complexity``
here: ADCC's complexity (the map's mean, Poppi et al.) is another quantity. NaN for an all-zero map.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .base import Metric, MetricBatch, Scorer


def entropy(maps: Tensor) -> Tensor:
    """The entropy (B,) of each map (B, ...) normalised to sum 1, in float64 (NaN for an all-zero map)."""
    values = maps.flatten(1).double().abs()
    share = values / values.sum(dim=1, keepdim=True)
    return -(share * torch.log(share + 1e-12)).sum(dim=1)


class EntropyComplexity(Metric):
    name = "entropy_complexity"
    higher_is_better = False

    def compute(self, batch: MetricBatch, scorer: Scorer) -> dict[str, dict[str, Tensor]]:
        return {m: {self.name: entropy(maps).float()} for m, maps in batch.maps.items()}
