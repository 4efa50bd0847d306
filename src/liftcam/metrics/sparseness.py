"""Sparseness (Chalasani et al., ICML 2020), Quantus's definition: the Gini index of the map's values,

``G = sum_i (2 i - n - 1) a_(i) / (n sum_i a_(i))``,  ``a_(1) <= ... <= a_(n)`` the sorted values plus 1e-7,

in [0, 1): 0 for a flat map, near 1 when a few pixels hold all the mass. Higher is sparser (more concentrated);
a property of the map alone, like Complexity.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .base import Metric, MetricBatch, Scorer


def gini(maps: Tensor) -> Tensor:
    """The Gini index (B,) of each map (B, ...) of non-negative values, in float64."""
    values = torch.sort(maps.flatten(1).double().abs() + 1e-7, dim=1).values
    n = values.shape[1]
    rank = torch.arange(1, n + 1, dtype=torch.float64, device=values.device)
    return ((2 * rank - n - 1) * values).sum(dim=1) / (n * values.sum(dim=1))


class Sparseness(Metric):
    name = "sparseness"
    higher_is_better = True

    def compute(self, batch: MetricBatch, scorer: Scorer) -> dict[str, dict[str, Tensor]]:
        return {m: {self.name: gini(maps).float()} for m, maps in batch.maps.items()}
