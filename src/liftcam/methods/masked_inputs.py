"""The explained score of one image's modified inputs (masked, scaled, noisy), through the whole model.

Score-CAM and its smoothed and integrated variants evaluate the model on many copies of one image, each
multiplied by a mask. :class:`InputScorer` runs them in chunks (``capture.logits_in_chunks``, as the metrics'
scorer does) and reads each output's score: the target's logit or, for Score-CAM, its softmax probability; a
function or region target's own score, without softmax.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch.nn.functional as F
from torch import Tensor

from ..capture import CPU_CHUNK, chunk_size, chunk_within, in_chunks, logits_in_chunks
from ..maps import INTERPOLATION
from ..targets import image_targets
from .base import MethodInputs

#: Memory for one chunk of masked inputs (the chunk is 16 inputs unless that would not fit).
CHUNK_BYTES = 256 * 2**20


class InputScorer:
    """Scores of image ``b``'s modified inputs, ``batch_size`` per forward (default: 16, fewer if
    :data:`CHUNK_BYTES` would not hold them; on CUDA, :func:`~liftcam.capture.chunk_size`'s up to 128)."""

    def __init__(self, inputs: MethodInputs, batch_size: int | None = None, channels_last: bool = True) -> None:
        self.images = inputs.require("images")
        assert inputs.model is not None
        self.model = inputs.model
        self.inputs = inputs
        # larger batches are slower per image on CPU (cache), so 16 unless memory is short; more on CUDA
        on_cpu = chunk_within(self.images[0].numel() * self.images.element_size(), CPU_CHUNK, CHUNK_BYTES)
        self.batch = batch_size or chunk_size(self.images, on_cpu)
        self.channels_last = channels_last

    def __call__(self, b: int, modified: Tensor, probability: bool = False) -> Tensor:
        """The scores (N,) of ``modified`` (N, C, ...) copies of image ``b``: the target's logit (its softmax
        probability with ``probability``), or a function or region target's score."""

        def read(logits: Tensor, start: int, stop: int) -> Tensor:
            if self.inputs.score_function is not None:  # a function, or a region of a dense output
                score = image_targets(self.inputs.score_function, b, logits.shape[0])
                assert callable(score)
                return score(logits)
            if probability:
                return logits.softmax(dim=1)[:, self.inputs.targets[b]]
            return logits[:, self.inputs.targets[b]]

        return logits_in_chunks(self.model, modified, self.batch, read, self.channels_last)

    def masked(self, b: int, masks: Tensor, probability: bool = False, factor: float = 1.0) -> Tensor:
        """The scores (N,) of image ``b`` times each mask (N, H, W), times ``factor``, in chunks (the masked
        inputs are made one chunk at a time)."""
        image = self.images[b : b + 1]
        empty = image.new_zeros(0)
        return in_chunks(
            masks.shape[0], self.batch, lambda i, j: self(b, image * masks[i:j, None] * factor, probability), empty
        )


def layer_masks(maps: Tensor, size: Sequence[int]) -> Tensor:
    """torchcam's masks of one image's maps (K, h, w): each min-max scaled at the layer's resolution,
    ``(A - min) / (max - min + 1e-8)``, then upsampled (bi/trilinearly, ``align_corners=False``) to ``size``."""
    flat = maps.flatten(1)
    shifted = flat - flat.min(dim=1, keepdim=True).values
    scaled = (shifted / (shifted.max(dim=1, keepdim=True).values + 1e-8)).view_as(maps)
    mode = INTERPOLATION[len(size)]
    return F.interpolate(scaled[None], size=tuple(size), mode=mode, align_corners=False)[0]
