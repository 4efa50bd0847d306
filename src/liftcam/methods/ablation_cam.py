"""Ablation-CAM (Desai & Ramaswamy, WACV 2020): ``alpha_k = (s - s_{-k}) / s``.

``s_{-k}`` is the score with channel ``k`` replaced by the reference (zero by default: "zeroed"), from the
head alone: all K ablations of an image in batches. (The factored game's closed form would cost as much
to build, one pass per channel, as the ablations themselves.) 0 where ``s = 0``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..shapley import HeadGame
from .base import CamMethod, MethodInputs, Need


class AblationCam(CamMethod):
    name = "ablation-cam"
    needs = frozenset({Need.HEAD})
    uses_reference = True

    def weights(self, inputs: MethodInputs) -> Tensor:
        evaluator = inputs.require_evaluator()
        a = inputs.activations
        k = a.shape[1]
        # the full coalition first: s and s_{-k} from the same evaluation path, so that a channel that
        # changes nothing gets exactly 0
        coalitions = torch.cat([torch.ones(1, k, device=a.device), 1 - torch.eye(k, device=a.device)])
        rows = []
        for b in range(a.shape[0]):
            values = HeadGame(evaluator, b, inputs.reference[b]).values(coalitions)
            s, ablated = values[0], values[1:]
            rows.append(torch.where(s != 0, (s - ablated) / torch.where(s != 0, s, 1.0), 0.0).to(a.dtype))
        return torch.stack(rows)
