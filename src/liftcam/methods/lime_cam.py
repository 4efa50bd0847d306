"""LIME-CAM (Jung & Oh 2021, the official code's alternative SHAP approximator).

A weighted Lasso fitted to the head's scores on random channel-presence masks ``z`` (absent channels
replaced by the reference, zero by default):
``alpha = argmin sum_n pi_n (v(z_n) - b - z_n . alpha)^2 / (2 sum pi) + lambda |alpha|_1``,
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
    sampled = True
    uses_reference = True

    @classmethod
    def seeded(cls, seed: int = 0, n_samples: int | None = None) -> LimeCam:
        """``seed``; the number of samples stays K (``n_samples`` is the Shapley estimators')."""
        return cls(seed=seed)

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
            # masks drawn on the CPU generator, so that a seed gives the same masks on every device
            generator = torch.Generator().manual_seed(self.seed)
            masks = torch.bernoulli(torch.full((n, k), 0.5, device="cpu"), generator=generator)
            reference = inputs.reference[b]
            game = image_game(evaluator, b, reference, fast=self.fast, coalitions=n)
            y = game.values(masks.to(a.device)).cpu().double()
            # cosine similarity of A and A_z = R + z (A - R), from per-channel inner products (channels are
            # orthogonal blocks): <A, A_z> = sum_k <A_k, R_k> + z_k <A_k, A_k - R_k>, likewise ||A_z||^2
            ak, rk = a[b].double().flatten(1), reference.double().flatten(1)
            dk = ak - rk
            a_r, a_d = (ak * rk).sum(1).cpu(), (ak * dk).sum(1).cpu()
            r_r, r_d, d_d = (rk * rk).sum(1).cpu(), (rk * dk).sum(1).cpu(), (dk * dk).sum(1).cpu()
            z = masks.double()
            inner = a_r.sum() + z @ a_d
            norm_z = (r_r.sum() + 2 * z @ r_d + z @ d_d).clamp_min(0).sqrt()
            norm_a = (ak * ak).sum().sqrt().cpu()
            cosine = inner / (norm_z * norm_a).clamp_min(1e-12)
            similarity = torch.exp(-((1 - cosine) ** 2) / (2 * self.kernel_width**2))
            model = Lasso(alpha=self.alpha)
            model.fit(masks.numpy(), y.numpy(), sample_weight=similarity.numpy())
            rows.append(torch.as_tensor(model.coef_, dtype=a.dtype, device=a.device))
        return torch.stack(rows)
