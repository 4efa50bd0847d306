"""Fast games for heads of the form ``affine -> one elementwise nonlinearity -> affine``.

Many heads after a late layer are ``F(A) = L2(phi(L1(A)))`` with ``L1``, ``L2`` affine and ``phi``
elementwise (EfficientNet/MobileNet after the last block: 1x1 conv, batch norm, ReLU6, pooling,
linear), or purely affine (``GAP + Linear``). For the target logit ``c`` and a coalition mask ``z``:

    L1(A_S) = P0 + sum_k z_k C_k,     P0 = L1(R),  C_k = L1(R + e_k (A_k - R_k)) - P0
    v(S)    = beta + <w, phi(P0 + z C)>,   w = d F_c / d u,  beta = F_c(u = 0)   (u = phi's output)

so a coalition costs one row of ``z C`` instead of a head forward, and along a permutation the
pre-activations are running sums of rows of ``C``. An affine head is additive: ``v(S) = v0 + sum z_k c_k``.
The factorisation is found by following the head's torch calls once; it is checked against the
head itself at the full and empty coalitions, and not used when the check fails.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from ..tracing import AFFINE, ELEMENTWISE, PRODUCT, DependencyMode, iter_tensors, op_name
from .game import CoalitionGame

_PASS_ATTRIBUTES = frozenset({"__get__.T", "__get__.mT"})


class _NotFactorable(Exception):
    pass


class _Stop(Exception):
    def __init__(self, value: Tensor) -> None:
        super().__init__()
        self.value = value


_TENSOR_INPLACE = frozenset({"relu", "sigmoid", "tanh", "clamp", "clip", "clamp_min", "clamp_max"})


@dataclass
class _Phi:
    """The head's elementwise nonlinearity with its extra arguments."""

    func: Any
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    inplace: bool

    def __call__(self, t: Tensor) -> Tensor:
        out: Tensor = self.func(t.clone() if self.inplace else t, *self.args, **self.kwargs)
        return out

    def apply_(self, t: Tensor) -> Tensor:
        """In place on ``t`` (a scratch buffer): no allocation of a tensor as large as ``t``."""
        name = op_name(self.func).removesuffix("_")
        kwargs = {k: v for k, v in self.kwargs.items() if k != "inplace"}
        try:
            has_inplace = "inplace" in inspect.signature(self.func).parameters
        except (TypeError, ValueError):
            has_inplace = False
        if has_inplace:
            self.func(t, *self.args, inplace=True, **kwargs)
        elif name in _TENSOR_INPLACE:
            getattr(torch.Tensor, name + "_")(t, *self.args, **kwargs)
        else:
            t.copy_(self(t))
        return t


class _Stages(DependencyMode):
    """Follows one head pass: affine calls on the input, at most one elementwise call, affine calls.

    ``dependent`` holds what depends on the input; ``post`` the ids of what comes after the
    nonlinearity. With ``stop`` it raises :class:`_Stop` with the nonlinearity's input; with
    ``override`` it returns ``override`` as the nonlinearity's output.
    """

    def __init__(
        self, source: Tensor, stop: bool = False, override: Tensor | None = None, precise: bool = False
    ) -> None:
        super().__init__(source)
        self.post: set[int] = set()
        self.phi: _Phi | None = None
        self.stop = stop
        self.override = override
        self.precise = precise

    def dependent_call(self, func: Any, name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        inputs = [t for t in iter_tensors((args, kwargs)) if id(t) in self.dependent]
        post = any(id(t) in self.post for t in inputs)
        pre = any(id(t) not in self.post for t in inputs)
        if pre and post:
            raise _NotFactorable("the head combines values from before and after its nonlinearity")
        if name in ELEMENTWISE and pre and self.phi is None:
            if len(inputs) != 1 or not isinstance(args[0], Tensor):
                raise _NotFactorable(f"{name} with several inputs")
            inplace = name.endswith("_") or bool(kwargs.get("inplace", False))
            self.phi = _Phi(func, args[1:], dict(kwargs), inplace)
            if self.stop:
                raise _Stop(args[0])
            out = self.override if self.override is not None else self.phi(args[0])
            if inplace:
                self.dependent.pop(id(args[0]), None)
            self.mark(out)
            self.post.add(id(out))
            return out
        dependent_operands = sum(1 for a in args[:2] if self.depends(a))
        if name in AFFINE or name in _PASS_ATTRIBUTES or (name in PRODUCT and dependent_operands < 2):
            if name == "batch_norm" and (kwargs.get("training") or (len(args) > 5 and args[5])):
                raise _NotFactorable("batch norm in training mode")
            if "dropout" in name:
                training = kwargs.get("training", args[2] if len(args) > 2 else True)
                if training:
                    raise _NotFactorable("active dropout")
            if self.precise:  # the affine calls in float64: weights, biases and running statistics too
                args, kwargs = _to_float64(args), _to_float64(kwargs)
            out = func(*args, **kwargs)
            self.mark(out)
            if post:
                self.post.update(id(t) for t in iter_tensors(out))
            return out
        out = func(*args, **kwargs)
        if not any(True for _ in iter_tensors(out)):
            return out
        raise _NotFactorable(f"{name} is neither affine nor the single elementwise nonlinearity")


def _to_float64(value: Any) -> Any:
    if isinstance(value, Tensor):
        return value.double() if value.is_floating_point() else value
    if isinstance(value, (list, tuple)):
        return type(value)(_to_float64(v) for v in value)
    if isinstance(value, dict):
        return {k: _to_float64(v) for k, v in value.items()}
    return value


@dataclass
class FactoredHead:
    """``head = suffix o phi o prefix`` (``phi`` None: the head is affine and ``prefix`` is the head)."""

    prefix: Callable[[Tensor], Tensor]
    phi: _Phi | None
    suffix: Callable[[Tensor], Tensor] | None


def factor_head(head: Callable[[Tensor], Tensor], sample: Tensor) -> FactoredHead | None:
    """Factor ``head`` as affine, elementwise, affine (or affine alone); None if it is not so."""
    probe = sample.detach().clone()
    stages = _Stages(probe)
    try:
        with torch.no_grad(), stages:
            head(probe)
    except _NotFactorable:
        return None
    phi = stages.phi

    def prefix(a: Tensor) -> Tensor:
        # float64 where the device has it: a channel's row is L1(R + e_k (A_k - R_k)) - L1(R), a small
        # difference of large values, and K rows are summed (float32 rows: 1e-4 relative error at K = 1152)
        precise = a.device.type != "mps"
        a = a.to(torch.float64, copy=True) if precise else a.clone()
        try:
            with _Stages(a, stop=phi is not None, precise=precise):
                out = head(a)
        except _Stop as stop:
            return stop.value
        if phi is None:
            return out
        raise _NotFactorable("the nonlinearity was not reached")

    def suffix(u: Tensor) -> Tensor:
        dummy = sample.detach().new_zeros((u.shape[0], *sample.shape[1:]))
        with _Stages(dummy, override=u):
            return head(dummy)

    return FactoredHead(prefix=prefix, phi=phi, suffix=suffix)


class AdditiveGame(CoalitionGame):
    """An affine head: ``v(S) = v0 + sum_{k in S} c_k`` exactly."""

    def __init__(self, v0: float, contributions: Tensor) -> None:
        self.v0 = v0
        self.contributions = contributions.double()
        self.n_players = contributions.shape[0]
        self.device = contributions.device

    def values(self, masks: Tensor) -> Tensor:
        return self.v0 + masks.to(self.contributions) @ self.contributions

    def shapley(self) -> Tensor:
        return self.contributions.clone()


class FactoredGame(CoalitionGame):
    """``v(S) = beta + <w, phi(P0 + z C)>``: coalitions cost a row of ``z C``, chains a running sum."""

    def __init__(
        self, phi: _Phi, base: Tensor, rows: Tensor, w: Tensor, beta: float, memory_bytes: int = 256 * 2**20
    ) -> None:
        self.phi = phi
        self.base = base.reshape(-1)  # P0 (D,)
        self.rows = rows.reshape(rows.shape[0], -1).contiguous()  # C (K, D)
        self.w = w.reshape(-1)
        self.beta = beta
        self.n_players = rows.shape[0]
        self.device = rows.device
        self.memory_bytes = memory_bytes

    def _evaluate(self, pre: Tensor, scratch: bool = False) -> Tensor:
        """``beta + <w, phi(pre)>`` over the last dimension, in float64 (``scratch``: overwrite ``pre``)."""
        activated = self.phi.apply_(pre) if scratch else self.phi(pre)
        # a row-wise sum, not ``activated @ w``: BLAS's GEMV may round a row differently by its position
        # in the batch, and equal coalitions must give equal values (an unchanged channel scores exactly 0)
        return activated.mul_(self.w).sum(dim=-1).double() + self.beta

    def values(self, masks: Tensor) -> Tensor:
        d = self.base.numel()
        chunk = max(1, self.memory_bytes // (4 * d * 2))
        out = [
            self._evaluate(self.base + masks[s : s + chunk].to(self.rows) @ self.rows)
            for s in range(0, masks.shape[0], chunk)
        ]
        return torch.cat(out) if out else self.base.new_zeros(0, dtype=torch.float64)

    def chain_values(self, orders: Tensor) -> Tensor:
        """Running sums of rows of ``C``; a permutation followed by its reverse shares them:
        the reverse's prefixes are the complements, ``P0 + (C_total - S_j)``."""
        p, k = orders.shape
        d = self.base.numel()
        per_chain = (k + 1) * d * 4
        pairs = p % 2 == 0 and p > 0 and torch.equal(orders[1::2], orders[0::2].flip(1))
        step = 2 if pairs else 1
        chunk = max(1, self.memory_bytes // (per_chain * step)) * step
        complement = 2 * self.base + self.rows.sum(dim=0)  # P0 + C_total + P0
        out = torch.empty(p, k + 1, dtype=torch.float64, device=self.base.device)
        sums = torch.empty(chunk // step, k + 1, d, dtype=self.rows.dtype, device=self.rows.device)
        scratch = torch.empty_like(sums) if pairs else sums
        for start in range(0, p, chunk):
            block = orders[start : start + chunk : step]
            n = block.shape[0]
            self._running_sums(sums[:n], block, scan=sums.is_cuda)
            if pairs:
                # prefix j of the reverse is the complement of prefix K - j of the permutation
                torch.sub(complement, sums[:n], out=scratch[:n])
                out[start + 1 : start + chunk : 2] = self._evaluate(scratch[:n], scratch=True).flip(1)
            out[start : start + chunk : step] = self._evaluate(sums[:n], scratch=True)
        return out

    def _running_sums(self, sums: Tensor, block: Tensor, scan: bool) -> None:
        """``sums[m, j] = P0 + C[order_1] + ... + C[order_j]`` for each order ``m`` of ``block``, added one
        row after another in the rows' dtype. ``scan``: one ``cumsum`` kernel, which on CUDA adds along a
        non-innermost dimension sequentially in that dtype, the additions of the loop in the same order (bit
        for bit, tested), without a kernel launch per player; the CPU's cumsum accumulates in float64 and
        is slower, so the CPU adds row by row."""
        sums[:, 0] = self.base
        if scan:
            sums[:, 1:] = self.rows[block]
            sums.cumsum_(dim=1)
            return
        for m, order in enumerate(block.tolist()):
            chain = sums[m]
            for j, player in enumerate(order):
                torch.add(chain[j], self.rows[player], out=chain[j + 1])


def build_fast_game(
    head: Callable[[Tensor], Tensor],
    activations: Tensor,
    reference: Tensor,
    cls: int,
    memory_bytes: int = 256 * 2**20,
) -> CoalitionGame | None:
    """A fast game for one image's head (``head`` takes (N, K, h, w)), or None where it does not apply.

    ``activations`` and ``reference`` are (K, h, w); ``cls`` the explained class.
    """
    factored = factor_head(head, activations[None])
    if factored is None:
        return None
    k = activations.shape[0]
    diff = activations - reference
    chunk = max(1, memory_bytes // (activations.numel() * 8 * 8))

    def channel_inputs(start: int, stop: int) -> Tensor:
        eye = torch.eye(k, dtype=activations.dtype, device=activations.device)[start:stop]
        return reference + eye.reshape(*eye.shape, *([1] * (diff.dim() - 1))) * diff

    with torch.no_grad():
        try:
            base = factored.prefix(reference[None])
            # an additive game keeps float64 contributions; a factored game's rows (K, D) are stored in
            # the activations' dtype, chunk by chunk (float64 would double hundreds of MB)
            stored = base.dtype if factored.phi is None else activations.dtype
            rows = torch.cat(
                [(factored.prefix(channel_inputs(s, min(s + chunk, k))) - base).to(stored) for s in range(0, k, chunk)]
            )
        except _NotFactorable:
            return None
        full = float(head(activations[None])[0, cls])
        empty = float(head(reference[None])[0, cls])
    if factored.phi is None:
        game: CoalitionGame = AdditiveGame(float(base[0, cls]), rows[:, cls])
    else:
        assert factored.suffix is not None
        u = torch.zeros_like(base, dtype=stored).requires_grad_(True)
        with torch.enable_grad():
            score = factored.suffix(u)[0, cls]
            (w,) = torch.autograd.grad(score, u)
        game = FactoredGame(factored.phi, base[0].to(stored), rows, w[0], float(score.detach()), memory_bytes)
    ones = torch.ones(1, k, device=activations.device)
    check = game.values(torch.cat([ones, torch.zeros_like(ones)]))
    scale = max(abs(full), abs(empty), 1.0)
    if not math.isclose(float(check[0]), full, abs_tol=1e-4 * scale) or not math.isclose(
        float(check[1]), empty, abs_tol=1e-4 * scale
    ):
        return None
    return game
