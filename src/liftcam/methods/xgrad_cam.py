"""XGrad-CAM (Fu et al., BMVC 2020): ``alpha_k = sum_ij (A_kij / sum_ab A_kab) g_kij`` (0 if the sum is 0)."""

from __future__ import annotations

import torch
from torch import Tensor

from ..maps import spatial
from .base import CamMethod, MethodInputs, Need


class XGradCam(CamMethod):
    name = "xgrad-cam"
    needs = frozenset({Need.GRADIENTS})
    single_pass = True

    def weights(self, inputs: MethodInputs) -> Tensor:
        a = inputs.activations
        total = a.sum(dim=spatial(inputs.activations))
        nonzero = total != 0
        weighted = (a * inputs.require("gradients")).sum(dim=spatial(inputs.activations))
        return torch.where(nonzero, weighted / torch.where(nonzero, total, torch.ones_like(total)), 0.0)
