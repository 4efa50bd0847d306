"""EigenGradCAM (pytorch-grad-cam): EigenCAM of the elementwise products ``g_k * A_k``: ``P = X v_1`` with
``X`` (hw, K) the centred products; class-specific through the gradient ``g = ds/dA``."""

from __future__ import annotations

from .base import MapMethod, MethodInputs, MethodResult, Need
from .principal import first_component


class EigenGradCam(MapMethod):
    name = "eigen-grad-cam"
    needs = frozenset({Need.GRADIENTS})
    single_pass = True

    def compute(self, inputs: MethodInputs) -> MethodResult:
        projection, direction = first_component(inputs.require("gradients") * inputs.activations)
        return MethodResult(projection, None, {"direction": direction})
