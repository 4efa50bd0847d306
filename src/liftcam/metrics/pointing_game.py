"""Pointing game (Zhang et al., 2016): a hit when the map's maximum lies within ``tolerance`` pixels
(15 by default) of an object box. The point is the centre of the first pixel holding the maximum; an
all-zero map points nowhere (a miss). Reported in percent of hits; NaN for an image without boxes.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from .base import Metric, MetricBatch, Scorer


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
        out = {}
        for method, maps in batch.maps.items():
            hits = []
            for i, heat in enumerate(maps.cpu()):
                boxes = batch.boxes[i] if batch.boxes is not None else None
                if boxes is None or boxes.numel() == 0:
                    hits.append(float("nan"))
                    continue
                if float(heat.max()) <= 0:
                    hits.append(0.0)
                    continue
                row, column = divmod(int(heat.argmax()), heat.shape[1])
                hit = distance_to_boxes(column + 0.5, row + 0.5, boxes.float()) <= self.tolerance
                hits.append(100.0 if hit else 0.0)
            out[method] = {self.name: torch.tensor(hits)}
        return out
