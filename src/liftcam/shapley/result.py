"""What a Shapley estimator returns."""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor


@dataclass(frozen=True)
class ShapleyResult:
    """Shapley values of one game.

    Attributes:
        values: (K,) float64 estimates; they sum to ``v_full - v_empty`` exactly (up to float64
            rounding) for every estimator here.
        stderr: (K,) standard error of each estimate (zeros when exact).
        estimator: "exact", "additive", "permutation" or "kernel".
        evaluations: number of coalition values the estimate used.
        v_full, v_empty: ``v(N)`` and ``v(empty set)``.
    """

    values: Tensor
    stderr: Tensor
    estimator: str
    evaluations: int
    v_full: float
    v_empty: float
