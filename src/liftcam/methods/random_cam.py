"""RandomCAM (pytorch-grad-cam's sanity baseline): ``alpha_k ~ U(-1, 1)``, independent of the model's
decision; seeded (drawn on the CPU, so that a seed gives the same coefficients on every device). A metric
that cannot tell a method from RandomCAM does not measure faithfulness."""

from __future__ import annotations

import torch
from torch import Tensor

from .base import CamMethod, MethodInputs, Need


class RandomCam(CamMethod):
    """Args: seed."""

    name = "random-cam"
    needs = frozenset[Need]()
    sampled = True  # a baseline: not in the fast group

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed

    @classmethod
    def seeded(cls, seed: int = 0, n_samples: int | None = None) -> RandomCam:
        return cls(seed=seed)

    def weights(self, inputs: MethodInputs) -> Tensor:
        a = inputs.activations
        generator = torch.Generator().manual_seed(self.seed)
        alpha = torch.rand(a.shape[:2], generator=generator, dtype=torch.float64, device="cpu") * 2 - 1
        return alpha.to(dtype=a.dtype, device=a.device)
