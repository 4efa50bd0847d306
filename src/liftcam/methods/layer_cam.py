"""LayerCAM (Jiang et al., TIP 2021): map ``sum_k ReLU(g_k) * A_k`` elementwise."""

from __future__ import annotations

import torch
from torch import Tensor

from .base import CamMethod, MethodInputs, Need


class LayerCam(CamMethod):
    name = "layer-cam"
    needs = frozenset({Need.GRADIENTS})

    def weights(self, inputs: MethodInputs) -> None:
        return None

    def raw(self, inputs: MethodInputs) -> tuple[Tensor, None]:
        return (torch.relu(inputs.require("gradients")) * inputs.activations).sum(dim=1), None
