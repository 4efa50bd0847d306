"""Permutation sampling (Castro et al. 2009) with antithetic pairs.

Each permutation ``pi`` gives every player its marginal contribution when it joins the players
before it; a permutation and its reverse form an antithetic pair, whose mean is one sample.
Every permutation's contributions sum to ``v(N) - v(empty)`` (a telescoping sum), so the estimate is
efficient exactly. The standard error is the standard deviation of the pair means over sqrt(pairs).
"""

from __future__ import annotations

import torch

from ..errors import LiftCamError
from .game import CoalitionGame
from .result import ShapleyResult


def permutation_shapley(
    game: CoalitionGame, n_permutations: int = 1000, seed: int = 0, antithetic: bool = True, block: int = 16
) -> ShapleyResult:
    """Shapley values of ``game`` from ``n_permutations`` random permutations (rounded up to pairs)."""
    if n_permutations < 2:
        raise LiftCamError("permutation sampling needs at least 2 permutations")
    k = game.n_players
    device = game.device
    # permutations from the CPU generator (the same for a seed on every device), evaluated on the game's
    generator = torch.Generator().manual_seed(seed)
    ends = game.values(torch.stack([torch.zeros(k, device=device), torch.ones(k, device=device)]))
    v_empty, v_full = float(ends[0]), float(ends[1])
    per_sample = 2 if antithetic else 1
    n_samples = -(-n_permutations // per_sample)
    total = torch.zeros(k, dtype=torch.float64, device=device)
    total_sq = torch.zeros(k, dtype=torch.float64, device=device)
    done = 0
    while done < n_samples:
        m = min(block, n_samples - done)
        orders = torch.stack([torch.randperm(k, generator=generator, device="cpu") for _ in range(m)]).to(device)
        if antithetic:
            orders = torch.stack([orders, orders.flip(1)], dim=1).reshape(2 * m, k)
        chain = game.chain_values(orders).double()
        chain[:, 0], chain[:, -1] = v_empty, v_full  # exact ends: efficiency holds exactly
        by_position = chain[:, 1:] - chain[:, :-1]
        by_player = torch.empty_like(by_position).scatter_(1, orders, by_position)
        samples = by_player.view(m, per_sample, k).mean(dim=1)
        total += samples.sum(dim=0)
        total_sq += (samples**2).sum(dim=0)
        done += m
    mean = total / done
    variance = (total_sq / done - mean**2).clamp_min(0) * done / max(done - 1, 1)
    return ShapleyResult(mean, (variance / done).sqrt(), "permutation", done * per_sample * (k + 1), v_full, v_empty)
