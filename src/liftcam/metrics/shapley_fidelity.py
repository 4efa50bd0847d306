"""Shapley fidelity: how close a method's coefficients ``alpha`` are to reference Shapley values ``phi``.

Pearson, Spearman (average ranks for ties), cosine similarity, sign agreement (fraction of channels
where ``sign(alpha) = sign(phi)``; zero is its own sign, and values within 1e-6 of the largest
magnitude count as zero, so that float noise on inactive channels is not a sign), top-10 overlap (shared channels
among the 10 largest of each, over 10), and the Pearson correlation of the two normalised maps
``minmax(upsample(ReLU(sum_k c_k A^k)))``. A correlation of a constant vector is NaN.

Completeness (Sundararajan et al.'s axiom; Quantus checks it as a yes/no): ``sum_k alpha_k / sum_k phi_k``,
where ``sum_k phi_k = F(A)_c - F(R)_c`` (Shapley values are efficient): 1 when the coefficients account for
exactly the score's change from the reference (LIFT-CAM: its summation-to-delta), NaN when that change is 0.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from ..maps import normalized_maps, weighted_sum
from .similarity import pearson, spearman

FIDELITY_METRICS: tuple[str, ...] = (
    "pearson",
    "spearman",
    "cosine",
    "sign_agreement",
    "top10_overlap",
    "map_pearson",
    "completeness",
)


def cosine(a: Tensor, b: Tensor) -> float:
    a, b = a.double().flatten(), b.double().flatten()
    denominator = float(a.norm() * b.norm())
    return float(a @ b) / denominator if denominator > 0 else float("nan")


def _sign(x: Tensor, tolerance: float = 1e-6) -> Tensor:
    """Sign with values within ``tolerance * max|x|`` of zero counted as zero (float noise)."""
    x = x.double()
    return torch.where(x.abs() <= tolerance * x.abs().max(), 0.0, torch.sign(x))


def sign_agreement(a: Tensor, b: Tensor) -> float:
    return float((_sign(a) == _sign(b)).double().mean())


def top_k_overlap(a: Tensor, b: Tensor, k: int = 10) -> float:
    k = min(k, a.numel())
    top_a = set(a.flatten().topk(k).indices.tolist())
    top_b = set(b.flatten().topk(k).indices.tolist())
    return len(top_a & top_b) / k


def map_pearson(alpha: Tensor, phi: Tensor, activations: Tensor, size: Sequence[int]) -> float:
    """Pearson between the maps of ``alpha`` and ``phi`` (K,) on one image's activations (K, h, w)."""
    coefficients = torch.stack([alpha, phi]).to(activations.dtype)
    maps = normalized_maps(weighted_sum(coefficients, activations[None].expand(2, -1, -1, -1)), size)
    return pearson(maps[0], maps[1])


def completeness(alpha: Tensor, phi: Tensor) -> float:
    """``sum alpha / sum phi``; NaN when ``sum phi = 0``."""
    total = float(phi.double().sum())
    return float(alpha.double().sum()) / total if total != 0 else float("nan")


def fidelity(alpha: Tensor, phi: Tensor, activations: Tensor, size: Sequence[int]) -> dict[str, float]:
    """Every fidelity metric of coefficients ``alpha`` against Shapley values ``phi`` (K,) for one image."""
    return {
        "pearson": pearson(alpha, phi),
        "spearman": spearman(alpha, phi),
        "cosine": cosine(alpha, phi),
        "sign_agreement": sign_agreement(alpha, phi),
        "top10_overlap": top_k_overlap(alpha, phi),
        "map_pearson": map_pearson(alpha, phi, activations, size),
        "completeness": completeness(alpha, phi),
    }
