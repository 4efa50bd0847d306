"""Layer-wise relevance propagation (epsilon rule) through the head, for any head written in PyTorch.

The relevance of the score ``s`` starts at the output (``s`` on the explained logit) and flows back
through the head as a modified gradient, following captum's LRP:

* layers with parameters or pooling (convolution, linear, batch norm, average and max pooling):
  ``R_x = x * J^T (R_z / (z + eps sign(z)))`` with ``z`` the layer's output (sign(0) = 1);
* a sum of two terms that both depend on ``A`` (a residual connection): the same rule per term;
* elementwise nonlinearities (ReLU, Tanh, ...): relevance passes unchanged;
* reshaping, dropout in eval mode, and other affine calls: their ordinary backward.

For transformers, the rules of AttnLRP (Achtibat et al., ICML 2024), read from the same table
(``rules.py``) as DeepLIFT's:

* normalisations (LayerNorm, GroupNorm, RMSNorm, InstanceNorm, ``normalize``): the standard deviation (or
  norm) held constant, so the layer is linear and takes the epsilon rule;
* a product of two functions of ``A`` (``q @ k^T``, attention weights times values, ``a * b``): the
  uniform rule, each operand the epsilon-rule relevance with the other held constant, halved;
* softmax: ``R_x = x (R_y - y sum R_y)``;
* attention (``scaled_dot_product_attention``, multi-head attention): decomposed into those;
* max/min over a dimension: the epsilon rule (all relevance to the arg-max).

The relevance of ``A`` is what arrives at the head's input. Calls are intercepted with a
:class:`~torch.overrides.TorchFunctionMode`, as for DeepLIFT, so modules, functions and tensor
methods are all seen; an operation with no rule raises an error naming it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from .errors import UnsupportedOperationError
from .rules import Kind, frozen_spread, rule_for
from .tracing import (
    AFFINE,
    ELEMENTWISE,
    MAXPOOL,
    PRODUCT,
    DependencyMode,
    iter_tensors,
    layer_gradient,
    sum_to,
    supported_operations,
)

#: Calls to which the epsilon rule applies (captum's layers with rules).
EPSILON_RULE = frozenset(
    {
        "conv1d", "conv2d", "conv3d", "conv_transpose1d", "conv_transpose2d", "conv_transpose3d", "linear",
        "batch_norm", "avg_pool1d", "avg_pool2d", "avg_pool3d", "adaptive_avg_pool1d", "adaptive_avg_pool2d",
        "adaptive_avg_pool3d",
    }
) | MAXPOOL  # fmt: skip
_SUMS = frozenset({"add", "__add__", "__radd__", "__iadd__", "add_", "sub", "__sub__", "__isub__", "sub_"})


def _stabilised(z: Tensor, epsilon: float) -> Tensor:
    sign = torch.where(z >= 0, 1.0, -1.0).to(z.dtype)
    return z + epsilon * sign


class _EpsilonRule(torch.autograd.Function):
    """``z = f(x)``; backward maps the output relevance ``R_z`` to ``x * J^T (R_z / (z + eps sign z))``."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, fn: Callable[[Tensor], Tensor], epsilon: float) -> Tensor:
        ctx.fn, ctx.epsilon = fn, epsilon
        ctx.save_for_backward(x.detach())
        with torch.no_grad():
            return fn(x.detach())

    @staticmethod
    def backward(ctx: Any, relevance: Tensor) -> tuple[Tensor | None, ...]:
        (x,) = ctx.saved_tensors
        with torch.enable_grad():
            xd = x.detach().requires_grad_(True)
            z = ctx.fn(xd)
            (c,) = torch.autograd.grad(z, xd, relevance / _stabilised(z.detach(), ctx.epsilon))
        return x * c, None, None


class _SumRule(torch.autograd.Function):
    """``z = a + b`` (or ``a - b``), both functions of ``A``: ``R_a = a R_z / z``, ``R_b = +-b R_z / z``."""

    @staticmethod
    def forward(ctx: Any, a: Tensor, b: Tensor, sign: float, epsilon: float) -> Tensor:
        z = a.detach() + sign * b.detach()
        ctx.sign, ctx.epsilon = sign, epsilon
        ctx.save_for_backward(a.detach(), b.detach(), z)
        return z

    @staticmethod
    def backward(ctx: Any, relevance: Tensor) -> tuple[Tensor | None, ...]:
        a, b, z = ctx.saved_tensors
        s = relevance / _stabilised(z, ctx.epsilon)
        ra, rb = a * s, ctx.sign * b * s
        return sum_to(ra, a.shape), sum_to(rb, b.shape), None, None


class _UniformProduct(torch.autograd.Function):
    """``z = f(a, b)`` bilinear: ``R_a = a * J_a^T (R_z / z) / 2``, ``R_b`` likewise (AttnLRP's uniform rule)."""

    @staticmethod
    def forward(ctx: Any, a: Tensor, b: Tensor, fn: Callable[[Tensor, Tensor], Tensor], epsilon: float) -> Tensor:
        ctx.fn, ctx.epsilon = fn, epsilon
        ctx.save_for_backward(a.detach(), b.detach())
        with torch.no_grad():
            return fn(a.detach(), b.detach())

    @staticmethod
    def backward(ctx: Any, relevance: Tensor) -> tuple[Tensor | None, ...]:
        a, b = ctx.saved_tensors
        with torch.enable_grad():
            ad, bd = a.detach().requires_grad_(True), b.detach().requires_grad_(True)
            z = ctx.fn(ad, bd)
            ca, cb = torch.autograd.grad(z, (ad, bd), relevance / _stabilised(z.detach(), ctx.epsilon))
        return a * ca / 2, b * cb / 2, None, None


class _SoftmaxRule(torch.autograd.Function):
    """``y = softmax(x)`` along ``dim``: ``R_x = x (R_y - y sum R_y)`` (AttnLRP)."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, dim: int) -> Tensor:
        y = torch.softmax(x.detach(), dim=dim)
        ctx.dim = dim
        ctx.save_for_backward(x.detach(), y)
        return y

    @staticmethod
    def backward(ctx: Any, relevance: Tensor) -> tuple[Tensor | None, ...]:
        x, y = ctx.saved_tensors
        return x * (relevance - y * relevance.sum(dim=ctx.dim, keepdim=True)), None


def _frozen_normalisation(
    decompose: Callable[..., Tensor], args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Callable[[Tensor], Tensor]:
    """The normalisation as a linear function of its input: its decomposition with the actual input's
    standard deviation (or norm) held constant (AttnLRP)."""

    def linear(t: Tensor) -> Tensor:
        with frozen_spread():
            return decompose(t, *args[1:], **kwargs)

    return linear


_NORMALISATIONS = frozenset({"layer_norm", "rms_norm", "group_norm", "instance_norm", "normalize"})


class _PassRelevance(torch.autograd.Function):
    """An elementwise nonlinearity: relevance passes through unchanged."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, fn: Callable[[Tensor], Tensor]) -> Tensor:
        with torch.no_grad():
            return fn(x.detach())

    @staticmethod
    def backward(ctx: Any, relevance: Tensor) -> tuple[Tensor | None, ...]:
        return relevance, None


class _LrpMode(DependencyMode):
    def __init__(self, source: Tensor, epsilon: float, layer: str) -> None:
        super().__init__(source)
        self.epsilon = epsilon
        self.layer = layer

    def dependent_call(self, func: Any, name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        inplace = name.startswith("__i") or (name.endswith("_") and not name.endswith("__")) or kwargs.get("inplace")
        rule = rule_for(name)
        kind = rule.kind if rule is not None else None
        two = len(args) >= 2 and self.depends(args[0]) and self.depends(args[1])
        if kind is Kind.DECISION:  # a comparison or arg-max: no relevance flows through it
            return func(*args, **kwargs)
        if name in _NORMALISATIONS and isinstance(args[0], Tensor) and self.depends(args[0]):
            assert rule is not None and rule.decompose is not None
            out = _EpsilonRule.apply(args[0], _frozen_normalisation(rule.decompose, args, kwargs), self.epsilon)
        elif name == "softmax" and isinstance(args[0], Tensor):
            dim = args[1] if len(args) > 1 else kwargs.get("dim", -1)
            out = _SoftmaxRule.apply(args[0], -1 if dim is None else int(dim))
        elif name in ("scaled_dot_product_attention", "multi_head_attention_forward") and rule is not None:
            assert rule.decompose is not None
            with self:  # products and softmax, each with its rule
                out = rule.decompose(*args, **kwargs)
        elif name in ("amax", "amin") and isinstance(args[0], Tensor):
            out = _EpsilonRule.apply(args[0], lambda t: func(t, *args[1:], **kwargs), self.epsilon)
        elif two and (kind is Kind.BILINEAR or name in ("mul", "__mul__", "__rmul__", "multiply")):
            rest = args[2:]
            if name == "einsum":
                raise UnsupportedOperationError(f"LRP has no rule for einsum in the head after layer {self.layer!r}")
            out = _UniformProduct.apply(args[0], args[1], lambda p, q: func(p, q, *rest, **kwargs), self.epsilon)
        elif name in EPSILON_RULE and isinstance(args[0], Tensor) and self.depends(args[0]):
            out = _EpsilonRule.apply(args[0], lambda t: func(t, *args[1:], **kwargs), self.epsilon)
        elif name in ELEMENTWISE and isinstance(args[0], Tensor):
            rest = args[1:]
            call_kwargs = {k: v for k, v in kwargs.items() if k != "inplace"}
            out = _PassRelevance.apply(args[0], lambda t: func(t.clone() if inplace else t, *rest, **call_kwargs))
        elif name in _SUMS and len(args) >= 2 and self.depends(args[0]) and self.depends(args[1]):
            alpha = kwargs.get("alpha", 1)
            sign = -float(alpha) if name.startswith(("sub", "__sub", "__isub")) else float(alpha)
            out = _SumRule.apply(args[0], args[1], sign, self.epsilon)
        elif name in AFFINE or name in PRODUCT:
            if name in PRODUCT and len(args) >= 2 and self.depends(args[0]) and self.depends(args[1]):
                raise UnsupportedOperationError(
                    f"LRP has no rule for a product of two functions of layer {self.layer!r}"
                )
            out = func(*args, **kwargs)
            self.mark(out)
            return out
        else:
            out = func(*args, **kwargs)
            if not any(True for _ in iter_tensors(out)):
                return out
            raise UnsupportedOperationError(
                f"LRP has no rule for torch {name} in the head after layer {self.layer!r}; "
                f"supported nonlinearities: {', '.join(supported_operations())}"
            )
        if inplace and isinstance(args[0], Tensor):
            args[0].copy_(out)
            out = args[0]
        self.mark(out)
        return out


def lrp_relevance(
    head: Callable[[Tensor], Tensor],
    activations: Tensor,
    score: Callable[[Tensor], Tensor],
    epsilon: float = 1e-9,
    layer: str = "?",
) -> tuple[Tensor, Tensor]:
    """Logits and the LRP-epsilon relevance (B, K, h, w) of ``score(logits)`` (B,) on the activations."""
    leaf = activations.detach().requires_grad_(True)
    inputs = leaf.clone()
    with torch.enable_grad():
        with _LrpMode(inputs, epsilon, layer):
            logits = head(inputs)
        scores = score(logits)
    relevance = layer_gradient(scores, leaf, layer, grad_outputs=scores.detach())
    return logits.detach(), relevance
