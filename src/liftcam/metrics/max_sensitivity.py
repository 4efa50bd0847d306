"""Max-Sensitivity (Yeh et al., NeurIPS 2019), Quantus's ``MaxSensitivity``: how much a map changes when the
input is perturbed slightly, the worst case over ``n`` perturbations,

``max_{s <= n} ||L(x + eps_s) - L(x)||_F / ||L(x)||_F``,  ``eps_s ~ U(-r, r)`` per input value,

the method explaining each perturbed input again for the same class; lower is better (more robust). The noise
is drawn per image from a NumPy generator seeded with ``seed`` (Quantus: the global generator over the batch;
the same for one image and ``np.random.seed(seed)``), one perturbation after the other, the same noise for
every method. NaN for an all-zero map.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..errors import LiftCamError
from .base import Metric, MetricBatch, Scorer


class MaxSensitivity(Metric):
    name = "max_sensitivity"
    higher_is_better = False

    def __init__(self, samples: int = 10, radius: float = 0.2, seed: int = 0) -> None:
        if samples < 1 or not radius > 0:
            raise LiftCamError(f"Max-Sensitivity needs samples >= 1 and radius > 0, not {samples} and {radius}")
        self.samples = samples
        self.radius = radius
        self.seed = seed

    def parameters(self) -> dict[str, Any]:
        return {"samples": self.samples, "radius": self.radius, "seed": self.seed}

    def compute(self, batch: MetricBatch, scorer: Scorer) -> dict[str, dict[str, Tensor]]:
        if batch.reexplain is None:
            raise ValueError("Max-Sensitivity needs the methods to explain the perturbed inputs again (reexplain)")
        x = batch.inputs
        generators = [np.random.RandomState(self.seed) for _ in range(x.shape[0])]  # one stream per image
        worst = {m: torch.full((x.shape[0],), -torch.inf, dtype=torch.float64, device="cpu") for m in batch.maps}
        norms = {m: maps.flatten(1).double().norm(dim=1).cpu() for m, maps in batch.maps.items()}
        for _ in range(self.samples):
            noise = np.stack([g.uniform(-self.radius, self.radius, size=x[0].numel()) for g in generators])
            perturbed = (x.double() + torch.from_numpy(noise).to(x.device).view_as(x)).to(x.dtype)
            for method, maps in batch.maps.items():
                again = batch.reexplain[method](perturbed, batch.classes)
                change = (again - maps).flatten(1).double().norm(dim=1).cpu()
                worst[method] = torch.maximum(worst[method], change / norms[method])
        result = {}
        for method, value in worst.items():
            value = torch.where(norms[method] > 0, value, torch.nan)  # an all-zero map: no relative change
            result[method] = {self.name: value.float().to(x.device)}
        return result
