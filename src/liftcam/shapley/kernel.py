"""KernelSHAP (Lundberg & Lee 2017) with paired sampling (Covert & Lee 2021).

Coalition sizes are drawn with probability proportional to the Shapley kernel,
``p(s) ~ (K - 1) / (s (K - s))``, members uniformly, and every coalition is paired with its
complement. The Shapley values solve the least-squares problem ``min ||Z phi - (v(Z) - v(empty))||^2``
under the efficiency constraint ``sum phi = v(N) - v(empty)``, which holds exactly. The standard
error comes from independent groups of samples (batch means).
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..errors import LiftCamError
from .game import CoalitionGame
from .result import ShapleyResult


def _solve(z: Tensor, y: Tensor, delta: float) -> Tensor:
    a = z.T @ z / z.shape[0]
    b = z.T @ y / z.shape[0]
    a_inv = torch.linalg.pinv(a)
    ones = torch.ones(z.shape[1], dtype=z.dtype, device=z.device)
    a_inv_b = a_inv @ b
    a_inv_1 = a_inv @ ones
    phi: Tensor = a_inv_b - a_inv_1 * (a_inv_b.sum() - delta) / a_inv_1.sum()
    return phi


def kernel_shapley(game: CoalitionGame, n_samples: int = 2048, seed: int = 0, groups: int = 8) -> ShapleyResult:
    """Shapley values of ``game`` from ``n_samples`` coalitions (half of them complements)."""
    k = game.n_players
    if k < 2:
        raise LiftCamError("KernelSHAP needs at least 2 players")
    pairs = max(groups, n_samples // 2)
    pairs -= pairs % groups
    # drawn on the CPU generator (the same coalitions for a seed on every device), evaluated on the game's
    generator = torch.Generator().manual_seed(seed)
    sizes = torch.arange(1, k, device="cpu")
    kernel = (k - 1) / (sizes * (k - sizes)).double()
    drawn = sizes[torch.multinomial(kernel / kernel.sum(), pairs, replacement=True, generator=generator)]
    ranks = torch.rand(pairs, k, generator=generator, device="cpu").argsort(dim=1).argsort(dim=1)
    half = (ranks < drawn[:, None]).double()
    z = torch.stack([half, 1 - half], dim=1).reshape(2 * pairs, k).to(game.device)
    ends = game.values(torch.stack([torch.zeros(k, device=game.device), torch.ones(k, device=game.device)])).double()
    v_empty, v_full = float(ends[0]), float(ends[1])
    y = game.values(z).double() - v_empty
    delta = v_full - v_empty
    phi = _solve(z, y, delta)
    per_group = z.shape[0] // groups
    estimates = torch.stack(
        [
            _solve(z[g * per_group : (g + 1) * per_group], y[g * per_group : (g + 1) * per_group], delta)
            for g in range(groups)
        ]
    )
    stderr = estimates.std(dim=0) / groups**0.5
    return ShapleyResult(phi, stderr, "kernel", z.shape[0] + 2, v_full, v_empty)
