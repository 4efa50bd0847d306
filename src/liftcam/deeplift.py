"""DeepLIFT (Rescale rule) through the head, for any head written in PyTorch.

The head ``F`` is run twice: once on the reference ``R`` (no autograd) and once on the activations
``A`` (with autograd). A :class:`~torch.overrides.TorchFunctionMode` sees every torch call of both
passes, whether it comes from a module (``nn.ReLU``), a function (``F.relu``, ``torch.flatten``) or a
tensor method (``x.relu_()``). The reference pass records the inputs of every nonlinear call on a
tape; the actual pass replays the tape and replaces each nonlinear call by an autograd function whose
backward uses a DeepLIFT multiplier instead of the derivative. Each call's rule comes from the one
table in ``rules.py``:

* elementwise nonlinearity ``y = f(x)``:  ``m = (f(x) - f(r)) / (x - r)`` (``f'(x)`` where ``x ~ r``);
* max-pooling, and max/min over a dimension: each output's difference ``y - y_r`` is routed to the
  arg-max of the actual input when ``y >= y_r``, else to the arg-max of the reference, divided by that
  position's ``x - r``;
* bilinear in two terms that both depend on ``A`` (``a @ b``):
  ``ab - a'b' = (a + a')/2 (b - b') + (a - a') (b + b')/2``, the averaged product rule;
* elementwise in two terms that both depend on ``A`` (``a * b``, ``a / b``, ``a ** b``): the Shapley
  split of the two players, ``C_a = ((f(a,b) - f(a',b)) + (f(a,b') - f(a',b'))) / 2``;
* composite operations (LayerNorm, GroupNorm, RMSNorm, softmax, attention, variance, norms, ...):
  run as their decomposition into the primitives above, under the same mode;
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
from .rules import Kind, rule_for
from .tracing import (
    TENSOR_ATTRIBUTES,
    DependencyMode,
    bound_arguments,
    is_inplace,
    iter_tensors,
    layer_gradient,
    qualified,
    sum_to,
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
        with torch.no_grad():
            y = fn(x.detach())
            dx = x.detach() - ref_in
        close = dx.abs() <= EPS
        if bool(close.any()):  # the derivative only where x ~ r (an autograd pass: not paid elsewhere)
            with torch.enable_grad():
                xd = x.detach().requires_grad_(True)
                out = fn(xd)
                (slope,) = torch.autograd.grad(out, xd, torch.ones_like(out))
        else:
            slope = torch.zeros_like(y)
        ctx.save_for_backward(_secant(y - ref_out, dx, slope))
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
        multiplier = _secant((y - ref_out).flatten(2), dx, torch.ones_like(dx))
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


def _secant(change: Tensor, delta: Tensor, slope: Tensor) -> Tensor:
    """``change / delta``, or ``slope`` where ``|delta|`` is too small for the quotient to mean anything."""
    ok = delta.abs() > EPS
    return torch.where(ok, change / torch.where(ok, delta, torch.ones_like(delta)), slope)


#: Largest ``(|C_a| + |C_b|) / |f(a,b) - f(a',b')|`` of the Shapley split before a better-conditioned order is
#: taken: beyond it the two shares cancel and float32 loses more than two digits of the difference.
CANCELLATION = 100.0


Multipliers = Callable[
    [Tensor, Tensor, Tensor, Tensor, Callable[[Tensor, Tensor], Tensor]], tuple[Tensor, Tensor, Tensor]
]


class _ShapleyPair(torch.autograd.Function):
    """``y = f(a, b)`` elementwise (broadcasting); backward: the Shapley split of the two players,
    ``C_a = ((f(a,b) - f(a',b)) + (f(a,b') - f(a',b'))) / 2``, ``C_b`` likewise, as multipliers ``C / delta``,
    computed by ``multipliers``: :func:`_shapley_multipliers`, or :func:`_quotient_multipliers` for ``a / b``."""

    @staticmethod
    def forward(
        ctx: Any,
        a: Tensor,
        b: Tensor,
        ref_a: Tensor,
        ref_b: Tensor,
        fn: Callable[[Tensor, Tensor], Tensor],
        multipliers: Multipliers,
    ) -> Tensor:
        y, m_a, m_b = multipliers(a.detach(), b.detach(), ref_a, ref_b, fn)
        ctx.save_for_backward(m_a, m_b)
        ctx.shapes = (a.shape, b.shape)
        return y

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:
        m_a, m_b = ctx.saved_tensors
        shape_a, shape_b = ctx.shapes
        return sum_to(grad * m_a, shape_a), sum_to(grad * m_b, shape_b), None, None, None, None


_QUOTIENTS = frozenset({"div", "__truediv__", "true_divide", "divide", "div_", "__itruediv__"})


def _quotient_multipliers(
    a0: Tensor, b0: Tensor, ref_a: Tensor, ref_b: Tensor, fn: Callable[[Tensor, Tensor], Tensor]
) -> tuple[Tensor, Tensor, Tensor]:
    """``a / b``: the Shapley split in closed form, without secants,

    ``C_a = (a - a') (1/b + 1/b') / 2``, ``C_b = -(a + a') (b - b') / (2 b b')``, so
    ``m_a = (1/b + 1/b') / 2`` (of the denominator's shape: a softmax's row sums) and ``m_b = -(a + a') / (2 b b')``.
    Where the shares are more than :data:`CANCELLATION` times the quotients and their change (a denominator
    near 0 in one pass), the generic split takes over."""
    with torch.no_grad():
        y = a0 / b0
        m_a = (1 / b0 + 1 / ref_b) / 2
        m_b = -(a0 + ref_a) / (2 * b0 * ref_b)
        # float error ~ eps * mass: harmless while the shares are not much larger than the quotients
        # themselves (a softmax's); a denominator near 0 in one pass makes them huge: then the generic split
        y_ref = ref_a / ref_b
        mass = ((a0 - ref_a) * m_a).abs() + ((b0 - ref_b) * m_b).abs()
        scale = (y - y_ref).abs() + y.abs() + y_ref.abs()
        well_conditioned = bool((mass <= CANCELLATION * scale + torch.finfo(y.dtype).tiny).all())
    return (y, m_a, m_b) if well_conditioned else _shapley_multipliers(a0, b0, ref_a, ref_b, fn)


def _shapley_multipliers(
    a0: Tensor, b0: Tensor, ref_a: Tensor, ref_b: Tensor, fn: Callable[[Tensor, Tensor], Tensor]
) -> tuple[Tensor, Tensor, Tensor]:
    """``f(a, b)`` and the multipliers of the Shapley split of its two players (see :class:`_ShapleyPair`).

    Where the reference makes a corner value huge (a normalisation's ``rsqrt(eps)`` at a zero reference,
    division by a reference near 0), the two shares are huge and cancel; there, per element, the split of
    the one order of the players (``a`` then ``b``, or ``b`` then ``a``) with the smaller shares is used.
    Every one of these splits is exact: ``C_a + C_b = f(a,b) - f(a',b')``."""
    with torch.no_grad():
        y, y_rb, y_ab, y_rr = fn(a0, b0), fn(ref_a, b0), fn(a0, ref_b), fn(ref_a, ref_b)
        # the two orders: a first (C_a = f(a,b') - f(a',b')), b first (C_a = f(a,b) - f(a',b))
        first_a, then_b = y_ab - y_rr, y - y_ab
        then_a, first_b = y - y_rb, y_rb - y_rr
        share_a, share_b = (first_a + then_a) / 2, (then_b + first_b) / 2
        mass = share_a.abs() + share_b.abs()
        tiny = torch.finfo(y.dtype).tiny
        shapley_ok = mass <= CANCELLATION * (y - y_rr).abs() + tiny  # False for NaN and inf too
        if not bool(shapley_ok.all()):  # rare: only then the alternatives are compared
            mass_ab = torch.nan_to_num(first_a.abs() + then_b.abs(), nan=torch.inf)
            mass_ba = torch.nan_to_num(then_a.abs() + first_b.abs(), nan=torch.inf)
            pick_ab = mass_ab <= mass_ba
            share_a = torch.where(shapley_ok, share_a, torch.where(pick_ab, first_a, then_a))
            share_b = torch.where(shapley_ok, share_b, torch.where(pick_ab, then_b, first_b))
        da, db = (a0 - ref_a).expand_as(y), (b0 - ref_b).expand_as(y)
    m_a = _secant(share_a, da, _elementwise_slope(fn, a0, b0, 0) if _any_close(da) else torch.zeros_like(y))
    m_b = _secant(share_b, db, _elementwise_slope(fn, a0, b0, 1) if _any_close(db) else torch.zeros_like(y))
    return y, m_a, m_b


def _any_close(delta: Tensor) -> bool:
    return bool((delta.abs() <= EPS).any())


def _elementwise_slope(fn: Callable[[Tensor, Tensor], Tensor], a: Tensor, b: Tensor, position: int) -> Tensor:
    """``df/da`` (or ``df/db``) elementwise on the broadcast shape, not summed over broadcast dimensions."""
    shape = torch.broadcast_shapes(a.shape, b.shape)  # type: ignore[no-untyped-call]
    with torch.enable_grad():
        ad = a.expand(shape).clone().requires_grad_(position == 0)
        bd = b.expand(shape).clone().requires_grad_(position == 1)
        y = fn(ad, bd)
        (slope,) = torch.autograd.grad(y, ad if position == 0 else bd, torch.ones_like(y))
    return slope


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


class _NeedsDecisions(Exception):
    """The head makes a decision on values of ``A``: the actual pass's decisions are needed first."""


class _DecisionProbe(DependencyMode):
    """A plain pass of the head on the actual activations that records its decisions, in order."""

    def __init__(self, source: Tensor) -> None:
        super().__init__(source)
        self.decisions: list[Any] = []

    def dependent_call(self, func: Any, name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        if _is_training_batch_norm(name, func, args, kwargs):
            x = args[0]
            dims = [0, *range(2, x.dim())]
            self.decisions.append((x.mean(dim=dims), x.var(dim=dims, unbiased=False)))
            out = _frozen_batch_norm(func, args, kwargs, self.decisions[-1])
            self.mark(out)
            return out
        out = func(*args, **kwargs)
        rule = rule_for(name)
        if rule is not None and rule.kind is Kind.DECISION:
            self.decisions.append(out)
        else:
            self.mark(out)
        return out


def _is_training_batch_norm(name: str, func: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> bool:
    return name == "batch_norm" and bool(bound_arguments(func, args, kwargs).get("training", False))


def _frozen_batch_norm(
    func: Any, args: tuple[Any, ...], kwargs: dict[str, Any], stats: tuple[Tensor, Tensor]
) -> Tensor:
    """Batch norm with the actual batch's statistics held constant (affine per sample; no running update)."""
    bound = bound_arguments(func, args, kwargs)
    out: Tensor = torch.nn.functional.batch_norm(
        bound["input"], stats[0], stats[1], bound.get("weight"), bound.get("bias"), False, 0.0, bound.get("eps", 1e-5)
    )
    return out


class _PairedMode(DependencyMode):
    """Runs one pass of the head; records the tape (reference) or replays it (actual)."""

    def __init__(
        self, source: Tensor, tape: list[_Entry], replay: bool, layer: str, decisions: list[Any] | None = None
    ) -> None:
        super().__init__(source)
        self.batch = source.shape[0]
        self.tape = tape
        self.replay = replay
        self.position = 0
        self.layer = layer
        self.decisions = decisions
        self.decided = 0

    def dependent_call(self, func: Any, name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        bound = bound_arguments(func, args, kwargs)
        rule = rule_for(name)
        kind = rule.kind if rule is not None else None
        if rule is not None and kind is Kind.COMPOSITE:
            assert rule.decompose is not None
            try:
                with self:  # the decomposition's primitives come back here, each with its rule
                    out = rule.decompose(*args, **kwargs)
            except (TypeError, ValueError) as exc:
                raise UnsupportedOperationError(
                    f"DeepLIFT cannot apply its rule for {qualified(func, name)} in the head after layer "
                    f"{self.layer!r}: {exc}"
                ) from None
        elif kind is Kind.DECISION:
            return self._next_decision()  # the actual pass's: a constant in both passes
        elif _is_training_batch_norm(name, func, args, kwargs):
            # batch statistics mix the samples: held constant at the actual batch's, as a decision
            out = _frozen_batch_norm(func, args, kwargs, self._next_decision())
        elif kind is Kind.ELEMENTWISE:
            out = self._elementwise(func, name, args, kwargs, bound)
        elif kind is Kind.MAX_POOL:
            out = self._maxpool(func, name, args, kwargs)
        elif kind is Kind.REDUCE_MAX:
            out = self._reduce_max(func, name, args, kwargs, bound)
        elif rule is not None and kind in (Kind.BINARY, Kind.BILINEAR):
            out = self._two_inputs(func, name, rule.kind, rule.affine_in, args, kwargs, bound)
        elif kind is Kind.AFFINE or (name.startswith("__get__.") and name[8:] in TENSOR_ATTRIBUTES):
            self._check_affine(name, args, bound)
            out = func(*args, **kwargs)
        else:
            out = func(*args, **kwargs)
            if not any(True for _ in iter_tensors(out)):  # metadata: x.size(), x.dim(), x.shape, ...
                return out
            raise self._unsupported(func, name)
        self._mark(out, args, name, bound)
        return out

    def _next_decision(self) -> Any:
        """The actual pass's next decision (recorded by the probe pass; asked for when none was made)."""
        if self.decisions is None:
            raise _NeedsDecisions
        if self.decided >= len(self.decisions):
            raise HeadError("the head made more decisions on the layer's values than in its actual pass")
        self.decided += 1
        return self.decisions[self.decided - 1]

    def _unsupported(self, func: Any, name: str, detail: str = "") -> UnsupportedOperationError:
        return UnsupportedOperationError(
            f"DeepLIFT has no rule for {qualified(func, name)}{detail} in the head after layer {self.layer!r}; "
            f"supported nonlinearities: {', '.join(supported_operations())}"
        )

    def _check_affine(self, name: str, args: tuple[Any, ...], bound: dict[str, Any]) -> None:
        training = bound.get("training", bound.get("train", args[2] if len(args) > 2 else False))
        if "dropout" in name and training is True and float(bound.get("p", args[1] if len(args) > 1 else 0.5)) > 0:
            raise HeadError("dropout in the head is active (training mode); call model.eval() first")
        if name in ("sum", "mean") and args and isinstance(args[0], Tensor) and args[0].dim() > 0:
            x = args[0]
            dim = args[1] if len(args) > 1 else bound.get("dim", bound.get("axis"))
            dims = range(x.dim()) if dim is None else ((dim,) if isinstance(dim, int) else dim)
            # a reduction over the batch while the batch is the first dimension (not after a permutation)
            if x.shape[0] == self.batch and any(d % x.dim() == 0 for d in dims):
                raise HeadError(
                    f"{name} over the batch dimension in the head mixes the samples of a batch; each sample's "
                    "logits must depend on that sample only"
                )

    def _mark(self, out: Any, args: tuple[Any, ...], name: str, bound: dict[str, Any]) -> None:
        for t in iter_tensors(out):
            if t.dim() == 0:
                raise HeadError(
                    f"{name} in the head reduces the whole batch to one number; each sample's logits must "
                    "depend on that sample only"
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

        y = self._rescale(name, x, fn)
        if inplace:
            x.copy_(y)
            return x
        return y

    def _rescale(self, name: str, x: Tensor, fn: Callable[[Tensor], Tensor]) -> Tensor:
        """``fn(x)`` of one dependent input, with the Rescale multiplier."""
        if not self.replay:
            y = fn(x)
            self._next(name, (x, y))
            return y
        ref_in, ref_out = self._next(name, (x,))
        out = _Rescale.apply(x, ref_in, ref_out, fn)
        assert isinstance(out, Tensor)
        return out

    def _two_inputs(
        self,
        func: Any,
        name: str,
        kind: Kind,
        affine_in: tuple[int, ...],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        bound: dict[str, Any],
    ) -> Any:
        """``f(a, b)``: affine or Rescale in a single dependent operand, else the two-player rule."""
        if name == "einsum":
            operands = list(args[1:]) if not (len(args) == 2 and isinstance(args[1], (list, tuple))) else list(args[1])
            if len(operands) != 2 or not all(self.depends(o) for o in operands):
                if sum(self.depends(o) for o in operands) > 1:
                    raise self._unsupported(func, name, " of more than two functions of the layer")
                return func(*args, **kwargs)
            equation = args[0]
            a, b = operands
            rest: tuple[Any, ...] = ()

            def call(p: Tensor, q: Tensor) -> Tensor:
                out: Tensor = func(equation, p, q, **kwargs)
                return out
        else:
            if len(args) < 2:
                other = next((k for k in ("other", "exponent") if k in kwargs), None)
                if other is None:
                    raise self._unsupported(func, name, " with these arguments")
                kwargs = dict(kwargs)
                args = (args[0], kwargs.pop(other))
            a, b, rest = args[0], args[1], args[2:]
            inplace = is_inplace(name, bound)

            def call(p: Tensor, q: Tensor) -> Tensor:
                out: Tensor = func(p.clone() if inplace else p, q, *rest, **kwargs)
                return out

        if bound.get("rounding_mode") is not None:
            raise self._unsupported(func, name, f" with rounding_mode={bound['rounding_mode']!r}")
        dependent = [i for i, t in enumerate((a, b)) if self.depends(t)]
        if len(dependent) == 1:
            (i,) = dependent
            if kind is Kind.BILINEAR or i in affine_in:
                return func(*args, **kwargs)
            # a function of one variable, the other operand fixed
            y = self._rescale(name, a, lambda t: call(t, b)) if i == 0 else self._rescale(name, b, lambda t: call(a, t))
        elif not self.replay:
            y = call(a, b)
            self._next(name, (a, b))
        else:
            ref_a, ref_b = self._next(name, (a,))
            if kind is Kind.BILINEAR:
                y = _AveragedProduct.apply(a, b, ref_a, ref_b, call)
            else:
                split = _quotient_multipliers if name in _QUOTIENTS else _shapley_multipliers
                y = _ShapleyPair.apply(a, b, ref_a, ref_b, call, split)
        if name != "einsum" and is_inplace(name, bound) and isinstance(a, Tensor):
            a.copy_(y)
            return a
        return y

    def _reduce_max(
        self, func: Any, name: str, args: tuple[Any, ...], kwargs: dict[str, Any], bound: dict[str, Any]
    ) -> Any:
        """``max``/``amax``/``min``/``amin`` over dimensions; ``max(a, b)`` of two tensors is elementwise."""
        if len(args) >= 2 and isinstance(args[1], Tensor):
            return self._two_inputs(func, name, Kind.BINARY, (), args, kwargs, bound)
        x: Tensor = args[0]
        dim = args[1] if len(args) > 1 else kwargs.get("dim", bound.get("dim"))
        keepdim = bool(args[2] if len(args) > 2 else kwargs.get("keepdim", False))
        if dim is None or (isinstance(dim, (list, tuple)) and not dim):
            raise self._unsupported(func, name, " over all dimensions (the batch too)")
        dims = sorted(d % x.dim() for d in ((dim,) if isinstance(dim, int) else dim))
        if 0 in dims:
            raise self._unsupported(func, name, " over the batch dimension")
        largest = name in ("max", "amax")
        others = [d for d in range(x.dim()) if d not in dims]
        flat_shape = [x.shape[d] for d in others]
        flat = x.permute(*others, *dims).reshape(*flat_shape, -1)
        # max over the last dimension is max-pooling of (P, 1, n) with one output: the same routing rule;
        # a min is minus the max of minus the values
        sign = 1.0 if largest else -1.0
        signed = (sign * flat).reshape(-1, 1, flat.shape[-1])

        def pool(t: Tensor) -> tuple[Tensor, Tensor]:
            values, index = t.max(dim=-1, keepdim=True)
            return values, index

        if not self.replay:
            y, idx = pool(signed)
            self._next(name, (signed, y, idx))
        else:
            ref_in, ref_out, ref_idx = self._next(name, (signed,))
            if ref_in.shape[0] != signed.shape[0]:  # a reference shared by the batch, run with batch size 1
                repeat = signed.shape[0] // ref_in.shape[0]
                ref_in, ref_out, ref_idx = (t.repeat(repeat, 1, 1) for t in (ref_in, ref_out, ref_idx))
            y = _MaxPoolRescale.apply(signed, ref_in, ref_out, ref_idx, pool)
        values = sign * y.reshape(flat.shape[:-1])
        if keepdim:
            for d in dims:
                values = values.unsqueeze(d)
        if name in ("max", "min"):  # (values, indices), as torch returns them
            indices: Tensor = func(x.detach(), dim, keepdim).indices
            return torch.return_types.max((values, indices)) if largest else torch.return_types.min((values, indices))
        return values

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


@dataclass
class PairedPass:
    """The head evaluated on the activations (with autograd) and on the reference (without).

    ``logits`` carries the DeepLIFT backward: ``torch.autograd.grad(score(logits), inputs)`` gives
    the multipliers of ``score`` with respect to the activations.
    """

    logits: Tensor
    reference_logits: Tensor
    inputs: Tensor
    layer: str = "?"

    def multipliers(self, scores: Tensor) -> Tensor:
        """DeepLIFT multipliers ``m`` of ``scores`` (B,), computed from ``logits``, w.r.t. ``A``."""
        return layer_gradient(scores, self.inputs, self.layer)


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
    decisions: list[Any] | None = None
    ref_in = (reference[:1] if shared_reference else reference).detach().clone()
    try:
        with torch.no_grad(), _PairedMode(ref_in, tape, replay=False, layer=layer):
            reference_logits = head(ref_in)
    except _NeedsDecisions:
        # decisions (comparisons, arg-max) on values of A: taken from the actual pass, for every image
        actual = activations.detach().clone()
        probe = _DecisionProbe(actual)
        with torch.no_grad(), probe:
            head(actual)
        decisions, tape = probe.decisions, []
        ref_in = reference.detach().clone().expand_as(activations).clone()
        with torch.no_grad(), _PairedMode(ref_in, tape, replay=False, layer=layer, decisions=decisions):
            reference_logits = head(ref_in)
    leaf = activations.detach().requires_grad_(True)
    act_in = leaf.clone()  # not a leaf: the head may work in place on it
    mode = _PairedMode(act_in, tape, replay=True, layer=layer, decisions=decisions)
    with torch.enable_grad(), mode:
        logits = head(act_in)
    if mode.position != len(tape):
        raise HeadError("the reference and actual passes through the head took different paths")
    if not logits.requires_grad:
        raise HeadError(f"the model's output does not depend on layer {layer!r}")
    return PairedPass(logits, reference_logits.detach().expand_as(logits), leaf, layer)
