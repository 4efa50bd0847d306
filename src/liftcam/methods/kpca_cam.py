"""KPCA-CAM (Karmani et al., 2024): EigenCAM with kernel PCA: the map is the activations' first kernel
principal component, ``P = sqrt(lambda_1) u_1``, where ``(lambda_1, u_1)`` is the top eigenpair of the centred
kernel matrix ``K_c = (I - 1/n) K (I - 1/n)``, ``K_ij = kappa(x_i, x_j)`` over the positions' channel vectors
``x_i`` (K,), themselves centred per channel. Kernels as scikit-learn's ``KernelPCA`` (pytorch-grad-cam's
``KPCA_CAM`` calls it): sigmoid ``tanh(gamma x.y + c0)`` (default), rbf ``exp(-gamma |x - y|^2)``, poly
``(gamma x.y + c0)^3``, linear ``x.y`` and cosine, ``gamma = 1/K`` unless given, ``c0 = 1``; the sign of
``u_1`` is scikit-learn's (its largest-magnitude entry positive), so the maps are equal.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from ..errors import LiftCamError
from .base import MapMethod, MethodInputs, MethodResult, Need

Kernel = Literal["sigmoid", "rbf", "poly", "linear", "cosine"]


def kernel_matrix(x: Tensor, kernel: Kernel, gamma: float) -> Tensor:
    """``K_ij = kappa(x_i, x_j)`` for the rows of ``x`` (B, n, K)."""
    dot = x @ x.transpose(1, 2)
    if kernel == "sigmoid":
        return torch.tanh(gamma * dot + 1.0)
    if kernel == "poly":
        return torch.pow(gamma * dot + 1.0, 3)
    if kernel == "linear":
        return dot
    if kernel == "rbf":
        norms = dot.diagonal(dim1=1, dim2=2)
        return torch.exp(-gamma * (norms[:, :, None] + norms[:, None, :] - 2 * dot).clamp(min=0))
    if kernel == "cosine":
        length = x.norm(dim=2).clamp(min=1e-300)
        cosine: Tensor = dot / (length[:, :, None] * length[:, None, :])
        return cosine
    raise LiftCamError(f"unknown kernel {kernel!r}; use sigmoid, rbf, poly, linear or cosine")


def first_kernel_component(maps: Tensor, kernel: Kernel = "sigmoid", gamma: float | None = None) -> Tensor:
    """``sqrt(lambda_1) u_1`` (B, ...) of ``maps`` (B, K, ...), in float64 and back."""
    b, k = maps.shape[:2]
    x = torch.nan_to_num(maps, nan=0.0).reshape(b, k, -1).transpose(1, 2).double()  # (B, n, K)
    x = x - x.mean(dim=1, keepdim=True)
    gram = kernel_matrix(x, kernel, 1.0 / k if gamma is None else gamma)
    centred = gram - gram.mean(dim=1, keepdim=True) - gram.mean(dim=2, keepdim=True)
    centred = centred + gram.mean(dim=(1, 2), keepdim=True)
    values, vectors = torch.linalg.eigh(centred)
    top, vector = values[:, -1].clamp(min=0), vectors[:, :, -1]  # (B,), (B, n)
    largest = vector.gather(1, vector.abs().argmax(dim=1, keepdim=True))
    vector = vector * torch.where(largest < 0, -1.0, 1.0)
    projection: Tensor = (vector * top.sqrt()[:, None]).to(maps.dtype)
    return projection.reshape(b, *maps.shape[2:])


class KpcaCam(MapMethod):
    """Args: kernel (default "sigmoid"), gamma (default 1/K)."""

    name = "kpca-cam"
    needs = frozenset[Need]()
    # not in the fast group: its eigenproblem grows as (hw)^3

    def __init__(self, kernel: Kernel = "sigmoid", gamma: float | None = None) -> None:
        self.kernel: Kernel = kernel
        self.gamma = gamma

    def compute(self, inputs: MethodInputs) -> MethodResult:
        return MethodResult(first_kernel_component(inputs.activations, self.kernel, self.gamma), None)
