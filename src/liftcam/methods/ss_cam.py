"""SS-CAM (Wang et al., 2020), torchcam's definition: Score-CAM's masks smoothed with noise,

``alpha = softmax_k(1/N sum_n (f(x * (M_k + delta_n))_c - f(x)_c))``,  ``delta_n ~ N(0, sigma^2)`` per pixel,

``M_k`` the map ``A_k`` min-max scaled at the layer's resolution (``(A - min) / (max + 1e-8)``) and upsampled
bilinearly to the input; ``f(.)_c`` the target's logit. Seeded: each image's noise comes from a CPU generator
seeded with ``seed``, drawn sample by sample over the image's K masks (torchcam draws from the global
generator over the whole batch: for one image and ``torch.manual_seed(seed)``, the same noise). N K forward
passes per image.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .base import CamMethod, MethodInputs, Need
from .masked_inputs import InputScorer, layer_masks

#: Channels whose noise is drawn at once (a multiple of 16 values: the same stream as one whole draw).
NOISE_CHANNELS = 16


class SsCam(CamMethod):
    """Args: n_samples (torchcam's default 35), std (2.0), seed, batch_size (inputs per forward)."""

    name = "ss-cam"
    needs = frozenset({Need.MODEL})
    sampled = True

    def __init__(self, n_samples: int = 35, std: float = 2.0, seed: int = 0, batch_size: int | None = None) -> None:
        self.n_samples = n_samples
        self.std = std
        self.seed = seed
        self.batch_size = batch_size

    @classmethod
    def seeded(cls, seed: int = 0, n_samples: int | None = None) -> SsCam:
        return cls(seed=seed)

    def weights(self, inputs: MethodInputs) -> Tensor:
        scorer = InputScorer(inputs, self.batch_size)
        a = inputs.activations
        rows = []
        for b in range(a.shape[0]):
            masks = layer_masks(a[b], scorer.images.shape[2:])  # (K, H, W)
            generator = torch.Generator().manual_seed(self.seed)
            total = torch.zeros(a.shape[1], dtype=torch.float64, device=a.device)
            # the noisy masks are made a chunk of the scorer's at a time (whole pieces of 16 channels)
            step = NOISE_CHANNELS * -(-scorer.batch // NOISE_CHANNELS)
            for _ in range(self.n_samples):
                for start in range(0, masks.shape[0], step):
                    part = masks[start : start + step]
                    noise = torch.randn(part.shape, generator=generator, dtype=part.dtype, device="cpu") * self.std
                    scores = scorer.masked(b, part + noise.to(part.device))
                    total[start : start + part.shape[0]] += (scores - inputs.scores[b]).double()
            rows.append(torch.softmax(total / self.n_samples, dim=0).to(a.dtype))
        return torch.stack(rows)
