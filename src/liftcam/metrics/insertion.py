"""Insertion AUC (RISE): from a blurred copy of the input (Gaussian, in input-tensor space), the
original pixels are restored, most important first; higher is better. The curve is ``insertion_curve``."""

from __future__ import annotations

from typing import Any

import torchvision.transforms.functional as TF
from torch import Tensor

from .base import Metric, MetricBatch, Scorer
from .curves import perturbation_curves, trapezoid_auc


class Insertion(Metric):
    name = "insertion"

    def __init__(self, step: float = 1 / 224, blur_kernel: int = 11, blur_sigma: float = 5.0) -> None:
        self.step = step
        self.blur_kernel = blur_kernel
        self.blur_sigma = blur_sigma

    @property
    def values(self) -> tuple[str, ...]:
        return ("insertion", "insertion_curve")

    def parameters(self) -> dict[str, Any]:
        return {"step": self.step, "blur_kernel": self.blur_kernel, "blur_sigma": self.blur_sigma}

    def compute(self, batch: MetricBatch, scorer: Scorer) -> dict[str, dict[str, Tensor]]:
        blurred = TF.gaussian_blur(batch.inputs, [self.blur_kernel] * 2, [self.blur_sigma] * 2)
        curves, counts = perturbation_curves(batch, scorer, blurred, batch.inputs, self.step)
        return {m: {"insertion": trapezoid_auc(c, counts), "insertion_curve": c} for m, c in curves.items()}
