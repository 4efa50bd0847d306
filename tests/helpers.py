"""Reference implementations used by several test modules."""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from typing import Any

import torch

from liftcam.shapley import FactoredGame
from liftcam.shapley.factored import _Phi


def shapley_by_enumeration(value: Callable[[tuple[int, ...]], float], k: int) -> torch.Tensor:
    """phi_j = sum_{S not containing j} |S|!(K-|S|-1)!/K! (v(S + j) - v(S)), coalition by coalition."""
    phi = torch.zeros(k, dtype=torch.float64)
    for j in range(k):
        others = [i for i in range(k) if i != j]
        for size in range(k):
            weight = math.factorial(size) * math.factorial(k - size - 1) / math.factorial(k)
            for subset in itertools.combinations(others, size):
                phi[j] += weight * (value((*subset, j)) - value(subset))
    return phi


def quick_methods(exclude: tuple[str, ...] = ()) -> list[Any]:
    """Every method, the ones with N forward passes per map (SS-CAM, IS-CAM) with one sample each, so that a
    test of every method on a real network stays quick."""
    import liftcam
    from liftcam.methods import IsCam, SsCam

    quick = {"ss-cam": SsCam(n_samples=1), "is-cam": IsCam(n_samples=1)}
    return [quick.get(m, m) for m in liftcam.METHODS if m not in exclude]


def randomisation_model() -> torch.nn.Module:
    """Conv, batch norm, ReLU, conv, ReLU, GAP, Linear (4 layers with parameters): the randomisation tests' model."""
    from torch import nn

    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(), nn.Conv2d(6, 8, 3, padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4),
    ).eval()  # fmt: skip


def random_factored_game(device: str, k: int = 40, d: int = 300) -> FactoredGame:
    """A factored game ``v(S) = beta + <w, relu(P0 + z C)>`` with random rows (player 3 null), on ``device``."""
    generator = torch.Generator().manual_seed(0)
    rows = torch.randn(k, d, generator=generator).to(device)
    rows[3] = 0  # a null player: an unchanged channel
    base, w = torch.randn(d, generator=generator).to(device), torch.randn(d, generator=generator).to(device)
    return FactoredGame(_Phi(torch.relu, (), {}, inplace=False), base, rows, w, 0.5)


def null_player_marginals(game: FactoredGame, seed: int = 0, pairs: int = 10) -> torch.Tensor:
    """Player 3's marginal contributions in ``game``'s own chains (antithetic pairs, as the permutation
    estimator draws them): each is ``v(S + 3) - v(S)`` with ``S + 3`` summing one more row, a zero one."""
    generator = torch.Generator().manual_seed(seed)
    orders = torch.stack([torch.randperm(game.n_players, generator=generator) for _ in range(pairs)])
    orders = torch.stack([orders, orders.flip(1)], dim=1).reshape(2 * pairs, -1).to(game.device)
    chain = game.chain_values(orders)
    joins = (orders == 3).int().argmax(dim=1)
    rows = torch.arange(orders.shape[0], device=game.device)
    return chain[rows, joins + 1] - chain[rows, joins]
