"""Finer-CAM (Zhang et al., CVPR 2025): a gradient method explaining what sets class ``c`` apart from the
classes the model finds most similar, rather than ``c`` alone.

The score is pytorch-grad-cam's ``FinerWeightedTarget``: with ``z`` the logits, ``p = softmax(z)``, and ``S``
the classes ranked ``comparisons`` (default 1, 2, 3) by ``|z_j - z_c|`` (rank 0 is ``c`` itself),

``s = sum_{j in S} p_j (z_c - a z_j) / (sum_{j in S} p_j + 1e-9)``  (``a`` = ``alpha``, default 1),

differentiated as it is (through ``p`` too). The base method (default Grad-CAM: ``alpha_k = mean_ij ds/dA``)
then reads that gradient. One extra head pass: the body is not run again.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import torch
from torch import Tensor

from ..errors import TargetError
from ..tracing import layer_gradient
from .base import CamMethod, MethodInputs, MethodResult, Need


class FinerCam(CamMethod):
    """Args: alpha (the comparison strength), comparisons (the similarity ranks compared), base (a gradient
    method: its name or instance; default Grad-CAM; with a map-only base the weights are None)."""

    name = "finer-cam"
    needs = frozenset({Need.HEAD_PASS})
    single_pass = True
    needs_class_scores = True

    def __init__(self, alpha: float = 1.0, comparisons: Sequence[int] = (1, 2, 3), base: str | CamMethod = "grad-cam"):
        from . import get_method  # the registry imports this module

        self.alpha = alpha
        self.comparisons = tuple(comparisons)
        self.base = get_method(base)
        if self.base.needs != {Need.GRADIENTS}:
            raise TargetError(f"finer-cam's base must be a method of the gradient alone, not {self.base.name}")

    def finer_score(self, logits: Tensor, targets: Tensor) -> Tensor:
        """``s`` (B,) of logits (B, C) for the classes ``targets`` (B,)."""
        main = logits.gather(1, targets[:, None])
        order = torch.argsort((logits - main).abs().detach(), dim=1, stable=True)
        ranks = [r for r in self.comparisons if r < logits.shape[1]]
        if not ranks:
            raise TargetError("finer-cam needs at least two classes to compare")
        others = order[:, ranks]
        weights = torch.softmax(logits, dim=1).gather(1, others)
        contrast = main - self.alpha * logits.gather(1, others)
        return (weights * contrast).sum(dim=1) / (weights.sum(dim=1) + 1e-9)

    def weights(self, inputs: MethodInputs) -> Tensor | None:
        return self.compute(inputs).weights

    def compute(self, inputs: MethodInputs) -> MethodResult:
        if inputs.score_function is not None:
            raise TargetError("finer-cam compares classes of a (B, C) output; it has no region or function target")
        head = inputs.head
        assert head is not None
        leaf = inputs.activations.detach().requires_grad_(True)
        with torch.enable_grad():
            logits = head(leaf.clone())
            if logits.dim() != 2:
                raise TargetError(f"finer-cam compares classes of a (B, C) output, not {tuple(logits.shape)}")
            score = self.finer_score(logits, inputs.targets)
            gradients = layer_gradient(score, leaf, inputs.layer)
        result = self.base.compute(dataclasses.replace(inputs, gradients=gradients.detach()))
        extras = {**result.extras, "finer_score": score.detach()}
        return MethodResult(result.raw, result.weights, extras, result.contributions)
