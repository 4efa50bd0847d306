"""Average Drop (Chattopadhay et al., 2018): ``AD = 100 * mean(max(0, Y - O) / Y)``, lower is better.

``Y = p_c(x)``, ``O = p_c(x * L)``: the map multiplies the model's input tensor. 0 where ``Y = 0``.
``clip=False`` drops the ``max(0, .)`` (a variant some papers report).
"""

from __future__ import annotations

from .base import DropMetric


class AverageDrop(DropMetric):
    name = "average_drop"
    higher_is_better = False
    keep = True
