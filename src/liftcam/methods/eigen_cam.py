"""EigenCAM (Muhammad & Yeasin, IJCNN 2020): map ``P = X v_1``, the activations' first principal component.

``X`` (hw, K) holds the maps ``A_k`` as columns, centred per channel; ``v_1`` its first right singular
vector (see :mod:`liftcam.methods.principal` for the sign). Class-agnostic: no gradient, no target.
pytorch-grad-cam's ``EigenCAM`` computes the same map up to the SVD's sign, which it leaves to LAPACK.
"""

from __future__ import annotations

from .base import MapMethod, MethodInputs, MethodResult, Need
from .principal import first_component


class EigenCam(MapMethod):
    name = "eigen-cam"
    needs = frozenset[Need]()
    single_pass = True

    def compute(self, inputs: MethodInputs) -> MethodResult:
        projection, direction = first_component(inputs.activations)
        return MethodResult(projection, None, {"direction": direction})
