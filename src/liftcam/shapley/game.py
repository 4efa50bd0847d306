"""The activation-map game of one image: players are channels, ``v(S) = F(A_S)_c``.

``A_S`` keeps the maps of the channels in ``S`` and replaces the others by the reference (zero by
default): ``A_S = R + z_S (A - R)`` per channel. A game answers two questions, the values of any
coalitions (for enumeration, KernelSHAP, LIME, ablation) and the values along permutations (for
permutation sampling), which fast games answer without building each coalition.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch
from torch import Tensor

from ..head import HeadEvaluator


class CoalitionGame(ABC):
    """A cooperative game on ``n_players`` channels, evaluated on ``device`` (the activations'; a game of
    one's own that does not set it is evaluated on masks on the CPU)."""

    n_players: int
    device: torch.device = torch.device("cpu")

    @abstractmethod
    def values(self, masks: Tensor) -> Tensor:
        """``v(S)`` (N,) for coalitions given as masks (N, K) in {0, 1}."""

    def chain_values(self, orders: Tensor) -> Tensor:
        """Values along permutations (P, K): ``out[p, j] = v({orders[p, :j]})``, shape (P, K + 1)."""
        p, k = orders.shape
        steps = torch.arange(k + 1, device=orders.device)
        # position of each player in each permutation; player i is in the first j iff position < j
        position = torch.empty_like(orders)
        position.scatter_(1, orders, torch.arange(k, device=orders.device).expand(p, k).contiguous())
        masks = (position[:, None, :] < steps[None, :, None]).reshape(p * (k + 1), k)
        return self.values(masks).view(p, k + 1)


class HeadGame(CoalitionGame):
    """The game evaluated by running the head on every coalition (any head, any score)."""

    def __init__(self, evaluator: HeadEvaluator, index: int, reference: Tensor) -> None:
        self.evaluator = evaluator
        self.index = index
        self.reference = reference
        self.n_players = evaluator.activations.shape[1]
        self.device = evaluator.activations.device

    def values(self, masks: Tensor) -> Tensor:
        return self.evaluator.coalition_scores(self.index, masks, self.reference).double()
