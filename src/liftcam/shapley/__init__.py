"""Shapley values of activation maps: games and estimators.

``game.values(masks)`` evaluates coalitions; :func:`shapley_values` picks an estimator: exact
enumeration for few players, the closed form for additive games, else antithetic permutation
sampling or KernelSHAP, each with a standard error.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from ..errors import LiftCamError
from ..head import HeadEvaluator
from .exact import MAX_EXACT_PLAYERS, exact_shapley
from .factored import AdditiveGame, FactoredGame, build_fast_game
from .game import CoalitionGame, HeadGame
from .kernel import kernel_shapley
from .permutation import permutation_shapley
from .result import ShapleyResult

Estimator = Literal["auto", "exact", "permutation", "kernel"]


FACTORED_BREAK_EVEN = 4


def image_game(
    evaluator: HeadEvaluator, index: int, reference: Tensor, fast: bool = True, coalitions: int | None = None
) -> CoalitionGame:
    """The activation-map game of image ``index``: the fast factored game where the head allows it.

    ``coalitions``: how many coalition values the caller will ask for, where known. Building the factored
    game costs about one head pass per channel, so below ``FACTORED_BREAK_EVEN * K`` values the head game
    (one head pass per value) is cheaper and is used.
    """
    cls = int(evaluator.classes[index])
    k = evaluator.activations.shape[1]
    few = coalitions is not None and coalitions < FACTORED_BREAK_EVEN * k
    # the factored games read one logit of a (N, C) output; a score function or a region is another score
    if fast and not few and cls >= 0 and not callable(evaluator.targets):

        def head(a: Tensor) -> Tensor:
            return evaluator.split.head(a, evaluator.context_for(index, a.shape[0]))

        game = build_fast_game(head, evaluator.activations[index], reference, cls)
        if game is not None:
            return game
    return HeadGame(evaluator, index, reference)


def shapley_values(
    game: CoalitionGame,
    estimator: Estimator = "auto",
    n_samples: int = 1000,
    seed: int = 0,
    max_exact: int = 16,
) -> ShapleyResult:
    """Shapley values of ``game``.

    ``auto``: the closed form for an additive game, enumeration when ``K <= max_exact``, else
    antithetic permutation sampling with ``n_samples`` permutations. ``kernel``: KernelSHAP with
    ``n_samples`` paired coalitions.
    """
    if estimator == "auto":
        if isinstance(game, AdditiveGame):
            phi = game.shapley()
            full = torch.ones(game.n_players, device=game.device)
            ends = game.values(torch.stack([full, torch.zeros_like(full)]))
            return ShapleyResult(phi, torch.zeros_like(phi), "additive", game.n_players, float(ends[0]), float(ends[1]))
        estimator = "exact" if game.n_players <= max_exact else "permutation"
    if estimator == "exact":
        return exact_shapley(game)
    if estimator == "permutation":
        return permutation_shapley(game, n_samples, seed)
    if estimator == "kernel":
        return kernel_shapley(game, n_samples, seed)
    raise LiftCamError(f"unknown Shapley estimator {estimator!r}; use auto, exact, permutation or kernel")


__all__ = [
    "MAX_EXACT_PLAYERS",
    "AdditiveGame",
    "CoalitionGame",
    "Estimator",
    "FactoredGame",
    "HeadGame",
    "ShapleyResult",
    "exact_shapley",
    "image_game",
    "kernel_shapley",
    "permutation_shapley",
    "shapley_values",
]
