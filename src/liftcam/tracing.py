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

from torch import Tensor
from torch.overrides import TorchFunctionMode

ELEMENTWISE = frozenset(
    {
        "relu", "relu_", "relu6", "hardtanh", "hardtanh_", "clamp", "clamp_", "clip", "clip_",
        "clamp_min", "clamp_min_", "clamp_max", "clamp_max_", "silu", "gelu", "sigmoid", "sigmoid_",
        "tanh", "tanh_", "leaky_relu", "leaky_relu_", "elu", "elu_", "selu", "selu_", "celu", "celu_",
        "hardswish", "hardsigmoid", "softplus", "mish", "softsign", "logsigmoid",
    }
)  # fmt: skip
MAXPOOL = frozenset(
    {
        "max_pool1d", "max_pool2d", "max_pool3d",
        "adaptive_max_pool1d", "adaptive_max_pool2d", "adaptive_max_pool3d",
    }
)  # fmt: skip
PRODUCT = frozenset({"mul", "mul_", "__mul__", "__rmul__", "__imul__", "multiply", "matmul", "__matmul__", "mm", "bmm"})
# Affine in the tensor arguments that depend on A: the derivative is the DeepLIFT multiplier.
AFFINE = frozenset(
    {
        "conv1d", "conv2d", "conv3d", "conv_transpose1d", "conv_transpose2d", "conv_transpose3d",
        "linear", "batch_norm", "avg_pool1d", "avg_pool2d", "avg_pool3d", "adaptive_avg_pool1d",
        "adaptive_avg_pool2d", "adaptive_avg_pool3d", "interpolate", "pixel_shuffle", "pixel_unshuffle",
        "pad", "flatten", "unflatten", "view", "view_as", "reshape", "reshape_as", "permute",
        "transpose", "t", "squeeze", "unsqueeze", "expand", "expand_as", "repeat", "contiguous", "clone",
        "narrow", "select", "__getitem__", "__setitem__", "chunk", "split", "unbind", "cat", "concat",
        "concatenate", "stack", "hstack", "movedim", "moveaxis", "swapaxes", "swapdims", "roll", "flip",
        "add", "add_", "__add__", "__radd__", "__iadd__", "sub", "sub_", "__sub__", "__rsub__",
        "__isub__", "subtract", "neg", "neg_", "__neg__", "__pos__", "positive", "sum", "mean",
        "dropout", "dropout1d", "dropout2d", "dropout3d", "alpha_dropout", "feature_alpha_dropout",
        "to", "float", "type_as", "div", "div_", "__truediv__", "__itruediv__", "true_divide", "einsum",
    }
)  # fmt: skip
DIVISION = frozenset({"div", "div_", "__truediv__", "__itruediv__", "true_divide"})
TENSOR_ATTRIBUTES = frozenset({"T", "mT", "H", "mH", "real"})


def supported_operations() -> list[str]:
    """Names of the nonlinear operations the engine has a DeepLIFT rule for."""
    return sorted(n for n in ELEMENTWISE | MAXPOOL if not n.endswith("_"))


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
