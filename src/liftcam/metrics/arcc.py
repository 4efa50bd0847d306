"""ARCC (pytorch-grad-cam's): ADCC with ROAD as its faithfulness term, per image, higher is better:

    ARCC = 3 / (1 / (Coherency + e) + 1 / (1 - Complexity + e) + 1 / (R + e)),   e = 1e-8,
    R = clip(2 * ROAD, 0, 1)

with ADCC's Coherency and Complexity (the map's mean) and ROAD the combined value ``(LeRF - MoRF) / 2`` at the
percentiles 20, 40, 60 and 80 (pytorch-grad-cam's ARCC defaults). Values in [0, 1]; ``arcc_road`` is R.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import Tensor

from .adcc import coherency
from .base import Metric, MetricBatch, Scorer
from .road import Road


class Arcc(Metric):
    name = "arcc"

    def __init__(
        self, road_percentiles: Sequence[float] = (20, 40, 60, 80), noise: float = 0.01, seed: int = 0
    ) -> None:
        self.road = Road(road_percentiles, noise, seed)

    @property
    def values(self) -> tuple[str, ...]:
        return ("arcc", "arcc_road")

    def parameters(self) -> dict[str, Any]:
        return {"road_percentiles": list(self.road.percentiles), "noise": self.road.noise, "seed": self.road.seed}

    def compute(self, batch: MetricBatch, scorer: Scorer) -> dict[str, dict[str, Tensor]]:
        road = self.road.compute(batch, scorer)
        out: dict[str, dict[str, Tensor]] = {}
        for method, maps in batch.maps.items():
            coherent = coherency(batch, method, maps).double()
            complexity = maps.flatten(1).abs().mean(dim=1).double()
            scaled = (2 * road[method]["road"].double()).clamp(0, 1)
            eps = 1e-8
            arcc = 3 / (1 / (coherent + eps) + 1 / (1 - complexity + eps) + 1 / (scaled + eps))
            out[method] = {"arcc": arcc.float(), "arcc_road": scaled.float()}
        return out
