"""The first principal component of a batch of maps: the projection EigenCAM and its relatives draw.

For one image, ``X`` (hw, K) holds the maps as columns, centred per channel over the positions; the
projection on the first right singular vector ``v_1`` of ``X`` is the map ``P = X v_1`` (hw). An SVD's
sign is arbitrary (LAPACK implementations differ); ``P`` is oriented to correlate positively with the
channel sum ``sum_k M_k`` (where the maps are large), or, where that correlation vanishes, so that its
largest magnitude is positive (Seg-Eigen-CAM's rule).
"""

from __future__ import annotations

import torch
from torch import Tensor


def first_component(maps: Tensor) -> tuple[Tensor, Tensor]:
    """``(P, v_1)``: the projections (B, ...) of centred ``maps`` (B, K, ...) on their first principal
    direction (B, K), oriented as the module says. NaNs count as 0, as in pytorch-grad-cam."""
    b, k = maps.shape[:2]
    x = torch.nan_to_num(maps, nan=0.0).reshape(b, k, -1).transpose(1, 2).double()  # (B, hw, K)
    x = x - x.mean(dim=1, keepdim=True)
    _, _, vh = torch.linalg.svd(x, full_matrices=False)
    direction = vh[:, 0, :]  # (B, K)
    projection = x @ direction[:, :, None]  # (B, hw, 1)
    projection = projection[..., 0]
    total = maps.reshape(b, k, -1).sum(dim=1).double()
    agreement = ((total - total.mean(dim=1, keepdim=True)) * projection).sum(dim=1)
    extreme = projection.gather(1, projection.abs().argmax(dim=1, keepdim=True))[:, 0]
    sign = torch.where(agreement.abs() > 1e-12 * projection.abs().sum(dim=1), agreement.sign(), extreme.sign())
    sign = torch.where(sign == 0, torch.ones_like(sign), sign)
    oriented = projection * sign[:, None]
    return oriented.to(maps.dtype).reshape(b, *maps.shape[2:]), (direction * sign[:, None]).to(maps.dtype)
