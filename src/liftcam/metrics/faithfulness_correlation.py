"""Faithfulness Correlation (Bhatt et al., IJCAI 2020), Quantus's ``FaithfulnessCorrelation``: removing a
random subset of input features should lower the score by as much as the map puts on that subset,

``rho = pearson_{s <= n}( sum_{i in S_s} L_i,  p_c(x) - p_c(x_{S_s <- b}) )``,

over ``n = runs`` random subsets ``S_s`` of ``subset_size`` values of the input tensor (C x H x W values;
a pixel's map value counts for each of its channels), the removed values set to the image's smallest input
value (Quantus's ``"black"`` baseline). Higher is better. The subsets are drawn per image from a NumPy
generator seeded with ``seed`` (the same as Quantus's for one image after ``np.random.seed(seed)``, which
also draws one unused uniform value after each subset), the same
for every method, so the model scores each perturbed input once for all methods (Quantus: once per method).
NaN when the map's subset sums or the score changes are constant (an all-zero map).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..errors import LiftCamError
from .base import Metric, MetricBatch, Scorer


def _row_pearson(a: Tensor, b: Tensor) -> Tensor:
    """Pearson's correlation of each row of ``a`` with the same row of ``b`` (float64); NaN if one is constant."""
    a = a - a.mean(dim=1, keepdim=True)
    b = b - b.mean(dim=1, keepdim=True)
    denominator = a.norm(dim=1) * b.norm(dim=1)
    return torch.where(denominator > 0, (a * b).sum(dim=1) / denominator, torch.nan)


class FaithfulnessCorrelation(Metric):
    name = "faithfulness_correlation"
    higher_is_better = True

    def __init__(self, runs: int = 100, subset_size: int = 224, seed: int = 0) -> None:
        if runs < 2 or subset_size < 1:
            raise LiftCamError(
                f"Faithfulness Correlation needs runs >= 2 and subset_size >= 1, not {runs}, {subset_size}"
            )
        self.runs = runs
        self.subset_size = subset_size
        self.seed = seed

    def parameters(self) -> dict[str, Any]:
        return {"runs": self.runs, "subset_size": self.subset_size, "seed": self.seed}

    def subsets(self, n_features: int, n_images: int) -> Tensor:
        """(B, runs, subset_size) indices into each image's flattened input tensor."""
        if self.subset_size > n_features:
            raise LiftCamError(f"subset_size {self.subset_size} exceeds the input's {n_features} values")
        rows = []
        for _ in range(n_images):
            generator = np.random.RandomState(self.seed)  # one stream per image
            subsets = []
            for _ in range(self.runs):
                subsets.append(generator.choice(n_features, self.subset_size, replace=False))
                generator.uniform()  # Quantus's baseline helper draws one uniform value per image and run
            rows.append(subsets)
        return torch.from_numpy(np.asarray(rows, dtype=np.int64))

    def compute(self, batch: MetricBatch, scorer: Scorer) -> dict[str, dict[str, Tensor]]:
        x = batch.inputs
        b, pixels = x.shape[0], x[0, 0].numel()
        flat = x.flatten(1)
        subsets = self.subsets(flat.shape[1], b).to(x.device)
        baseline = flat.min(dim=1).values

        def make(start: int, stop: int) -> Tensor:
            rows = torch.arange(start, stop, device=x.device)
            image, run = rows // self.runs, rows % self.runs
            perturbed = flat[image].clone()
            perturbed.scatter_(1, subsets[image, run], baseline[image, None].expand(-1, self.subset_size))
            return perturbed.view(-1, *x.shape[1:])

        classes = batch.classes.repeat_interleave(self.runs)
        perturbed_scores = scorer.generate(make, b * self.runs, classes).view(b, self.runs)
        drops = batch.base_scores(scorer).double()[:, None] - perturbed_scores.double()
        pixel = subsets % pixels  # the map value of an input value is its pixel's
        result = {}
        for method, maps in batch.maps.items():
            sums = torch.gather(maps.flatten(1).double(), 1, pixel.flatten(1)).view(b, self.runs, -1).sum(dim=2)
            result[method] = {self.name: _row_pearson(sums, drops).float()}
        return result
