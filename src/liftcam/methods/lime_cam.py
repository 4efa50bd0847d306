"""LIME-CAM (Jung & Oh 2021, the official code's alternative SHAP approximator).

A weighted Lasso fitted to the head's scores on random channel-presence masks ``z`` (absent channels
zeroed): ``alpha = argmin sum_n pi_n (v(z_n) - b - z_n . alpha)^2 / (2 sum pi) + lambda |alpha|_1``,
with ``pi_n = exp(-d_n^2 / (2 width^2))``, ``d_n`` the cosine distance between ``A`` and ``A_{z_n}``.
Defaults as the official code (captum's Lime): K samples, each channel kept with probability 1/2,
width 1.0, lambda 0.01; seeded.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..errors import LiftCamError
from ..shapley import image_game
from .base import CamMethod, MethodInputs, Need


class LimeCam(CamMethod):
    """Args: n_samples (default K), seed, kernel_width, alpha (the Lasso's lambda), fast."""

    name = "lime-cam"
    needs = frozenset({Need.HEAD})

    def __init__(
        self,
        n_samples: int | None = None,
        seed: int = 0,
        kernel_width: float = 1.0,
        alpha: float = 0.01,
        fast: bool = True,
    ) -> None:
        self.n_samples = n_samples
        self.seed = seed
        self.kernel_width = kernel_width
        self.alpha = alpha
        self.fast = fast

    def weights(self, inputs: MethodInputs) -> Tensor:
        try:
            from sklearn.linear_model import Lasso
        except ImportError:
            raise LiftCamError("lime-cam needs scikit-learn: pip install 'liftcam[lime]'") from None
        evaluator = inputs.require_evaluator()
        a = inputs.activations
        k = a.shape[1]
        n = self.n_samples or k
        rows = []
        for b in range(a.shape[0]):
            generator = torch.Generator().manual_seed(self.seed)
            masks = torch.bernoulli(torch.full((n, k), 0.5), generator=generator)
            game = image_game(evaluator, b, torch.zeros_like(a[b]), fast=self.fast)
            y = game.values(masks.to(a.device)).cpu().double()
            # cosine similarity of A and A_z: channels are orthogonal blocks, so it needs only ||A_k||^2
            energy = (a[b].double() ** 2).sum(dim=(1, 2)).cpu()
            cosine = (masks.double() @ energy).clamp_min(0).sqrt() / energy.sum().sqrt().clamp_min(1e-12)
            similarity = torch.exp(-((1 - cosine) ** 2) / (2 * self.kernel_width**2))
            model = Lasso(alpha=self.alpha)
            model.fit(masks.numpy(), y.numpy(), sample_weight=similarity.numpy())
            rows.append(torch.as_tensor(model.coef_, dtype=a.dtype))
        return torch.stack(rows).to(a.device)
