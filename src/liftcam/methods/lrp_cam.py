"""LRP-CAM (Jung & Oh 2021, the official code's alternative SHAP approximator).

alpha_k = sum_ij Rel_kij,   Rel: LRP epsilon-rule relevance of the score on A through the head
"""

from __future__ import annotations

from torch import Tensor

from ..maps import spatial
from .base import CamMethod, MethodInputs, Need


class LrpCam(CamMethod):
    name = "lrp-cam"
    needs = frozenset({Need.LRP})

    def weights(self, inputs: MethodInputs) -> Tensor:
        return inputs.require("relevance").sum(dim=spatial(inputs.activations))
