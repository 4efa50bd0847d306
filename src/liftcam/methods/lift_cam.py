"""LIFT-CAM (Jung & Oh, ICCV 2021): coefficients are DeepLIFT approximations of SHAP values.

    alpha_k = sum_ij m_kij (A_kij - R_kij)

with ``m`` the DeepLIFT (Rescale) multipliers of the score through the head against the reference
``R``. By summation-to-delta, ``sum_k alpha_k = F(A)_c - F(R)_c``; on a linear head ``alpha`` are the
exact Shapley values of the activation maps.
"""

from __future__ import annotations

from torch import Tensor

from ..maps import spatial
from .base import CamMethod, MethodInputs, Need


class LiftCam(CamMethod):
    name = "lift-cam"
    needs = frozenset({Need.DEEPLIFT})
    single_pass = True
    uses_reference = True

    def weights(self, inputs: MethodInputs) -> Tensor:
        m = inputs.require("multipliers")
        diff = inputs.activations - inputs.require("reference")
        return (m * diff).sum(dim=spatial(inputs.activations))
