"""Average Drop in Deletion (Jung & Oh, ICCV 2021): ``ADD = 100 * mean(max(0, Y - D) / Y)``.

``D = p_c(x * (1 - L))``: the explained region deleted; higher is better. 0 where ``Y = 0``.
"""

from __future__ import annotations

from .base import DropMetric


class AverageDropInDeletion(DropMetric):
    name = "average_drop_in_deletion"
    keep = False
