"""DeepLIFT (Rescale rule) through the head, for any head written in PyTorch.

The head ``F`` is run twice: once on the reference ``R`` (no autograd) and once on the activations
``A`` (with autograd). A :class:`~torch.overrides.TorchFunctionMode` sees every torch call of both
passes, whether it comes from a module (``nn.ReLU``), a function (``F.relu``, ``torch.flatten``) or a
tensor method (``x.relu_()``). The reference pass records the inputs of every nonlinear call on a
tape; the actual pass replays the tape and replaces each nonlinear call by an autograd function whose
backward uses a DeepLIFT multiplier instead of the derivative:

* elementwise nonlinearity ``y = f(x)``:  ``m = (f(x) - f(r)) / (x - r)`` (``f'(x)`` where ``x ~ r``);
* max-pooling: each output's difference ``y - y_r`` is routed to the arg-max of the actual input when
  ``y >= y_r``, else to the arg-max of the reference, divided by that position's ``x - r``;
* product of two terms that both depend on ``A`` (``a * b``, ``a @ b``):
  ``ab - a'b' = (a + a')/2 (b - b') + (a - a') (b + b')/2``, the averaged product rule;
* affine operations (convolution, linear, batch norm in eval mode, average pooling, reshaping,
  addition, ...): the derivative, which is their exact multiplier.

Each rule conserves differences exactly, so the multipliers ``m`` of the target score ``s`` satisfy
summation-to-delta: ``sum m * (A - R) = s(A) - s(R)``. An operation depending on ``A`` that has no rule
raises :class:`UnsupportedOperationError` naming it; nothing falls back silently to gradients.
A call module reused several times is just several calls here, and in-place calls are computed out of
place and copied back, so captum's and shap's failure modes do not arise.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from .errors import HeadError, UnsupportedOperationError
from .tracing import (
    AFFINE,
    DIVISION,
    ELEMENTWISE,
    MAXPOOL,
    PRODUCT,
    TENSOR_ATTRIBUTES,
    DependencyMode,
    bound_arguments,
    is_inplace,
    iter_tensors,
    qualified,
    supported_operations,
)

# Below this |x - r| a multiplier is the derivative: the secant is numerically meaningless there and
# the contribution m * (x - r) is negligible either way.
EPS = 1e-6


@dataclass
class _Entry:
    """What the reference pass recorded at one nonlinear call."""

    name: str
    saved: tuple[Tensor, ...]


class _Rescale(torch.autograd.Function):
    """``y = f(x)`` elementwise, with ``dy/dx`` replaced by the secant ``(f(x) - f(r)) / (x - r)``."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, ref_in: Tensor, ref_out: Tensor, fn: Callable[[Tensor], Tensor]) -> Tensor:
        with torch.enable_grad():
            xd = x.detach().requires_grad_(True)
            y = fn(xd)
            (slope,) = torch.autograd.grad(y, xd, torch.ones_like(y))
        y = y.detach()
        dx = x.detach() - ref_in
        secant = (y - ref_out) / torch.where(dx.abs() > EPS, dx, torch.ones_like(dx))
        ctx.save_for_backward(torch.where(dx.abs() > EPS, secant, slope))
        return y

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:
        (multiplier,) = ctx.saved_tensors
        return grad * multiplier, None, None, None


class _MaxPoolRescale(torch.autograd.Function):
    """Max-pooling with each output's difference routed to one input position (see module doc)."""

    @staticmethod
    def forward(
        ctx: Any,
        x: Tensor,
        ref_in: Tensor,
        ref_out: Tensor,
        ref_idx: Tensor,
        pool: Callable[[Tensor], tuple[Tensor, Tensor]],
    ) -> Tensor:
        y, idx = pool(x.detach())
        use_actual = y >= ref_out
        route = torch.where(use_actual, idx, ref_idx).flatten(2)
        dx = (x.detach() - ref_in).flatten(2).gather(2, route)
        dy = (y - ref_out).flatten(2)
        ok = dx.abs() > EPS
        multiplier = torch.where(ok, dy / torch.where(ok, dx, torch.ones_like(dx)), torch.ones_like(dx))
        ctx.save_for_backward(route, multiplier)
        ctx.in_shape = x.shape
        return y

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:
        route, multiplier = ctx.saved_tensors
        shape = ctx.in_shape
        out = grad.new_zeros(shape[0], shape[1], math.prod(shape[2:]))
        out.scatter_add_(2, route, grad.flatten(2) * multiplier)
        return out.view(shape), None, None, None, None


class _AveragedProduct(torch.autograd.Function):
    """``fn(a, b)`` bilinear; backward uses the midpoints ``(a + a')/2`` and ``(b + b')/2``."""

    @staticmethod
    def forward(
        ctx: Any, a: Tensor, b: Tensor, ref_a: Tensor, ref_b: Tensor, fn: Callable[[Tensor, Tensor], Tensor]
    ) -> Tensor:
        ctx.fn = fn
        ctx.save_for_backward((a.detach() + ref_a) / 2, (b.detach() + ref_b) / 2)
        return fn(a.detach(), b.detach())

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:
        mid_a, mid_b = ctx.saved_tensors
        with torch.enable_grad():
            a = mid_a.detach().requires_grad_(True)
            b = mid_b.detach().requires_grad_(True)
            ga, gb = torch.autograd.grad(ctx.fn(a, b), (a, b), grad)
        return ga, gb, None, None, None


def _maxpool_call(func: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Callable[[Tensor], Any], bool]:
    """A pooling callable that returns (values, indices), and whether the caller asked for indices."""
    name = func.__name__
    position = 2 if name.startswith("adaptive") else 6
    rest = list(args[1:])
    kw = dict(kwargs)
    wants = bool(kw.pop("return_indices", False))
    if len(args) > position:
        wants = bool(args[position])
        rest = rest[: position - 1]

    def pool(t: Tensor) -> Any:
        return func(t, *rest, return_indices=True, **kw)

    return pool, wants


class _PairedMode(DependencyMode):
    """Runs one pass of the head; records the tape (reference) or replays it (actual)."""

    def __init__(self, source: Tensor, tape: list[_Entry], replay: bool, layer: str) -> None:
        super().__init__(source)
        self.batch = source.shape[0]
        self.tape = tape
        self.replay = replay
        self.position = 0
        self.layer = layer

    def dependent_call(self, func: Any, name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        bound = bound_arguments(func, args, kwargs)
        if name in ELEMENTWISE:
            out = self._elementwise(func, name, args, kwargs, bound)
        elif name in MAXPOOL:
            out = self._maxpool(func, name, args, kwargs)
        elif name in PRODUCT and len(args) >= 2 and self.depends(args[0]) and self.depends(args[1]):
            out = self._product(func, name, args, kwargs, bound)
        elif name in AFFINE or name in PRODUCT or (name.startswith("__get__.") and name[8:] in TENSOR_ATTRIBUTES):
            self._check_affine(func, name, args, bound)
            out = func(*args, **kwargs)
        else:
            out = func(*args, **kwargs)
            if not any(True for _ in iter_tensors(out)):  # metadata: x.size(), x.dim(), x.shape, ...
                return out
            raise UnsupportedOperationError(
                f"DeepLIFT has no rule for {qualified(func, name)} in the head after layer {self.layer!r}; "
                f"supported nonlinearities: {', '.join(supported_operations())}"
            )
        self._mark(out, args, name, bound)
        return out

    def _check_affine(self, func: Any, name: str, args: tuple[Any, ...], bound: dict[str, Any]) -> None:
        if name == "batch_norm" and bound.get("training", False):
            raise HeadError("batch norm in the head is in training mode; call model.eval() first")
        training = bound.get("training", bound.get("train", args[2] if len(args) > 2 else False))
        if "dropout" in name and training is True and float(bound.get("p", args[1] if len(args) > 1 else 0.5)) > 0:
            raise HeadError("dropout in the head is active (training mode); call model.eval() first")
        if name in DIVISION and len(args) >= 2 and self.depends(args[1]):
            raise UnsupportedOperationError(
                f"DeepLIFT has no rule for division by a function of layer {self.layer!r} ({qualified(func, name)})"
            )
        if name == "einsum" and sum(self.depends(a) for a in args[1:]) > 1:
            raise UnsupportedOperationError("DeepLIFT has no rule for einsum of several functions of the layer")

    def _mark(self, out: Any, args: tuple[Any, ...], name: str, bound: dict[str, Any]) -> None:
        for t in iter_tensors(out):
            if t.dim() == 0 or t.shape[0] != self.batch:
                raise HeadError(
                    f"{name} in the head mixes the samples of a batch (output shape {tuple(t.shape)}); "
                    "each sample's logits must depend on that sample only"
                )
            self.dependent[id(t)] = t
        if is_inplace(name, bound) and args and isinstance(args[0], Tensor):
            self.dependent[id(args[0])] = args[0]

    def _next(self, name: str, saved: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
        """Record ``saved`` (reference pass) or return what the reference pass recorded here."""
        if not self.replay:
            # cloned: an in-place call may overwrite its input after it was recorded
            self.tape.append(_Entry(name, tuple(s.detach().clone() for s in saved)))
            return saved
        if self.position >= len(self.tape) or self.tape[self.position].name != name:
            raise HeadError(
                "the reference and actual passes through the head took different paths "
                f"(at {name}); the head must not branch on the values of its input"
            )
        entry = self.tape[self.position]
        self.position += 1
        # a reference shared by the whole batch was run once, with batch size 1: it broadcasts
        if entry.saved and entry.saved[0].shape[1:] != saved[0].shape[1:]:
            raise HeadError(f"reference and actual shapes differ at {name}")
        return entry.saved

    def _elementwise(
        self, func: Any, name: str, args: tuple[Any, ...], kwargs: dict[str, Any], bound: dict[str, Any]
    ) -> Tensor:
        x: Tensor = args[0]
        inplace = is_inplace(name, bound)

        def fn(t: Tensor) -> Tensor:
            out: Tensor = func(t.clone() if inplace else t, *args[1:], **kwargs)
            return out

        if not self.replay:
            y = fn(x)
            self._next(name, (x, y))
        else:
            ref_in, ref_out = self._next(name, (x,))
            y = _Rescale.apply(x, ref_in, ref_out, fn)
        assert isinstance(y, Tensor)
        if inplace:
            x.copy_(y)
            return x
        return y

    def _maxpool(self, func: Any, name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        x = args[0]
        pool, wants_indices = _maxpool_call(func, args, kwargs)
        if not self.replay:
            y, idx = pool(x)
            self._next(name, (x, y, idx))
        else:
            ref_in, ref_out, ref_idx = self._next(name, (x,))
            y = _MaxPoolRescale.apply(x, ref_in, ref_out, ref_idx, pool)
            idx = pool(x.detach())[1] if wants_indices else None
        return (y, idx) if wants_indices else y

    def _product(
        self, func: Any, name: str, args: tuple[Any, ...], kwargs: dict[str, Any], bound: dict[str, Any]
    ) -> Tensor:
        a: Tensor = args[0]
        b: Tensor = args[1]
        inplace = is_inplace(name, bound)

        def fn(p: Tensor, q: Tensor) -> Tensor:
            out: Tensor = func(p.clone() if inplace else p, q, *args[2:], **kwargs)
            return out

        if not self.replay:
            y = fn(a, b)
            self._next(name, (a, b))
        else:
            ref_a, ref_b = self._next(name, (a,))
            y = _AveragedProduct.apply(a, b, ref_a, ref_b, fn)
        assert isinstance(y, Tensor)
        if inplace:
            a.copy_(y)
            return a
        return y


@dataclass
class PairedPass:
    """The head evaluated on the activations (with autograd) and on the reference (without).

    ``logits`` carries the DeepLIFT backward: ``torch.autograd.grad(score(logits), inputs)`` gives
    the multipliers of ``score`` with respect to the activations.
    """

    logits: Tensor
    reference_logits: Tensor
    inputs: Tensor

    def multipliers(self, scores: Tensor) -> Tensor:
        """DeepLIFT multipliers ``m`` of ``scores`` (B,), computed from ``logits``, w.r.t. ``A``."""
        (m,) = torch.autograd.grad(scores.sum(), self.inputs)
        return m


def paired_pass(
    head: Callable[[Tensor], Tensor],
    activations: Tensor,
    reference: Tensor,
    layer: str = "?",
    shared_reference: bool = False,
) -> PairedPass:
    """Run ``head`` on ``reference`` then on ``activations`` with DeepLIFT's Rescale rules.

    ``shared_reference``: every image has the same reference (``reference[0]``), so the reference
    pass runs once with batch size 1; only valid when the head needs nothing else of the batch.
    """
    tape: list[_Entry] = []
    ref_in = (reference[:1] if shared_reference else reference).detach().clone()
    with torch.no_grad(), _PairedMode(ref_in, tape, replay=False, layer=layer):
        reference_logits = head(ref_in)
    leaf = activations.detach().requires_grad_(True)
    act_in = leaf.clone()  # not a leaf: the head may work in place on it
    mode = _PairedMode(act_in, tape, replay=True, layer=layer)
    with torch.enable_grad(), mode:
        logits = head(act_in)
    if mode.position != len(tape):
        raise HeadError("the reference and actual passes through the head took different paths")
    if not logits.requires_grad:
        raise HeadError(f"the model's output does not depend on layer {layer!r}")
    return PairedPass(logits, reference_logits.detach().expand_as(logits), leaf)
