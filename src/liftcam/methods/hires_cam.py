"""HiResCAM (Draelos & Carin, 2020): map ``sum_k g_k * A_k`` elementwise, no channel coefficients."""

from __future__ import annotations

from .base import MapMethod, MethodInputs, MethodResult, Need


class HiResCam(MapMethod):
    name = "hires-cam"
    needs = frozenset({Need.GRADIENTS})
    single_pass = True

    def compute(self, inputs: MethodInputs) -> MethodResult:
        return MethodResult.of_terms(inputs.require("gradients") * inputs.activations)
