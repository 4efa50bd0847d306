"""What every CAM method sees and supplies.

A method reads what the explainer computed once for the batch (:class:`MethodInputs`) and supplies
channel coefficients ``alpha`` (B, K), from which the raw map ``sum_k alpha_k A^k`` follows, or a raw map
directly. It never runs the model and never touches I/O.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from enum import Enum
from typing import ClassVar

from torch import Tensor

from ..maps import weighted_sum


class Need(Enum):
    """What a method needs computed before it runs."""

    GRADIENTS = "gradients"  # g = ds/dA
    DEEPLIFT = "deeplift"  # DeepLIFT multipliers m of s w.r.t. A, against a reference R
    LINEAR_HEAD = "linear_head"  # the weight W (C, K) of a GAP + Linear head


@dataclass(frozen=True)
class MethodInputs:
    """Activations ``A`` (B, K, h, w), explained classes (B,), and what the methods asked for."""

    activations: Tensor
    targets: Tensor
    gradients: Tensor | None = None
    multipliers: Tensor | None = None
    reference: Tensor | None = None
    linear_weight: Tensor | None = None

    def require(self, name: str) -> Tensor:
        value = getattr(self, name)
        if value is None:
            raise RuntimeError(f"{name} were not computed; the method must declare the need")
        assert isinstance(value, Tensor)
        return value


class CamMethod(ABC):
    """A CAM method: ``L = ReLU(sum_k alpha_k A^k)`` for its own coefficients ``alpha``."""

    name: ClassVar[str]
    needs: ClassVar[frozenset[Need]]

    @abstractmethod
    def weights(self, inputs: MethodInputs) -> Tensor | None:
        """Channel coefficients (B, K), or None for methods that only define a map."""

    def raw(self, inputs: MethodInputs) -> tuple[Tensor, Tensor | None]:
        """The raw map (B, h, w) before ReLU and scaling, and the coefficients (or None)."""
        alpha = self.weights(inputs)
        if alpha is None:
            raise NotImplementedError(f"{self.name} defines neither weights nor a raw map")
        return weighted_sum(alpha, inputs.activations), alpha
