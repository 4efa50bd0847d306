"""Relevance Mass Accuracy (Arras et al., Information Fusion 2022), Quantus's definition: the share of the
map's mass inside the object's boxes, ``sum_{i in boxes} a_i / sum_i a_i``, in [0, 1]; higher is better.

For non-negative maps it is the energy-based pointing game divided by 100 (the same pixels: centres inside a
box); NaN for an image without boxes, and, as in Quantus, for an all-zero map (0 / 0).
"""

from __future__ import annotations

from torch import Tensor

from .base import Metric, MetricBatch, Scorer, per_image_with_boxes
from .energy_pointing_game import box_mask


class RelevanceMassAccuracy(Metric):
    name = "relevance_mass_accuracy"
    needs_boxes = True

    def compute(self, batch: MetricBatch, scorer: Scorer) -> dict[str, dict[str, Tensor]]:
        return {m: {self.name: per_image_with_boxes(batch, maps, _mass)} for m, maps in batch.maps.items()}


def _mass(heat: Tensor, boxes: Tensor) -> float:
    total = float(heat.double().sum())
    inside = float(heat.double()[box_mask(boxes, *heat.shape)].sum())
    return inside / total if total > 0 else float("nan")
