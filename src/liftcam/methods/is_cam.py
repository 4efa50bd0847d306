"""IS-CAM (Naidu et al., 2020), torchcam's definition: Score-CAM's masks integrated along a path,

``alpha = softmax_k(1/N sum_{i=1..N} (f(c_i x * M_k)_c - f(x)_c))``,  ``c_i = sum_{j=1..i} j / N``,

``M_k`` as in SS-CAM (min-max at the layer's resolution, then upsampled), ``f(.)_c`` the target's logit
(torchcam's coefficients ``c_i`` grow past 1, as its code does). N K forward passes per image, fewer where
maps are constant: their masks are all zero, so every ``c_i x * M_k`` is the same zero input, run once.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .base import CamMethod, MethodInputs, Need
from .masked_inputs import InputScorer, layer_masks


class IsCam(CamMethod):
    """Args: n_samples (torchcam's default 10), batch_size (inputs per forward)."""

    name = "is-cam"
    needs = frozenset({Need.MODEL})

    def __init__(self, n_samples: int = 10, batch_size: int | None = None) -> None:
        self.n_samples = n_samples
        self.batch_size = batch_size

    def weights(self, inputs: MethodInputs) -> Tensor:
        scorer = InputScorer(inputs, self.batch_size)
        a = inputs.activations
        rows = []
        for b in range(a.shape[0]):
            masks = layer_masks(a[b], scorer.images.shape[2:])
            live = masks.flatten(1).amax(dim=1) > 0
            zero = masks.new_zeros(0 if bool(live.all()) else 1, *masks.shape[1:])  # every constant map's mask
            zero_score = scorer.masked(b, zero)  # the same at every step
            total = torch.zeros(a.shape[1], dtype=torch.float64, device=a.device)
            factor = 0.0
            for i in range(1, self.n_samples + 1):
                factor += i / self.n_samples
                scores = scorer.masked(b, masks[live], factor=factor)
                total[live] += (scores - inputs.scores[b]).double()
                total[~live] += (zero_score - inputs.scores[b]).double()
            rows.append(torch.softmax(total / self.n_samples, dim=0).to(a.dtype))
        return torch.stack(rows)
