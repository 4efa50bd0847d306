"""HiResCAM (Draelos & Carin, 2020): map ``sum_k g_k * A_k`` elementwise, no channel coefficients."""

from __future__ import annotations

from .base import CamMethod, MethodInputs, MethodResult, Need


class HiResCam(CamMethod):
    name = "hires-cam"
    needs = frozenset({Need.GRADIENTS})
    single_pass = True
    has_coefficients = False

    def weights(self, inputs: MethodInputs) -> None:
        return None

    def compute(self, inputs: MethodInputs) -> MethodResult:
        return MethodResult.of_terms(inputs.require("gradients") * inputs.activations)
