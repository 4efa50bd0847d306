"""Grad-CAM++ (Chattopadhay et al., WACV 2018).

alpha_k = sum_ij a_kij ReLU(g_kij),   a = g^2 / (2 g^2 + sum_ab A_kab g^3)   (0 where the denominator is 0)
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..maps import spatial
from .base import CamMethod, MethodInputs, Need


class GradCamPlusPlus(CamMethod):
    name = "grad-cam++"
    needs = frozenset({Need.GRADIENTS})
    single_pass = True

    def weights(self, inputs: MethodInputs) -> Tensor:
        g = inputs.require("gradients")
        a_sum = inputs.activations.sum(dim=spatial(inputs.activations), keepdim=True)
        g2 = g * g
        denominator = 2 * g2 + a_sum * g2 * g
        nonzero = denominator != 0
        a = torch.where(nonzero, g2 / torch.where(nonzero, denominator, torch.ones_like(denominator)), 0.0)
        return (a * torch.relu(g)).sum(dim=spatial(inputs.activations))
