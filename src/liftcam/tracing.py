"""Following a head's torch calls: which tensors depend on the activations, and what each call is.

The DeepLIFT and LRP engines and the head analyses (GAP + Linear, affine-nonlinear-affine) all run the
head under a :class:`DependencyMode`: a :class:`~torch.overrides.TorchFunctionMode` that sees every torch
call, from modules (``nn.ReLU``), functions (``F.relu``, ``torch.flatten``) and tensor methods
(``x.relu_()``) alike, runs the calls that do not involve the activations as they are, and hands the
others to the subclass. Calls are named by ``op_name`` and classified by the sets below.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor
from torch.overrides import TorchFunctionMode

from .errors import HeadError
from .rules import RULES, Kind, names_of

# The sets the LRP engine and the head analyses read, from the one table of rules (``rules.py``).
ELEMENTWISE = names_of(Kind.ELEMENTWISE)
MAXPOOL = names_of(Kind.MAX_POOL)
# division: a two-input call affine in its numerator only; products: affine in either operand
DIVISION = frozenset(n for n, r in RULES.items() if r.kind is Kind.BINARY and r.affine_in == (0,))
PRODUCT = frozenset(n for n, r in RULES.items() if r.kind is Kind.BINARY and r.affine_in == (0, 1)) | (
    names_of(Kind.BILINEAR) - {"einsum"}
)
# Affine in the tensor arguments that depend on A (for division: in the numerator).
AFFINE = names_of(Kind.AFFINE) | DIVISION | {"einsum"}
TENSOR_ATTRIBUTES = frozenset({"T", "mT", "H", "mH", "real"})


def supported_operations() -> list[str]:
    """Names of the nonlinear operations the DeepLIFT engine has a rule for."""
    nonlinear = names_of(Kind.ELEMENTWISE, Kind.MAX_POOL, Kind.REDUCE_MAX, Kind.BINARY, Kind.COMPOSITE)
    return sorted(n for n in nonlinear if not n.endswith("_") and not n.startswith("__"))


def sum_to(t: Tensor, shape: torch.Size) -> Tensor:
    """Undo broadcasting: sum ``t`` down to ``shape`` (the gradient of a broadcast operand)."""
    while t.dim() > len(shape):
        t = t.sum(dim=0)
    for i, n in enumerate(shape):
        if n == 1 and t.shape[i] != 1:
            t = t.sum(dim=i, keepdim=True)
    return t


def op_name(func: Any) -> str:
    name = getattr(func, "__name__", repr(func))
    if name == "__get__":  # attribute access such as x.shape or x.T
        owner = getattr(func, "__self__", None)
        return f"__get__.{getattr(owner, '__name__', '?')}"
    return str(name)


def qualified(func: Any, name: str) -> str:
    module = getattr(func, "__module__", None) or "torch.Tensor"
    return f"{module}.{name.removeprefix('__get__.')}"


def bound_arguments(func: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
    """Arguments by name where the signature is known (Python functions such as ``F.relu``)."""
    try:
        bound = inspect.signature(func).bind(*args, **kwargs)
    except (TypeError, ValueError):
        return dict(kwargs)
    bound.apply_defaults()
    return dict(bound.arguments)


def iter_tensors(value: Any) -> Iterable[Tensor]:
    if isinstance(value, Tensor):
        yield value
    elif isinstance(value, (list, tuple)):
        for v in value:
            yield from iter_tensors(v)
    elif isinstance(value, dict):
        for v in value.values():
            yield from iter_tensors(v)


def is_inplace(name: str, bound: dict[str, Any]) -> bool:
    if name.startswith("__i") or name == "__setitem__":
        return True
    return (name.endswith("_") and not name.endswith("__")) or bool(bound.get("inplace", False))


class DependencyMode(TorchFunctionMode):
    """Runs a head pass; calls involving a tensor derived from ``source`` go to :meth:`dependent_call`.

    Dependence is tracked by identity, holding strong references for the pass (a freed tensor's id
    could be reused by an unrelated tensor).
    """

    def __init__(self, source: Tensor) -> None:
        super().__init__()
        self.dependent: dict[int, Tensor] = {id(source): source}

    def depends(self, value: Any) -> bool:
        return any(id(t) in self.dependent for t in iter_tensors(value))

    def mark(self, value: Any) -> None:
        for t in iter_tensors(value):
            self.dependent[id(t)] = t

    def __torch_function__(
        self, func: Any, types: Any, args: tuple[Any, ...] = (), kwargs: dict[str, Any] | None = None
    ) -> Any:
        kwargs = kwargs or {}
        if not self.depends(args) and not self.depends(kwargs):
            return func(*args, **kwargs)
        return self.dependent_call(func, op_name(func), args, kwargs)

    def dependent_call(self, func: Any, name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """Handle a call that involves the activations; by default, run it and follow its outputs."""
        out = func(*args, **kwargs)
        self.mark(out)
        return out


def layer_gradient(
    scores: Tensor, leaf: Tensor, layer: str, grad_outputs: Tensor | None = None, create_graph: bool = False
) -> Tensor:
    """``d scores / d leaf`` (with ``grad_outputs``: the vector-Jacobian product); :class:`HeadError` if the
    scores do not depend on the layer's activations ``leaf`` (they may still depend on the parameters)."""
    gradient: Tensor | None = None
    if scores.requires_grad:
        (gradient,) = torch.autograd.grad(
            scores if grad_outputs is not None else scores.sum(),
            leaf,
            grad_outputs=grad_outputs,
            create_graph=create_graph,
            allow_unused=True,
        )
    if gradient is None:
        raise HeadError(f"the explained score does not depend on layer {layer!r}")
    return gradient
