"""Shapley values of the activation maps as CAM coefficients (the paper's ideal coefficients).

    phi_k = sum_{S subset of N minus k} |S|!(K-|S|-1)!/K! (v(S + k) - v(S)),   v(S) = F(A_S)_c

exact by enumeration for small K, in closed form for an affine head, else estimated by antithetic
permutation sampling or KernelSHAP (``extras["stderr"]`` holds each value's standard error).
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..maps import weighted_sum
from ..shapley import Estimator, image_game, shapley_values
from .base import CamMethod, MethodInputs, MethodResult, Need


class Shap(CamMethod):
    """Args: estimator ("auto", "exact", "permutation", "kernel"); n_samples (permutations, or
    coalitions for KernelSHAP); seed; max_exact (largest K enumerated by "auto"); fast (use the
    factored head where it applies)."""

    name = "shap"
    needs = frozenset({Need.HEAD})
    uses_reference = True
    sampled = True
    ground_truth = True

    def __init__(
        self,
        estimator: Estimator = "auto",
        n_samples: int = 1000,
        seed: int = 0,
        max_exact: int = 16,
        fast: bool = True,
    ) -> None:
        self.estimator: Estimator = estimator
        self.n_samples = n_samples
        self.seed = seed
        self.max_exact = max_exact
        self.fast = fast

    @classmethod
    def seeded(cls, seed: int = 0, n_samples: int | None = None) -> Shap:
        return cls(seed=seed) if n_samples is None else cls(n_samples=n_samples, seed=seed)

    def weights(self, inputs: MethodInputs) -> Tensor:
        return self.compute(inputs).weights  # type: ignore[return-value]

    def compute(self, inputs: MethodInputs) -> MethodResult:
        evaluator = inputs.require_evaluator()
        a = inputs.activations
        values, errors = [], []
        for b in range(a.shape[0]):
            game = image_game(evaluator, b, inputs.reference[b], fast=self.fast)
            result = shapley_values(game, self.estimator, self.n_samples, self.seed, self.max_exact)
            values.append(result.values)
            errors.append(result.stderr)
        phi = torch.stack(values).to(a.dtype)
        return MethodResult(weighted_sum(phi, a), phi, {"stderr": torch.stack(errors).to(a.dtype)})
