"""Grad-CAM element-wise (pytorch-grad-cam's ``GradCAMElementWise``): map ``sum_k ReLU(g_k * A_k)``, the
products rectified before the channel sum (HiResCAM rectifies after it)."""

from __future__ import annotations

import torch

from .base import MapMethod, MethodInputs, MethodResult, Need


class GradCamElementWise(MapMethod):
    name = "grad-cam-elementwise"
    needs = frozenset({Need.GRADIENTS})
    single_pass = True

    def compute(self, inputs: MethodInputs) -> MethodResult:
        return MethodResult.of_terms(torch.relu(inputs.require("gradients") * inputs.activations))
