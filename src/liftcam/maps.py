"""Turn channel coefficients into maps: the one place where ReLU, upsampling and scaling happen."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor


def weighted_sum(weights: Tensor, activations: Tensor) -> Tensor:
    """Raw map ``sum_k alpha_k A^k`` (B, h, w) from coefficients (B, K) and activations (B, K, h, w)."""
    return torch.einsum("bk,bkhw->bhw", weights, activations)


def minmax(maps: Tensor) -> Tensor:
    """Per-image min-max scaling of (B, ...) to [0, 1]; a constant map becomes all zeros, never NaN."""
    flat = maps.flatten(1)
    low = flat.min(dim=1, keepdim=True).values
    span = flat.max(dim=1, keepdim=True).values - low
    scaled = torch.where(span > 0, (flat - low) / torch.where(span > 0, span, torch.ones_like(span)), 0.0)
    return scaled.view_as(maps)


def upsample(maps: Tensor, size: Sequence[int]) -> Tensor:
    """Bilinear upsampling (align_corners=False) of (B, h, w) maps to ``size``."""
    if tuple(maps.shape[-2:]) == tuple(size):
        return maps
    return F.interpolate(maps[:, None], size=tuple(size), mode="bilinear", align_corners=False)[:, 0]


def normalized_maps(raw: Tensor, size: Sequence[int]) -> Tensor:
    """``minmax(upsample(ReLU(raw)))``: the maps users look at, (B, H, W) in [0, 1]."""
    return minmax(upsample(torch.relu(raw), size))
