"""Grad-CAM (Selvaraju et al., ICCV 2017): ``alpha_k = mean_ij g_kij``."""

from __future__ import annotations

from torch import Tensor

from ..maps import spatial
from .base import CamMethod, MethodInputs, Need


class GradCam(CamMethod):
    name = "grad-cam"
    needs = frozenset({Need.GRADIENTS})
    single_pass = True

    def weights(self, inputs: MethodInputs) -> Tensor:
        return inputs.require("gradients").mean(dim=spatial(inputs.activations))
