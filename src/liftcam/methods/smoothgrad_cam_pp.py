"""SmoothGrad-CAM++ (Omeiza et al., 2019), torchcam's definition: Grad-CAM++ with derivatives averaged over
noisy copies of the input,

``alpha_k = sum_ij a_kij ReLU(G1_kij)``,  ``a = G2 / (2 G2 + sum_ab A_kab G3 + 1e-8)``,

``Gp = 1/n sum_m (ds/dA(x + eps_m))^p``, ``eps_m ~ N(0, sigma^2)`` on the input tensor, ``A`` the clean input's
activations and ``s`` the target's logit (torchcam's numerator ``G2``, its "personal correction" of the
paper's ``G1``). One named difference: torchcam rectifies the *last* noisy copy's gradient; ours its mean
``G1`` over the copies, as the paper (equal for n = 1: tested). Seeded: each image's noise from a CPU
generator seeded with ``seed`` (torchcam: the global generator over the batch; the same for one image).
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..maps import per_channel, spatial
from .base import CamMethod, MethodInputs, Need


class SmoothGradCamPlusPlus(CamMethod):
    """Args: n_samples (torchcam's default 4), std (0.3, on the input tensor), seed."""

    name = "smoothgrad-cam++"
    needs = frozenset({Need.AT_INPUT})
    sampled = True

    def __init__(self, n_samples: int = 4, std: float = 0.3, seed: int = 0) -> None:
        self.n_samples = n_samples
        self.std = std
        self.seed = seed

    @classmethod
    def seeded(cls, seed: int = 0, n_samples: int | None = None) -> SmoothGradCamPlusPlus:
        return cls(seed=seed)

    def weights(self, inputs: MethodInputs) -> Tensor:
        images, at_input = inputs.require("images"), inputs.at_input
        assert at_input is not None
        a = inputs.activations
        # one stream per image, drawn copy by copy: an image's noise does not depend on its batch; the
        # batch's m-th copies go through the model together
        generators = [torch.Generator().manual_seed(self.seed) for _ in range(a.shape[0])]
        rows = torch.arange(a.shape[0], device=images.device)
        g1, g2, g3 = (torch.zeros_like(a) for _ in range(3))
        for _ in range(self.n_samples):
            noise = torch.cat(
                [torch.randn(images.shape[1:], generator=g, dtype=images.dtype, device="cpu")[None] for g in generators]
            )
            _, g = at_input(images + self.std * noise.to(images.device), rows)
            g1, g2, g3 = g1 + g, g2 + g.pow(2), g3 + g.pow(3)
        g1, g2, g3 = g1 / self.n_samples, g2 / self.n_samples, g3 / self.n_samples
        dims = spatial(a)
        ratio = g2 / (2 * g2 + per_channel((g3 * a).sum(dim=dims), a) + 1e-8)
        return (ratio * torch.relu(g1)).sum(dim=dims)
