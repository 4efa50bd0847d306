"""One table of the head's operations: what kind of rule each takes, read by every engine.

Every engine (DeepLIFT, LRP, the head analyses) runs the head under a :class:`~liftcam.tracing.DependencyMode`
and looks up each call that involves the activations here, by its ``op_name``. A new operation is
one entry. The kinds, and DeepLIFT's exact rule for each (each conserves differences exactly, so
summation-to-delta holds to float precision):

* ``AFFINE``: linear in the arguments that depend on ``A`` (convolution, linear, pooling by averaging,
  reshaping, sums, ...): the derivative is the exact multiplier.
* ``ELEMENTWISE``: ``y = f(x)`` of one input, elementwise: Rescale, ``m = (f(x) - f(x')) / (x - x')``.
* ``MAX_POOL``: max-pooling; ``REDUCE_MAX``: ``max``/``amax``/``min``/``amin`` over a dimension (global
  max pooling): each output's difference is routed to one input position.
* ``BILINEAR``: ``f(a, b)`` bilinear and not elementwise (``matmul``, ``bmm``, ``einsum`` of two):
  averaged product rule, ``ab - a'b' = (a + a')/2 (b - b') + (a - a') (b + b')/2``.
* ``BINARY``: ``f(a, b)`` elementwise in two inputs (``mul``, ``div``, ``pow``, ``maximum``, ...):
  the Shapley split of the two players, ``C_a = ((f(a, b) - f(a', b)) + (f(a, b') - f(a', b'))) / 2`` and
  ``C_b`` likewise, ``C_a + C_b = f(a, b) - f(a', b')``
  (for a bilinear ``f`` it is the averaged product rule). With one of them depending on ``A``, the
  operation is affine in it (``affine_in``) or a one-input function (Rescale).
* ``DECISION``: a comparison or an arg-max of values that depend on ``A`` (the condition of a
  ``where``, a mask): taken from the actual pass and used unchanged in the reference pass, as max-pooling
  takes its arg-max, so that what it selects is a fixed choice and ``where`` is affine in its branches.
* ``COMPOSITE``: decomposed into the primitives above by a Python function run under the same mode
  (LayerNorm = centring, square, mean, ``rsqrt(var + eps)``, product, affine; softmax = shift by the
  max, ``exp``, sum, quotient; attention = products and softmax).
"""

from __future__ import annotations

import contextlib
import contextvars
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.overrides import TorchFunctionMode


class Kind(Enum):
    AFFINE = "affine"
    ELEMENTWISE = "elementwise"
    MAX_POOL = "max_pool"
    REDUCE_MAX = "reduce_max"
    BILINEAR = "bilinear"
    BINARY = "binary"
    COMPOSITE = "composite"
    DECISION = "decision"


@dataclass(frozen=True)
class Rule:
    """An operation's rule: its kind, and for some kinds what the engines need besides.

    Attributes:
        kind: see the module doc.
        affine_in: (``BINARY``) the operand positions in which the operation is affine when only that
            operand depends on ``A`` (``mul``: both; ``div``: the numerator).
        decompose: (``COMPOSITE``) the operation written with primitives: ``decompose(*args, **kwargs)``.
    """

    kind: Kind
    affine_in: tuple[int, ...] = ()
    decompose: Callable[..., Any] | None = None


# --- decompositions ---------------------------------------------------------------------------------


def _dims(x: Tensor, shape: Sequence[int] | int) -> tuple[int, ...]:
    n = 1 if isinstance(shape, int) else len(shape)
    return tuple(range(x.dim() - n, x.dim()))


def channel_view(t: Tensor | None, like: Tensor) -> Tensor | None:
    """A per-channel parameter (C,) shaped to broadcast against (B, C, ...)."""
    return None if t is None else t.reshape(1, -1, *([1] * (like.dim() - 2)))


def affine(y: Tensor, weight: Tensor | None, bias: Tensor | None) -> Tensor:
    """``y * weight + bias``, either of them optional (a normalisation's elementwise affine)."""
    y = y * weight if weight is not None else y
    return y + bias if bias is not None else y


#: Set by :func:`frozen_spread`: the normalisations' scale (``rsqrt(var + eps)``, a norm) is a constant.
_FROZEN_SPREAD: contextvars.ContextVar[bool] = contextvars.ContextVar("frozen_spread", default=False)


@contextlib.contextmanager
def frozen_spread() -> Iterator[None]:
    """Run the normalisations' decompositions with their scale held constant at the input's actual value
    (detached), so that each is linear in its input: AttnLRP's rule for LayerNorm, RMSNorm and ``normalize``."""
    token = _FROZEN_SPREAD.set(True)
    try:
        yield
    finally:
        _FROZEN_SPREAD.reset(token)


def _spread(scale: Tensor) -> Tensor:
    return scale.detach() if _FROZEN_SPREAD.get() else scale


def _normalise(x: Tensor, dims: tuple[int, ...], eps: float) -> Tensor:
    """``(x - mean) * rsqrt(var + eps)`` over ``dims``: centring, square, mean, rsqrt, product."""
    centred = x - x.mean(dim=dims, keepdim=True)
    variance = torch.square(centred).mean(dim=dims, keepdim=True)
    return centred * _spread(torch.rsqrt(variance + eps))


def layer_norm(
    input: Tensor, normalized_shape: Sequence[int], weight: Tensor | None = None, bias: Tensor | None = None,
    eps: float = 1e-5,
) -> Tensor:  # fmt: skip
    return affine(_normalise(input, _dims(input, normalized_shape), eps), weight, bias)


def rms_norm(
    input: Tensor, normalized_shape: Sequence[int], weight: Tensor | None = None, eps: float | None = None
) -> Tensor:
    eps = torch.finfo(input.dtype).eps if eps is None else eps
    y = input * _spread(torch.rsqrt(torch.square(input).mean(dim=_dims(input, normalized_shape), keepdim=True) + eps))
    return affine(y, weight, None)


def group_norm(
    input: Tensor, num_groups: int, weight: Tensor | None = None, bias: Tensor | None = None, eps: float = 1e-5
) -> Tensor:
    b = input.shape[0]
    grouped = input.reshape(b, num_groups, -1)
    y = _normalise(grouped, (2,), eps).reshape(input.shape)
    return affine(y, channel_view(weight, input), channel_view(bias, input))


def instance_norm(
    input: Tensor, running_mean: Tensor | None = None, running_var: Tensor | None = None,
    weight: Tensor | None = None, bias: Tensor | None = None, use_input_stats: bool = True,
    momentum: float = 0.1, eps: float = 1e-5,
) -> Tensor:  # fmt: skip
    if use_input_stats or running_mean is None or running_var is None:
        y = _normalise(input, tuple(range(2, input.dim())), eps)
    else:
        mean, scale = channel_view(running_mean, input), channel_view(torch.rsqrt(running_var + eps), input)
        assert mean is not None and scale is not None
        y = (input - mean) * scale
    return affine(y, channel_view(weight, input), channel_view(bias, input))


def softmax(input: Tensor, dim: int | None = None, _stacklevel: int = 3, dtype: Any = None) -> Tensor:
    x = input if dtype is None else input.to(dtype)
    d = -1 if dim is None else dim
    shifted = torch.exp(x - x.amax(dim=d, keepdim=True))  # the shift keeps exp finite; its rule is exact
    return shifted / shifted.sum(dim=d, keepdim=True)


def logsumexp(input: Tensor, dim: int | Sequence[int], keepdim: bool = False) -> Tensor:
    dims = (dim,) if isinstance(dim, int) else tuple(dim)
    top = input.amax(dim=dims, keepdim=True)
    out = top + torch.log(torch.exp(input - top).sum(dim=dims, keepdim=True))
    for d in sorted((d % input.dim() for d in dims), reverse=True):
        out = out if keepdim else out.squeeze(d)
    return out


def log_softmax(input: Tensor, dim: int | None = None, _stacklevel: int = 3, dtype: Any = None) -> Tensor:
    x = input if dtype is None else input.to(dtype)
    d = -1 if dim is None else dim
    return x - logsumexp(x, d, keepdim=True)


def _correction(kwargs: dict[str, Any], default: float = 1.0) -> float:
    if kwargs.get("correction") is not None:
        return float(kwargs["correction"])
    if "unbiased" in kwargs:
        return 1.0 if kwargs["unbiased"] else 0.0
    return default


def var(input: Tensor, dim: Any = None, *args: Any, **kwargs: Any) -> Tensor:
    if isinstance(dim, bool):  # var(x, unbiased)
        kwargs["unbiased"], dim = dim, None
    if args and isinstance(args[0], bool) and "unbiased" not in kwargs and "correction" not in kwargs:
        kwargs["unbiased"] = args[0]
    keepdim = bool(kwargs.get("keepdim", args[1] if len(args) > 1 else False))
    dims = tuple(range(input.dim())) if dim is None else dim
    count = math.prod(input.shape[d] for d in ((dims,) if isinstance(dims, int) else dims))
    centred = input - input.mean(dim=dims, keepdim=True)
    out = torch.square(centred).sum(dim=dims, keepdim=keepdim) / max(count - _correction(kwargs), 1.0)
    return out


def std(input: Tensor, dim: Any = None, *args: Any, **kwargs: Any) -> Tensor:
    return torch.sqrt(var(input, dim, *args, **kwargs))


def norm(
    input: Tensor, p: Any = "fro", dim: Any = None, keepdim: bool = False, out: Any = None, dtype: Any = None
) -> Tensor:
    order = 2.0 if p in ("fro", None) else float(p)
    dims = tuple(range(input.dim())) if dim is None else dim
    if order == 2.0:
        return torch.sqrt(torch.square(input).sum(dim=dims, keepdim=keepdim))
    if order == 1.0:
        return torch.abs(input).sum(dim=dims, keepdim=keepdim)
    if math.isinf(order):
        return (
            torch.abs(input).amax(dim=dims, keepdim=keepdim)
            if order > 0
            else torch.abs(input).amin(dim=dims, keepdim=keepdim)
        )
    return torch.pow(torch.pow(torch.abs(input), order).sum(dim=dims, keepdim=keepdim), 1.0 / order)


def vector_norm(input: Tensor, ord: Any = 2, dim: Any = None, keepdim: bool = False, *, dtype: Any = None) -> Tensor:
    return norm(input, ord, dim, keepdim)


def normalize(input: Tensor, p: float = 2.0, dim: int = 1, eps: float = 1e-12, out: Any = None) -> Tensor:
    return input / _spread(norm(input, p, dim, keepdim=True).clamp_min(eps))


def scaled_dot_product_attention(
    query: Tensor, key: Tensor, value: Tensor, attn_mask: Tensor | None = None, dropout_p: float = 0.0,
    is_causal: bool = False, scale: float | None = None, enable_gqa: bool = False,
) -> Tensor:  # fmt: skip
    if dropout_p > 0:
        raise ValueError("attention dropout is active; call model.eval() first")
    scale = 1.0 / math.sqrt(query.shape[-1]) if scale is None else scale
    if enable_gqa and key.shape[-3] != query.shape[-3]:
        key = key.repeat_interleave(query.shape[-3] // key.shape[-3], dim=-3)
        value = value.repeat_interleave(query.shape[-3] // value.shape[-3], dim=-3)
    scores = torch.matmul(query, key.transpose(-2, -1)) * scale
    if is_causal:
        n, m = query.shape[-2], key.shape[-2]
        keep = torch.ones(n, m, dtype=torch.bool, device=query.device).tril()
        scores = scores.masked_fill(~keep, float("-inf"))
    if attn_mask is not None:
        scores = scores.masked_fill(~attn_mask, float("-inf")) if attn_mask.dtype == torch.bool else scores + attn_mask
    return torch.matmul(softmax(scores, dim=-1), value)


def multi_head_attention_forward(
    query: Tensor, key: Tensor, value: Tensor, embed_dim_to_check: int, num_heads: int,
    in_proj_weight: Tensor | None, in_proj_bias: Tensor | None, bias_k: Tensor | None, bias_v: Tensor | None,
    add_zero_attn: bool, dropout_p: float, out_proj_weight: Tensor, out_proj_bias: Tensor | None,
    training: bool = True, key_padding_mask: Tensor | None = None, need_weights: bool = True,
    attn_mask: Tensor | None = None, use_separate_proj_weight: bool = False, q_proj_weight: Tensor | None = None,
    k_proj_weight: Tensor | None = None, v_proj_weight: Tensor | None = None, static_k: Tensor | None = None,
    static_v: Tensor | None = None, average_attn_weights: bool = True, is_causal: bool = False,
) -> tuple[Tensor, Tensor | None]:  # fmt: skip
    """``F.multi_head_attention_forward`` (inputs ``(L, N, E)``), without masks, extra keys or dropout."""
    if bias_k is not None or bias_v is not None or add_zero_attn or static_k is not None or static_v is not None:
        raise ValueError("attention with extra keys (bias_k, add_zero_attn, static_k)")
    if key_padding_mask is not None:
        raise ValueError("attention with a key padding mask")
    if training and dropout_p > 0:
        raise ValueError("attention dropout is active; call model.eval() first")
    length, batch, embed = query.shape
    if use_separate_proj_weight:
        assert q_proj_weight is not None and k_proj_weight is not None and v_proj_weight is not None
        weights = (q_proj_weight, k_proj_weight, v_proj_weight)
    else:
        assert in_proj_weight is not None
        weights = tuple(in_proj_weight.chunk(3))  # type: ignore[assignment]
    biases = (None, None, None) if in_proj_bias is None else tuple(in_proj_bias.chunk(3))
    q, k, v = (F.linear(t, w, b) for t, w, b in zip((query, key, value), weights, biases, strict=True))
    head = embed // num_heads

    def split(t: Tensor) -> Tensor:  # (L, N, E) -> (N, heads, L, head)
        return t.reshape(t.shape[0], batch, num_heads, head).permute(1, 2, 0, 3)

    mask = None
    if attn_mask is not None:
        mask = attn_mask if attn_mask.dim() == 2 else attn_mask.reshape(batch, num_heads, *attn_mask.shape[-2:])
    out = scaled_dot_product_attention(split(q), split(k), split(v), mask, 0.0, is_causal)
    out = out.permute(2, 0, 1, 3).reshape(length, batch, embed)
    return F.linear(out, out_proj_weight, out_proj_bias), None


# --- the table --------------------------------------------------------------------------------------

_AFFINE = (
    "conv1d", "conv2d", "conv3d", "conv_transpose1d", "conv_transpose2d", "conv_transpose3d",
    "linear", "batch_norm", "avg_pool1d", "avg_pool2d", "avg_pool3d", "adaptive_avg_pool1d",
    "adaptive_avg_pool2d", "adaptive_avg_pool3d", "interpolate", "pixel_shuffle", "pixel_unshuffle",
    "pad", "flatten", "unflatten", "view", "view_as", "reshape", "reshape_as", "permute",
    "transpose", "t", "squeeze", "unsqueeze", "expand", "expand_as", "repeat", "repeat_interleave", "contiguous",
    "clone", "narrow", "select", "__getitem__", "__setitem__", "chunk", "split", "unbind", "cat", "concat",
    "concatenate", "stack", "hstack", "movedim", "moveaxis", "swapaxes", "swapdims", "roll", "flip",
    "add", "add_", "__add__", "__radd__", "__iadd__", "sub", "sub_", "__sub__", "__rsub__",
    "__isub__", "subtract", "neg", "neg_", "__neg__", "__pos__", "positive", "sum", "mean",
    "dropout", "dropout1d", "dropout2d", "dropout3d", "alpha_dropout", "feature_alpha_dropout",
    "to", "float", "type_as", "masked_fill", "tril", "triu", "cumsum", "index_select", "gather", "take_along_dim",
    "diagonal", "tile", "unfold", "fold", "scatter", "where",
    "roi_align",  # torchvision's: bilinear samples of the maps at given boxes, averaged (the boxes fixed)
)  # fmt: skip
_ELEMENTWISE = (
    "relu", "relu_", "relu6", "hardtanh", "hardtanh_", "clamp", "clamp_", "clip", "clip_",
    "clamp_min", "clamp_min_", "clamp_max", "clamp_max_", "silu", "gelu", "sigmoid", "sigmoid_",
    "tanh", "tanh_", "leaky_relu", "leaky_relu_", "elu", "elu_", "selu", "selu_", "celu", "celu_",
    "hardswish", "hardsigmoid", "softplus", "mish", "softsign", "logsigmoid",
    "exp", "exp_", "exp2", "expm1", "log", "log_", "log2", "log10", "log1p", "sqrt", "sqrt_", "rsqrt",
    "rsqrt_", "reciprocal", "reciprocal_", "abs", "abs_", "square", "erf", "erf_", "erfc", "sin", "cos",
    "silu_", "gelu_", "hardswish_", "hardsigmoid_", "mish_", "relu6_", "sign", "__abs__",
)  # fmt: skip
_MAX_POOL = (
    "max_pool1d", "max_pool2d", "max_pool3d", "adaptive_max_pool1d", "adaptive_max_pool2d", "adaptive_max_pool3d",
)  # fmt: skip
_REDUCE_MAX = ("max", "amax", "min", "amin")
_DECISION = (
    "gt", "lt", "ge", "le", "eq", "ne", "__gt__", "__lt__", "__ge__", "__le__", "__eq__", "__ne__",
    "greater", "less", "greater_equal", "less_equal", "not_equal", "isclose", "argmax", "argmin", "isnan",
    "isinf", "isfinite", "signbit", "logical_not", "logical_and", "logical_or", "__and__", "__or__", "__invert__",
)  # fmt: skip
_BILINEAR = ("matmul", "__matmul__", "__rmatmul__", "mm", "bmm", "einsum")
_BINARY: dict[str, tuple[int, ...]] = {
    **dict.fromkeys(("mul", "mul_", "__mul__", "__rmul__", "__imul__", "multiply"), (0, 1)),
    **dict.fromkeys(("div", "div_", "__truediv__", "__itruediv__", "true_divide", "divide"), (0,)),
    "__rtruediv__": (1,),
    **dict.fromkeys(("pow", "pow_", "__pow__", "__rpow__", "float_power", "maximum", "minimum", "fmax", "fmin",
                     "atan2", "hypot"), ()),
}  # fmt: skip
_COMPOSITE: dict[str, Callable[..., Any]] = {
    "layer_norm": layer_norm,
    "rms_norm": rms_norm,
    "group_norm": group_norm,
    "instance_norm": instance_norm,
    "softmax": softmax,
    "log_softmax": log_softmax,
    "logsumexp": logsumexp,
    "var": var,
    "std": std,
    "norm": norm,
    "vector_norm": vector_norm,
    "linalg_vector_norm": vector_norm,
    "normalize": normalize,
    "scaled_dot_product_attention": scaled_dot_product_attention,
    "multi_head_attention_forward": multi_head_attention_forward,
}

#: Every operation with a rule, by its ``op_name``.
RULES: dict[str, Rule] = {
    **{name: Rule(Kind.AFFINE) for name in _AFFINE},
    **{name: Rule(Kind.ELEMENTWISE) for name in _ELEMENTWISE},
    **{name: Rule(Kind.MAX_POOL) for name in _MAX_POOL},
    **{name: Rule(Kind.REDUCE_MAX) for name in _REDUCE_MAX},
    **{name: Rule(Kind.BILINEAR) for name in _BILINEAR},
    **{name: Rule(Kind.BINARY, affine_in=positions) for name, positions in _BINARY.items()},
    **{name: Rule(Kind.COMPOSITE, decompose=fn) for name, fn in _COMPOSITE.items()},
    **{name: Rule(Kind.DECISION) for name in _DECISION},
}


class Decomposed(TorchFunctionMode):
    """Runs the operations ``names`` as their decompositions (e.g. the fused attention kernels, which have
    no second derivative, for Shapley-CAM's Hessian-vector product)."""

    def __init__(
        self, names: frozenset[str] = frozenset({"scaled_dot_product_attention", "multi_head_attention_forward"})
    ) -> None:
        super().__init__()
        self.names = names

    def __torch_function__(
        self, func: Any, types: Any, args: tuple[Any, ...] = (), kwargs: dict[str, Any] | None = None
    ) -> Any:
        kwargs = kwargs or {}
        name = getattr(func, "__name__", "")
        if name in _LINEAR_WITHOUT_SECOND_DERIVATIVE and isinstance(args[0], Tensor) and args[0].requires_grad:
            rest = args[1:]
            return _LinearOp.apply(args[0], lambda t: func(t, *rest, **kwargs))
        decompose = RULES[name].decompose if name in self.names else None
        if decompose is None:
            return func(*args, **kwargs)
        with self:
            return decompose(*args, **kwargs)


def rule_for(name: str) -> Rule | None:
    """The rule of the operation ``name`` (an ``op_name``), None if it has none."""
    return RULES.get(name)


def names_of(*kinds: Kind) -> frozenset[str]:
    """The operations of the given kinds."""
    return frozenset(name for name, rule in RULES.items() if rule.kind in kinds)


#: Operations linear in their first input whose kernels have no double backward (torchvision's).
_LINEAR_WITHOUT_SECOND_DERIVATIVE = frozenset({"roi_align"})


class _LinearOp(torch.autograd.Function):
    """``fn(x)`` for ``fn`` linear in ``x``; its backward is again a differentiable linear map, so second
    derivatives exist (zero for ``fn`` itself) where ``fn``'s own kernel has none."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, fn: Callable[[Tensor], Tensor]) -> Tensor:
        ctx.fn, ctx.like = fn, x.detach()
        return fn(x.detach())

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:
        return _LinearTranspose.apply(grad, ctx.fn, ctx.like), None


class _LinearTranspose(torch.autograd.Function):
    """``g -> J^T g`` of a linear ``fn``; its own backward is ``fn``."""

    @staticmethod
    def forward(ctx: Any, grad: Tensor, fn: Callable[[Tensor], Tensor], like: Tensor) -> Tensor:
        ctx.fn = fn
        with torch.enable_grad():
            x = torch.zeros_like(like).requires_grad_(True)
            (out,) = torch.autograd.grad(fn(x), x, grad.detach())
        return out

    @staticmethod
    def backward(ctx: Any, h: Tensor) -> tuple[Tensor | None, ...]:
        return _LinearOp.apply(h, ctx.fn), None, None
