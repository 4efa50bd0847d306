"""Deletion and insertion curves (Petsiuk et al., RISE 2018), shared by both metrics.

Pixels are ranked by the map (largest first; ties in row-major order). Every step changes
``step_px = round(step * H * W)`` more pixels, in every channel of the input tensor, and ``p_c`` is
recorded after each step, from 0 to all pixels: ``ceil(1 / step) + 1`` points at most. The AUC is the
trapezoid rule over the fraction of pixels changed, in [0, 1].
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .base import MetricBatch, Scorer, split_methods, stack_methods


def step_counts(pixels: int, step: float, device: torch.device | str = "cpu") -> Tensor:
    """Number of changed pixels after each step: 0, s, 2s, ..., all."""
    step_px = max(1, round(step * pixels))
    n = math.ceil(pixels / step_px)
    return (torch.arange(n + 1, device=device) * step_px).clamp_max(pixels)


def trapezoid_auc(curves: Tensor, counts: Tensor) -> Tensor:
    """AUC (N,) of curves (N, T) sampled at ``counts / pixels``."""
    fractions = counts.double() / counts[-1]
    widths = fractions[1:] - fractions[:-1]
    return ((curves[:, 1:] + curves[:, :-1]).double() / 2 * widths).sum(dim=1).float()


def perturbation_curves(
    batch: MetricBatch, scorer: Scorer, start: Tensor, finish: Tensor, step: float
) -> tuple[dict[str, Tensor], Tensor]:
    """Curves per method (B, T): the input goes from ``start`` (B, C, H, W) to ``finish``, most
    important pixels first. Deletion: start = x, finish = fill; insertion: start = blurred, finish = x."""
    names, maps, classes = stack_methods(batch)
    b = batch.inputs.shape[0]
    h, w = maps.shape[1:]
    counts = step_counts(h * w, step, maps.device)
    t = counts.numel()
    order = torch.argsort(-maps.flatten(1), dim=1, stable=True)
    rank = torch.empty_like(order)
    rank.scatter_(1, order, torch.arange(h * w, device=order.device).expand_as(order).contiguous())
    rank = rank.view(-1, h, w)
    step_classes = classes.repeat_interleave(t)

    def make(lo: int, hi: int) -> Tensor:
        index = torch.arange(lo, hi, device=maps.device)
        row, column = index // t, index % t  # (method-image, step)
        changed = rank[row] < counts[column][:, None, None]
        image = row % b
        return torch.where(changed[:, None], finish[image], start[image])

    scores = scorer.generate(make, maps.shape[0] * t, step_classes).view(-1, t)
    return split_methods(names, scores, b), counts
