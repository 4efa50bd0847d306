"""LayerCAM (Jiang et al., TIP 2021): map ``sum_k ReLU(g_k) * A_k`` elementwise."""

from __future__ import annotations

import torch

from .base import MapMethod, MethodInputs, MethodResult, Need


class LayerCam(MapMethod):
    name = "layer-cam"
    needs = frozenset({Need.GRADIENTS})
    single_pass = True

    def compute(self, inputs: MethodInputs) -> MethodResult:
        return MethodResult.of_terms(torch.relu(inputs.require("gradients")) * inputs.activations)
