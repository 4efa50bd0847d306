"""What every CAM method sees and supplies.

A method reads what the explainer computed once for the batch (:class:`MethodInputs`) and supplies
channel coefficients ``alpha`` (B, K), from which the raw map ``sum_k alpha_k A^k`` follows, or a raw map
directly. Perturbation methods evaluate the head (or, for Score-CAM, the model) through what the
inputs give them. A method never touches I/O.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum
from typing import ClassVar

from torch import Tensor, nn

from ..head import HeadEvaluator
from ..maps import weighted_sum


class Need(Enum):
    """What a method needs computed before it runs."""

    GRADIENTS = "gradients"  # g = ds/dA
    HESSIAN = "hessian"  # H A, the Hessian-vector product of s in the direction A
    DEEPLIFT = "deeplift"  # DeepLIFT multipliers m of s w.r.t. A, against a reference R
    LRP = "lrp"  # LRP-epsilon relevance of s on A
    LINEAR_HEAD = "linear_head"  # the weight W (C, K) of a GAP + Linear head
    HEAD = "head"  # evaluations of the head on modified activations
    MODEL = "model"  # evaluations of the whole model on modified inputs
    HEAD_PASS = "head_pass"  # the head as a function of A, to differentiate a score of the method's own
    AT_INPUT = "at_input"  # the layer's activations and gradients at another input (noisy copies)


@dataclass(frozen=True)
class MethodInputs:
    """Activations ``A`` (B, K, h, w), explained classes and scores (B,), and what was asked for."""

    activations: Tensor
    targets: Tensor
    scores: Tensor
    reference: Tensor
    gradients: Tensor | None = None
    hessian_vector: Tensor | None = None
    multipliers: Tensor | None = None
    relevance: Tensor | None = None
    linear_weight: Tensor | None = None
    evaluator: HeadEvaluator | None = None
    images: Tensor | None = None
    model: nn.Module | None = None
    score_function: Callable[[Tensor], Tensor] | None = None  # for targets given as a function
    head: Callable[[Tensor], Tensor] | None = None  # A -> the model's output, with autograd
    #: (x', images) -> (A(x'), ds/dA at x'): copies x' (n, ...) of the images with indices ``images`` (n,)
    at_input: Callable[[Tensor, Tensor], tuple[Tensor, Tensor]] | None = None
    layer: str = "?"  # the target layer's name, for messages

    def require(self, name: str) -> Tensor:
        value = getattr(self, name)
        if not isinstance(value, Tensor):
            raise RuntimeError(f"{name} were not computed; the method must declare the need")
        return value

    def require_evaluator(self) -> HeadEvaluator:
        if self.evaluator is None:
            raise RuntimeError("no head evaluator; the method must declare Need.HEAD")
        return self.evaluator


@dataclass(frozen=True)
class MethodResult:
    """A method's raw map (B, h, w), its coefficients (B, K) or None, and per-method extras.

    ``contributions`` (B, K, h, w): a map-only method whose raw map is a sum over channels gives the terms
    (``raw = contributions.sum(1)``), for ``eigen_smooth``; with coefficients they are ``alpha_k A^k``.
    """

    raw: Tensor
    weights: Tensor | None
    extras: dict[str, Tensor] = field(default_factory=dict)
    contributions: Tensor | None = None

    @staticmethod
    def of_terms(contributions: Tensor) -> MethodResult:
        """A map-only result whose raw map is the channel sum of ``contributions`` (B, K, ...)."""
        return MethodResult(contributions.sum(dim=1), None, contributions=contributions)


#: Needs that only some heads meet (DeepLIFT's and LRP's rules, the GAP + Linear structure).
HEAD_SPECIFIC_NEEDS = frozenset({Need.DEEPLIFT, Need.LRP, Need.LINEAR_HEAD})


class CamMethod(ABC):
    """A CAM method: ``L = ReLU(sum_k alpha_k A^k)`` for its own coefficients ``alpha``.

    A method's class carries its facts; the explainer, the command line, fidelity and evaluate read them.
    """

    name: ClassVar[str]
    needs: ClassVar[frozenset[Need]]
    #: Whether the method defines channel coefficients (False: it defines a map only).
    has_coefficients: ClassVar[bool] = True
    #: Whether the method's game replaces absent channels by the reference R (else R plays no part).
    uses_reference: ClassVar[bool] = False
    #: One forward and backward pass of the head at most (the ``fast`` group).
    single_pass: ClassVar[bool] = False
    #: Whether the method samples at random (then :meth:`seeded` makes it reproducible).
    sampled: ClassVar[bool] = False
    #: The Shapley values themselves (the reference fidelity compares against, not a candidate).
    ground_truth: ClassVar[bool] = False
    #: Whether the method compares classes of a (B, C) output (then no region or function target).
    needs_class_scores: ClassVar[bool] = False
    #: Whether only some heads meet the method's needs (set from ``needs``).
    head_specific: ClassVar[bool] = False

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        if hasattr(cls, "needs"):
            cls.head_specific = bool(cls.needs & HEAD_SPECIFIC_NEEDS)

    @classmethod
    def seeded(cls, seed: int = 0, n_samples: int | None = None) -> CamMethod:
        """The method configured with ``seed`` (and ``n_samples``) where it samples; else its defaults."""
        return cls()

    @abstractmethod
    def weights(self, inputs: MethodInputs) -> Tensor | None:
        """Channel coefficients (B, K), or None for methods that only define a map."""

    def compute(self, inputs: MethodInputs) -> MethodResult:
        """The raw map and coefficients; map-only methods and methods with extras override this."""
        alpha = self.weights(inputs)
        if alpha is None:
            raise NotImplementedError(f"{self.name} defines neither weights nor a raw map")
        return MethodResult(weighted_sum(alpha, inputs.activations), alpha)

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"{type(self).__name__}({params})"


class MapMethod(CamMethod):
    """A method that defines a map, not channel coefficients: it supplies :meth:`compute` alone."""

    has_coefficients = False

    def weights(self, inputs: MethodInputs) -> None:
        return None

    @abstractmethod
    def compute(self, inputs: MethodInputs) -> MethodResult:
        """The raw map (and, where it is a channel sum, its terms)."""
