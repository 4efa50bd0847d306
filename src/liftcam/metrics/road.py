"""ROAD, Remove And Debias (Rong et al., ICML 2022), as pytorch-grad-cam computes it.

For a percentile ``p``, MoRF removes the pixels whose map value is at least the map's ``p``-th percentile
(the most relevant ``100 - p`` %), LeRF those whose ``1 - L`` is (the least relevant), and fills them by
noisy linear imputation (:mod:`.imputation`), which leaves no sharp mask edge for the model to read.
Per image, the score change ``p_c(x_removed) - p_c(x)`` is averaged over the percentiles (10, 20, ..., 90):

``road_morf = mean_p (p_c(MoRF_p(x)) - p_c(x))`` (lower is better), ``road_lerf`` likewise (higher is better),
and the headline ``road = (road_lerf - road_morf) / 2`` (pytorch-grad-cam's ``ROADCombined``; higher is better).

The noise is seeded per image (a CPU generator seeded with ``seed``, drawn method by method, percentile by
percentile), so an image's value does not depend on its batch. A constant map (all zeros) ranks no pixel:
every pixel would be removed and nothing is left to impute from; its values are NaN (left out of the means).
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import torch
from torch import Tensor

from ..errors import LiftCamError
from .base import Metric, MetricBatch, Scorer, split_methods, stack_methods
from .imputation import add_noise, linear_imputation

DEFAULT_PERCENTILES = (10, 20, 30, 40, 50, 60, 70, 80, 90)


def removed_pixels(heat: Tensor, percentile: float, most_relevant: bool) -> Tensor:
    """The pixels (H, W) ROAD removes at ``percentile``: ``L >= q_p(L)`` (MoRF) or ``1 - L >= q_p(1 - L)``
    (LeRF), ``q_p`` numpy's linear percentile."""
    ranked = heat if most_relevant else 1 - heat
    threshold = torch.quantile(ranked.flatten().double(), percentile / 100)
    return ranked.double() >= threshold


class Road(Metric):
    name = "road"
    higher_is_better = True

    def __init__(self, percentiles: Sequence[float] = DEFAULT_PERCENTILES, noise: float = 0.01, seed: int = 0) -> None:
        self.percentiles = tuple(float(p) for p in percentiles)
        if not self.percentiles or not all(0 < p < 100 for p in self.percentiles):
            raise LiftCamError(f"ROAD's percentiles must be between 0 and 100, not {list(percentiles)}")
        if not noise >= 0:
            raise LiftCamError(f"ROAD's noise must be >= 0, not {noise}")
        self.noise = noise
        self.seed = seed

    @property
    def values(self) -> tuple[str, ...]:
        return ("road", "road_morf", "road_lerf")

    def parameters(self) -> dict[str, Any]:
        return {"percentiles": list(self.percentiles), "noise": self.noise, "seed": self.seed}

    def compute(self, batch: MetricBatch, scorer: Scorer) -> dict[str, dict[str, Tensor]]:
        names, maps, classes = stack_methods(batch)
        b = batch.inputs.shape[0]
        base = batch.base_scores(scorer)
        steps = [(most, p) for most in (True, False) for p in self.percentiles]
        t = len(steps)
        generators = [torch.Generator().manual_seed(self.seed) for _ in range(b)]  # one stream per image

        flat = maps.flatten(1)
        constant = flat.amax(dim=1) == flat.amin(dim=1)  # no ranking: every pixel would be removed

        def make(lo: int, hi: int) -> Tensor:
            jobs = []
            for index in range(lo, hi):
                row, (most, percentile) = index // t, steps[index % t]
                removed = removed_pixels(maps[row], percentile, most)
                jobs.append((row % b, removed & ~constant[row]))
            # the sparse solves in parallel threads (SuperLU releases the GIL); the noise after them, in order
            with ThreadPoolExecutor(max(1, torch.get_num_threads())) as pool:
                filled = list(pool.map(lambda job: linear_imputation(batch.inputs[job[0]], job[1]), jobs))
            pairs = zip(filled, jobs, strict=True)
            noisy = [add_noise(f, removed, self.noise, generators[image]) for f, (image, removed) in pairs]
            return torch.stack(noisy)

        scores = scorer.generate(make, maps.shape[0] * t, classes.repeat_interleave(t)).view(-1, t)
        change = scores - base.repeat(len(names))[:, None]
        half = len(self.percentiles)
        change[constant] = torch.nan
        morf, lerf = change[:, :half].mean(dim=1), change[:, half:].mean(dim=1)
        result = {}
        for name, m, lf in zip(
            names, split_methods(names, morf, b).values(), split_methods(names, lerf, b).values(), strict=True
        ):
            result[name] = {"road": (lf - m) / 2, "road_morf": m, "road_lerf": lf}
        return result
