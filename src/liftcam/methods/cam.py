"""CAM (Zhou et al., CVPR 2016): ``alpha_k = W[c, k]`` of the final Linear of a GAP + Linear head."""

from __future__ import annotations

from torch import Tensor

from ..errors import TargetError
from ..targets import CUSTOM_TARGET
from .base import CamMethod, MethodInputs, Need


class Cam(CamMethod):
    name = "cam"
    needs = frozenset({Need.LINEAR_HEAD})
    single_pass = True

    def weights(self, inputs: MethodInputs) -> Tensor:
        if bool((inputs.targets == CUSTOM_TARGET).any()):
            raise TargetError("cam explains a class; it cannot explain a custom score function")
        return inputs.require("linear_weight")[inputs.targets]
