"""Evaluation metrics, one per module."""

from .shapley_fidelity import FIDELITY_METRICS, fidelity

__all__ = ["FIDELITY_METRICS", "fidelity"]
