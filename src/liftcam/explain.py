"""Explain a batch: run the body once, the head as the methods need, and build Explanations."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, overload

import torch
from torch import Tensor, nn

from .capture import Captured, SplitMode, split_model
from .deeplift import paired_pass
from .errors import HeadError, LiftCamError
from .linear_head import linear_head_weight
from .maps import normalized_maps
from .methods import MethodInputs, Need, get_method
from .targets import Targets, resolve_targets, target_scores

Reference = Literal["zeros", "mean"] | Tensor | None


@dataclass(frozen=True)
class Explanation:
    """One method's explanation of a batch.

    Attributes:
        method: the method's name.
        layer: the target layer's dotted name.
        maps: (B, H, W) ``minmax(upsample(ReLU(raw)))`` in [0, 1] at input resolution.
        raw: (B, h, w) ``sum_k alpha_k A^k`` before ReLU and scaling, at layer resolution.
        weights: (B, K) channel coefficients ``alpha``, or None for map-only methods.
        targets: (B,) explained classes (-1 where a score function was given).
        scores: (B,) the explained scores ``s = F(A)_c`` (target logits).
        logits: (B, C) the model's output.
        delta: (B,) for DeepLIFT methods, ``sum_k alpha_k - (F(A)_c - F(R)_c)``; else None.
    """

    method: str
    layer: str
    maps: Tensor
    raw: Tensor
    weights: Tensor | None
    targets: Tensor
    scores: Tensor
    logits: Tensor
    delta: Tensor | None = None


def resolve_reference(reference: Reference, activations: Tensor) -> Tensor:
    """The reference activations R, shaped like A: zeros, the batch mean, or a broadcast tensor."""
    if reference is None or (isinstance(reference, str) and reference in ("zeros", "zero")):
        return torch.zeros_like(activations[:1]).expand_as(activations)
    if isinstance(reference, str):
        if reference == "mean":
            return activations.mean(dim=0, keepdim=True).expand_as(activations)
        raise LiftCamError(f"unknown reference {reference!r}; use 'zeros', 'mean' or a tensor")
    ref = torch.as_tensor(reference, dtype=activations.dtype, device=activations.device)
    if ref.dim() == 1 and ref.shape[0] == activations.shape[1]:
        ref = ref.view(1, -1, 1, 1)
    try:
        ref = ref.expand_as(activations)
    except RuntimeError:
        raise LiftCamError(
            f"reference of shape {tuple(ref.shape)} does not broadcast to the activations' {tuple(activations.shape)}"
        ) from None
    if not bool(torch.isfinite(ref).all()):
        raise LiftCamError("the reference contains NaN or infinite values")
    return ref


class Explainer:
    """A model cut at a layer, ready to explain batches (the split is made once, here).

    Args:
        model: any PyTorch CNN; its train/eval mode is the caller's.
        layer: the target layer, a dotted name as in ``model.named_modules()`` or the module.
        split_mode: ``"auto"`` (torch.fx graph split, else re-running the model), ``"graph"`` or
            ``"rerun"``.
    """

    def __init__(self, model: nn.Module, layer: str | nn.Module, *, split_mode: SplitMode = "auto") -> None:
        self.model = model
        self.split = split_model(model, layer, split_mode)

    @property
    def layer(self) -> str:
        return self.split.layer

    def capture(self, x: Tensor) -> Captured:
        """Run the body on ``x`` (B, C, H, W) once, without autograd; return the activations."""
        if not isinstance(x, Tensor):
            raise LiftCamError(f"input must be a torch.Tensor, not {type(x).__name__}")
        if x.dim() == 3:
            x = x.unsqueeze(0)
        if not x.is_floating_point():
            raise LiftCamError(f"input must be a float tensor, not {x.dtype}")
        if not bool(torch.isfinite(x).all()):
            raise LiftCamError("the input contains NaN or infinite values")
        param = next(self.model.parameters(), None)
        if param is not None:
            x = x.to(param.device)
        with torch.inference_mode():
            captured = self.split.body(x)
        # Out of inference mode, so that the head can be differentiated w.r.t. them.
        activations = captured.activations.clone()
        if not bool(torch.isfinite(activations).all()):
            raise LiftCamError(f"the activations of layer {self.layer!r} contain NaN or infinite values")
        context = tuple(c.clone() if isinstance(c, Tensor) else c for c in captured.context)
        return Captured(activations, context, captured.input_size)

    def logits(self, captured: Captured) -> Tensor:
        """The model's output for captured activations (the head alone, no autograd)."""
        with torch.no_grad():
            return self.split.head(captured.activations.clone(), captured.context)

    def linear_head_weight(self, captured: Captured) -> Tensor:
        """``W`` (C, K) if the head is GAP + Linear; :class:`HeadError` otherwise."""
        return linear_head_weight(lambda t: self.split.head(t, captured.context), captured.activations)

    @overload
    def __call__(  # type: ignore[overload-overlap]
        self, x: Tensor, method: str = ..., targets: Targets = ..., reference: Reference = ...
    ) -> Explanation: ...

    @overload
    def __call__(
        self, x: Tensor, method: Sequence[str], targets: Targets = ..., reference: Reference = ...
    ) -> dict[str, Explanation]: ...

    def __call__(
        self,
        x: Tensor,
        method: str | Sequence[str] = "lift-cam",
        targets: Targets = None,
        reference: Reference = None,
    ) -> Explanation | dict[str, Explanation]:
        """Explain ``x`` with one method (an :class:`Explanation`) or several (a dict by name)."""
        names = [method] if isinstance(method, str) else list(method)
        result = self.explain_captured(self.capture(x), names, targets, reference)
        return result[method] if isinstance(method, str) else result

    def explain_captured(
        self,
        captured: Captured,
        methods: Sequence[str],
        targets: Targets = None,
        reference: Reference = None,
    ) -> dict[str, Explanation]:
        """Explain already captured activations with every method in ``methods``.

        The head runs at most twice: once with autograd for all gradient methods, and once as the
        paired reference/actual DeepLIFT pass; both are shared by every method that needs them.
        """
        chosen = {name: get_method(name) for name in dict.fromkeys(methods)}
        if not chosen:
            raise LiftCamError("no method given")
        needs: set[Need] = set().union(*(m.needs for m in chosen.values()))
        a = captured.activations
        context = captured.context

        def head(t: Tensor) -> Tensor:
            return self.split.head(t, context)

        logits: Tensor | None = None
        classes: Tensor | None = None
        scores: Tensor | None = None
        gradients = multipliers = ref = reference_scores = weight = None
        if Need.GRADIENTS in needs:
            leaf = a.detach().requires_grad_(True)
            with torch.enable_grad():
                logits = head(leaf.clone())
                classes = resolve_targets(targets, logits.detach())
                scores = target_scores(targets, classes, logits)
                if not scores.requires_grad:
                    raise HeadError(f"the explained score does not depend on layer {self.layer!r}")
                (gradients,) = torch.autograd.grad(scores.sum(), leaf)
        if Need.DEEPLIFT in needs:
            ref = resolve_reference(reference, a)
            # One reference for the whole batch and a head that reads nothing else of the batch:
            # the reference pass runs on a single sample.
            shared = ref.stride(0) == 0 and not context
            paired = paired_pass(head, a, ref, self.layer, shared_reference=shared)
            if classes is None:
                classes = resolve_targets(targets, paired.logits.detach())
            deeplift_scores = target_scores(targets, classes, paired.logits)
            reference_scores = target_scores(targets, classes, paired.reference_logits).detach()
            multipliers = paired.multipliers(deeplift_scores)
            if logits is None:
                logits, scores = paired.logits, deeplift_scores
        if logits is None:
            logits = self.logits(captured)
            classes = resolve_targets(targets, logits)
            scores = target_scores(targets, classes, logits)
        assert classes is not None and scores is not None
        logits, scores = logits.detach(), scores.detach()
        if not bool(torch.isfinite(logits).all()):
            raise LiftCamError("the model's output contains NaN or infinite values")
        if Need.LINEAR_HEAD in needs:
            weight = self.linear_head_weight(captured)

        inputs = MethodInputs(a, classes, gradients, multipliers, ref, weight)
        explanations: dict[str, Explanation] = {}
        for name, m in chosen.items():
            raw, alpha = m.raw(inputs)
            delta = None
            if Need.DEEPLIFT in m.needs and alpha is not None and reference_scores is not None:
                delta = alpha.sum(dim=1) - (scores - reference_scores)
            explanations[name] = Explanation(
                method=name,
                layer=self.layer,
                maps=normalized_maps(raw.detach(), captured.input_size),
                raw=raw.detach(),
                weights=None if alpha is None else alpha.detach(),
                targets=classes,
                scores=scores,
                logits=logits,
                delta=delta,
            )
        return explanations


@overload
def explain(  # type: ignore[overload-overlap]
    model: nn.Module,
    x: Tensor,
    layer: str | nn.Module,
    method: str = ...,
    targets: Targets = ...,
    reference: Reference = ...,
) -> Explanation: ...


@overload
def explain(
    model: nn.Module,
    x: Tensor,
    layer: str | nn.Module,
    method: Sequence[str],
    targets: Targets = ...,
    reference: Reference = ...,
) -> dict[str, Explanation]: ...


def explain(
    model: nn.Module,
    x: Tensor,
    layer: str | nn.Module,
    method: str | Sequence[str] = "lift-cam",
    targets: Targets = None,
    reference: Reference = None,
) -> Explanation | dict[str, Explanation]:
    """Explain ``model``'s decision on ``x`` with class activation maps at ``layer``.

    ``method`` is one name of :data:`liftcam.METHODS` (returns an :class:`Explanation`) or a list of
    names (returns a dict; the body runs once and the head passes are shared). ``targets``: None
    (arg-max), an int, one int per image, or a callable ``logits -> (B,) scores``. ``reference`` (for
    ``lift-cam``): zeros (default), ``"mean"`` over the batch, or a tensor broadcastable to ``A``.
    To explain many batches with the same model and layer, build an :class:`Explainer` once.
    """
    return Explainer(model, layer)(x, method, targets, reference)
