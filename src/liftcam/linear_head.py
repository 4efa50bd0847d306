"""Recognise a head that is global average pooling followed by one Linear layer (CAM's setting)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from .errors import HeadError
from .tracing import DependencyMode, iter_tensors

# Calls that only reshape or, in eval mode, pass values through.
_PASSIVE = frozenset({"flatten", "view", "reshape", "squeeze", "contiguous", "clone", "to", "float", "dropout"})


class _Recorder(DependencyMode):
    """Records the calls on functions of the activations, in order."""

    def __init__(self, source: Tensor) -> None:
        super().__init__(source)
        self.calls: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = []

    def dependent_call(self, func: Any, name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        out = func(*args, **kwargs)
        if any(True for _ in iter_tensors(out)):
            self.mark(out)
            self.calls.append((name, args, kwargs))
        return out


def _is_global_average(name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> bool:
    x = args[0]
    if name == "adaptive_avg_pool2d":
        size = args[1] if len(args) > 1 else kwargs.get("output_size")
        return size in (1, (1, 1), [1, 1])
    if name == "mean":
        dim = args[1] if len(args) > 1 else kwargs.get("dim")
        dims = {d % x.dim() for d in ((dim,) if isinstance(dim, int) else (dim or ()))}
        return dims == {2, 3}
    if name == "avg_pool2d":
        kernel = args[1] if len(args) > 1 else kwargs.get("kernel_size")
        kernel = (kernel, kernel) if isinstance(kernel, int) else tuple(kernel or ())
        padding = args[3] if len(args) > 3 else kwargs.get("padding", 0)
        return kernel == tuple(x.shape[2:]) and padding in (0, (0, 0))
    return False


def _linear_weight(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    return args[1] if len(args) > 1 else kwargs.get("weight")


def linear_head_weight(head: Callable[[Tensor], Tensor], activations: Tensor) -> Tensor:
    """The weight ``W`` (C, K) of a head ``F(A) = W mean_ij(A) + b``; :class:`HeadError` otherwise."""
    source = activations.detach().clone()
    recorder = _Recorder(source)
    with torch.no_grad(), recorder:
        head(source)
    steps = [(n, a, k) for n, a, k in recorder.calls if n not in _PASSIVE]
    names = [n for n, _, _ in steps]
    if len(steps) == 2 and _is_global_average(*steps[0]) and names[1] == "linear":
        weight = _linear_weight(steps[1][1], steps[1][2])
        if isinstance(weight, Tensor) and weight.dim() == 2:
            return weight.detach()
    raise HeadError(
        "cam needs a head that is global average pooling then one Linear layer; "
        f"this head applies {' -> '.join(names) or 'nothing'}"
    )
