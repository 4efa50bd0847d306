"""Shapley-CAM (Cai 2025, arXiv:2501.06261): ``alpha_k = mean_ij (g - H A / 2)_kij``.

``H A`` is the Hessian of the score w.r.t. the activations applied to the activations (a
Hessian-vector product, by double backward through the head); it vanishes for piecewise-linear heads,
where Shapley-CAM equals Grad-CAM.
"""

from __future__ import annotations

from torch import Tensor

from ..maps import spatial
from .base import CamMethod, MethodInputs, Need


class ShapleyCam(CamMethod):
    name = "shapley-cam"
    needs = frozenset({Need.GRADIENTS, Need.HESSIAN})

    def weights(self, inputs: MethodInputs) -> Tensor:
        g = inputs.require("gradients")
        return (g - 0.5 * inputs.require("hessian_vector")).mean(dim=spatial(inputs.activations))
