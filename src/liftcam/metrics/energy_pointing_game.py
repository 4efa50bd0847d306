"""Energy-based pointing game (Wang et al., Score-CAM 2020): ``sum of L inside the boxes / sum of L``.

A pixel is inside when its centre lies in a box; a box thinner than a pixel still covers the pixel
that contains its centre. Higher is better; 0 for an all-zero map; NaN for an image without boxes.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .base import Metric, MetricBatch, Scorer, per_image_with_boxes


def box_mask(boxes: Tensor, height: int, width: int) -> Tensor:
    """(H, W) bool on the boxes' device: pixels whose centre is in one of the (x0, y0, x1, y1) boxes."""
    ys = torch.arange(height, dtype=torch.float32, device=boxes.device)[:, None] + 0.5
    xs = torch.arange(width, dtype=torch.float32, device=boxes.device)[None, :] + 0.5
    mask = torch.zeros(height, width, dtype=torch.bool, device=boxes.device)
    for x0, y0, x1, y1 in boxes.tolist():
        mask |= (xs >= x0) & (xs <= x1) & (ys >= y0) & (ys <= y1)
        cx = min(max(int((x0 + x1) / 2), 0), width - 1)
        cy = min(max(int((y0 + y1) / 2), 0), height - 1)
        mask[cy, cx] = True
    return mask


class EnergyPointingGame(Metric):
    name = "energy_pointing_game"
    needs_boxes = True

    def compute(self, batch: MetricBatch, scorer: Scorer) -> dict[str, dict[str, Tensor]]:
        return {m: {self.name: 100 * per_image_with_boxes(batch, maps, _energy)} for m, maps in batch.maps.items()}


def _energy(heat: Tensor, boxes: Tensor) -> float:
    total = float(heat.sum())
    return float(heat[box_mask(boxes, *heat.shape)].sum()) / total if total > 0 else 0.0
