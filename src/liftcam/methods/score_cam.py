"""Score-CAM (Wang et al., CVPRW 2020): ``alpha_k = softmax(f(x * M_k))_c``.

``M_k`` is the map ``A_k`` upsampled bilinearly to the input size and min-max scaled to [0, 1]
(a constant map gives ``M_k = 0``); the model runs on every masked input, in batches, without autograd.
All-zero masks (constant maps) are evaluated once. For a score function target (or a region of a
dense output), ``alpha_k`` is that score of the masked input's output, without softmax.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ..capture import model_output_logits
from ..maps import INTERPOLATION, minmax
from ..targets import image_targets
from .base import CamMethod, MethodInputs, Need


class ScoreCam(CamMethod):
    """Args: batch_size (masked inputs per forward; default 16, less if 256 MiB would not hold them),
    align_corners (False as in the Score-CAM paper's code; pytorch-grad-cam upsamples with True),
    channels_last (masked inputs in channels-last memory format: 1.2-1.7x faster convolutions on CPU)."""

    name = "score-cam"
    needs = frozenset({Need.MODEL})

    def __init__(self, batch_size: int | None = None, align_corners: bool = False, channels_last: bool = True) -> None:
        self.batch_size = batch_size
        self.align_corners = align_corners
        self.channels_last = channels_last

    def weights(self, inputs: MethodInputs) -> Tensor:
        images, model = inputs.require("images"), inputs.model
        assert model is not None
        a = inputs.activations
        size = images.shape[2:]
        per_input = images[0].numel() * images.element_size() * 16
        # larger batches are slower per image on CPU (cache), so 16 unless memory is short
        batch = self.batch_size or max(1, min(16, (256 * 2**20) // per_input))
        memory_format = torch.channels_last if self.channels_last and images.dim() == 4 else torch.contiguous_format
        rows = []
        for b in range(a.shape[0]):
            mode = INTERPOLATION[len(size)]
            up = F.interpolate(a[b : b + 1], size=size, mode=mode, align_corners=self.align_corners)[0]
            masks = minmax(up)
            live = masks.flatten(1).amax(dim=1) > 0
            distinct = torch.cat([masks[live], masks.new_zeros(1, *size)])  # all-zero masks share one input
            scores = []
            with torch.inference_mode():
                for start in range(0, distinct.shape[0], batch):
                    masked = images[b : b + 1] * distinct[start : start + batch, None]
                    masked = masked.contiguous(memory_format=memory_format)
                    logits = model_output_logits(model(masked))
                    if inputs.score_function is not None:  # a function, or a region of a dense output
                        score = image_targets(inputs.score_function, b, logits.shape[0])
                        assert callable(score)
                        scores.append(score(logits))
                    else:
                        scores.append(logits.softmax(dim=1)[:, inputs.targets[b]])
            values = torch.cat(scores)
            alpha = values[-1].expand(a.shape[1]).clone()
            alpha[live] = values[:-1]
            rows.append(alpha)
        return torch.stack(rows)
