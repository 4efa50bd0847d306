"""Turn channel coefficients into maps: the one place where ReLU, upsampling and scaling happen."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor


def spatial(activations: Tensor) -> tuple[int, ...]:
    """The spatial dimensions of maps (B, K, ...): ``(2,)`` for 1-D, ``(2, 3)`` for 2-D, ``(2, 3, 4)`` for 3-D."""
    return tuple(range(2, activations.dim()))


def per_channel(values: Tensor, activations: Tensor) -> Tensor:
    """(N, K) values shaped to broadcast against maps (N, K, ...)."""
    return values.reshape(*values.shape, *([1] * (activations.dim() - values.dim())))


def weighted_sum(weights: Tensor, activations: Tensor) -> Tensor:
    """Raw map ``sum_k alpha_k A^k`` (B, ...) from coefficients (B, K) and activations (B, K, ...)."""
    return torch.einsum("bk,bk...->b...", weights, activations)


def minmax(maps: Tensor) -> Tensor:
    """Per-image min-max scaling of (B, ...) to [0, 1]; a constant map becomes all zeros, never NaN."""
    flat = maps.flatten(1)
    low = flat.min(dim=1, keepdim=True).values
    span = flat.max(dim=1, keepdim=True).values - low
    scaled = torch.where(span > 0, (flat - low) / torch.where(span > 0, span, torch.ones_like(span)), 0.0)
    return scaled.view_as(maps)


#: Interpolation of maps with 1, 2 or 3 spatial dimensions.
INTERPOLATION = {1: "linear", 2: "bilinear", 3: "trilinear"}


def upsample(maps: Tensor, size: Sequence[int]) -> Tensor:
    """(Bi/tri)linear upsampling (align_corners=False) of (B, ...) maps to ``size``."""
    if tuple(maps.shape[1:]) == tuple(size):
        return maps
    mode = INTERPOLATION[len(size)]
    return F.interpolate(maps[:, None], size=tuple(size), mode=mode, align_corners=False)[:, 0]


def normalized_maps(raw: Tensor, size: Sequence[int]) -> Tensor:
    """``minmax(upsample(ReLU(raw)))``: the maps users look at, (B, H, W) (or (B, L), (B, T, H, W)) in [0, 1]."""
    return minmax(upsample(torch.relu(raw), size))
