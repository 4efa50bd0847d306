"""Exact Shapley values by enumerating all 2^K coalitions, vectorised over coalitions.

phi_k = sum_{S subset of N minus k} |S|! (K - |S| - 1)! / K! * (v(S + k) - v(S))
"""

from __future__ import annotations

import math

import torch

from ..errors import LiftCamError
from .game import CoalitionGame
from .result import ShapleyResult

#: Largest number of players enumerated (2^24 coalitions).
MAX_EXACT_PLAYERS = 24


def exact_shapley(game: CoalitionGame) -> ShapleyResult:
    """Shapley values of ``game`` by enumeration of every coalition."""
    k = game.n_players
    if k > MAX_EXACT_PLAYERS:
        raise LiftCamError(f"exact Shapley values of {k} players need 2^{k} coalitions; use sampling")
    device = game.device
    codes = torch.arange(2**k, device=device)
    bits = torch.arange(k, device=device)
    masks = ((codes[:, None] >> bits) & 1).to(torch.float32)
    v = game.values(masks).double()
    size = masks.sum(dim=1).long()
    weight = torch.tensor(
        [math.factorial(s) * math.factorial(k - s - 1) / math.factorial(k) for s in range(k)],
        dtype=torch.float64,
        device=device,
    )
    phi = torch.empty(k, dtype=torch.float64, device=device)
    for player in range(k):
        without = codes[((codes >> player) & 1) == 0]
        phi[player] = (weight[size[without]] * (v[without | (1 << player)] - v[without])).sum()
    return ShapleyResult(phi, torch.zeros_like(phi), "exact", 2**k, float(v[-1]), float(v[0]))
