"""Pointing game (Zhang et al., 2016): a hit when the map's maximum lies within ``tolerance`` pixels
(15 by default) of an object box. The point is the centre of the first pixel holding the maximum; an
all-zero map points nowhere (a miss). Reported in percent of hits; NaN for an image without boxes.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from .base import Metric, MetricBatch, Scorer, per_image_with_boxes


def distance_to_boxes(x: float, y: float, boxes: Tensor) -> float:
    """Euclidean distance from (x, y) to the nearest (x0, y0, x1, y1) box (0 inside)."""
    x0, y0, x1, y1 = boxes.unbind(dim=1)
    dx = torch.clamp(torch.maximum(x0 - x, x - x1), min=0)
    dy = torch.clamp(torch.maximum(y0 - y, y - y1), min=0)
    return float(torch.sqrt(dx**2 + dy**2).min())


class PointingGame(Metric):
    name = "pointing_game"
    needs_boxes = True

    def __init__(self, tolerance: float = 15.0) -> None:
        self.tolerance = tolerance

    def parameters(self) -> dict[str, Any]:
        return {"tolerance": self.tolerance}

    def compute(self, batch: MetricBatch, scorer: Scorer) -> dict[str, dict[str, Tensor]]:
        return {m: {self.name: per_image_with_boxes(batch, maps, self._hit)} for m, maps in batch.maps.items()}

    def _hit(self, heat: Tensor, boxes: Tensor) -> float:
        if float(heat.max()) <= 0:
            return 0.0
        row, column = divmod(int(heat.argmax()), heat.shape[1])
        return 100.0 if distance_to_boxes(column + 0.5, row + 0.5, boxes) <= self.tolerance else 0.0
