"""What the methods need, each computed once per batch, on demand, by one provider.

A method declares its needs (:class:`~liftcam.methods.Need`); :func:`provide` runs the provider of each need
of the batch's methods once, in a fixed order, and hands every method the same :class:`MethodInputs`:

* gradients ``g = ds/dA`` and, in the same pass, the Hessian-vector product ``H A`` (Shapley-CAM);
* DeepLIFT multipliers ``m`` against the reference ``R`` (one paired pass);
* LRP-epsilon relevance;
* the weight ``W`` of a GAP + Linear head;
* a head evaluator (ablations, Shapley games, LIME);
* the input batch and the whole model (Score-CAM masks the input);
* the head itself, for a method that differentiates a score of its own (Finer-CAM);
* the layer's activations and gradients at other inputs (SmoothGrad-CAM++'s noisy copies).

The explained classes are bound at the first pass that computes the model's output (the gradient pass, else
the DeepLIFT pass, else a plain head pass), so that a region or a function target sees the actual output.
Adding a need is one provider here and one entry in :data:`PROVIDERS`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from .capture import Captured, SplitModel
from .deeplift import paired_pass
from .errors import LiftCamError
from .head import HeadEvaluator
from .linear_head import linear_head_weight
from .lrp import lrp_relevance
from .methods.base import MethodInputs, Need
from .rules import Decomposed
from .targets import Targets, bind_targets, resolve_targets, rows_targets, target_scores
from .tracing import layer_gradient


@dataclass
class Batch:
    """One batch being explained: what the providers read, and what they computed so far."""

    split: SplitModel
    captured: Captured
    targets: Targets
    reference: Tensor
    needs: frozenset[Need]
    model: nn.Module
    lrp_epsilon: float
    memory_bytes: int
    capture: Callable[[Tensor], Captured]  # the explainer's: the body on another input, without autograd
    logits: Tensor | None = None
    classes: Tensor | None = None
    reference_scores: Tensor | None = None  # DeepLIFT: the scores at the reference, s(R)
    computed: dict[str, Any] = field(default_factory=dict)  # MethodInputs' fields, by name

    @property
    def layer(self) -> str:
        return self.split.layer

    def head(self, activations: Tensor) -> Tensor:
        return self.split.head(activations, self.captured.context)

    def bind(self, logits: Tensor) -> None:
        """The first output computed: bind the targets to it and pick the classes (once)."""
        if self.classes is None:
            self.logits = logits
            self.targets = bind_targets(self.targets, logits)
            self.classes = resolve_targets(self.targets, logits.detach())

    def scores(self, logits: Tensor) -> Tensor:
        """The explained scores (B,) of ``logits`` (with autograd where ``logits`` has it)."""
        assert self.classes is not None
        return target_scores(self.targets, self.classes, logits)


def _gradients(batch: Batch) -> None:
    """``g = ds/dA`` from one head pass with autograd; with Need.HESSIAN, ``H A`` from the same pass (the
    gradient's graph kept; fused attention runs its decomposition, which has a second derivative)."""
    a = batch.captured.activations
    second_order = Need.HESSIAN in batch.needs
    leaf = a.detach().requires_grad_(True)
    with torch.enable_grad(), Decomposed() if second_order else contextlib.nullcontext():
        logits = batch.head(leaf.clone())
        batch.bind(logits)
        gradients = layer_gradient(batch.scores(logits), leaf, batch.layer, create_graph=second_order)
        if second_order:
            hessian_vector = torch.zeros_like(a)
            if gradients.requires_grad:  # else the head is piecewise linear: H A = 0
                (hv,) = torch.autograd.grad(gradients, leaf, grad_outputs=a, allow_unused=True)
                hessian_vector = hv.detach() if hv is not None else hessian_vector
            batch.computed["hessian_vector"] = hessian_vector
    batch.computed["gradients"] = gradients.detach()


def _deeplift(batch: Batch) -> None:
    """DeepLIFT multipliers of the scores against the reference, from one paired reference/actual pass."""
    a, ref = batch.captured.activations, batch.reference
    # One reference for the whole batch and a head that reads nothing else of the batch: the reference
    # pass runs on a single sample.
    shared = ref.stride(0) == 0 and not batch.captured.context
    paired = paired_pass(batch.head, a, ref, batch.layer, shared_reference=shared)
    batch.bind(paired.logits)
    batch.reference_scores = batch.scores(paired.reference_logits).detach()
    batch.computed["multipliers"] = paired.multipliers(batch.scores(paired.logits))


def _relevance(batch: Batch) -> None:
    classes = batch.classes
    _, relevance = lrp_relevance(
        batch.head,
        batch.captured.activations,
        lambda lg: target_scores(batch.targets, classes, lg),  # type: ignore[arg-type]
        batch.lrp_epsilon,
        batch.layer,
    )
    batch.computed["relevance"] = relevance


def _linear_weight(batch: Batch) -> None:
    batch.computed["linear_weight"] = linear_head_weight(batch.head, batch.captured.activations)


def _evaluator(batch: Batch) -> None:
    assert batch.classes is not None
    batch.computed["evaluator"] = HeadEvaluator(
        batch.split, batch.captured, batch.targets, batch.classes, batch.memory_bytes
    )


def _head(batch: Batch) -> None:
    batch.computed["head"] = batch.head


def _at_input(batch: Batch) -> None:
    """``(x', images) -> (A(x'), ds/dA(x'))`` for copies ``x'`` (n, ...) of the images ``images`` (n,): the body
    on them, then the head with autograd; copy ``i``'s score is image ``images[i]``'s (its class, or its region
    bound at the actual input)."""

    def at_input(x: Tensor, images: Tensor) -> tuple[Tensor, Tensor]:
        assert batch.classes is not None
        targets = rows_targets(batch.targets, images)
        classes = batch.classes[images.to(batch.classes.device)]
        captured = batch.capture(x)
        leaf = captured.activations.detach().requires_grad_(True)
        with torch.enable_grad():
            scores = target_scores(targets, classes, batch.split.head(leaf.clone(), captured.context))
            gradients = layer_gradient(scores, leaf, batch.layer)
        return captured.activations, gradients.detach()

    batch.computed["at_input"] = at_input


def _logits(batch: Batch) -> None:
    """A plain head pass, where no pass that binds the targets ran."""
    if batch.classes is None:
        with torch.no_grad():
            batch.bind(batch.head(batch.captured.activations.clone()))


Provider = Callable[[Batch], None]

#: Each need's provider. Those before ``None`` may bind the targets (they compute the model's output);
#: those after read the bound classes.
PROVIDERS: tuple[tuple[Need | None, Provider], ...] = (
    (Need.GRADIENTS, _gradients),
    (Need.HESSIAN, _gradients),
    (Need.DEEPLIFT, _deeplift),
    (None, _logits),
    (Need.LRP, _relevance),
    (Need.LINEAR_HEAD, _linear_weight),
    (Need.HEAD, _evaluator),
    (Need.HEAD_PASS, _head),
    (Need.AT_INPUT, _at_input),
)


def provide(batch: Batch) -> MethodInputs:
    """Run the provider of each of the batch's needs once, in :data:`PROVIDERS`' order; the methods' inputs."""
    done: set[Provider] = set()
    for need, provider in PROVIDERS:
        if (need is None or need in batch.needs) and provider not in done:
            provider(batch)
            done.add(provider)
    assert batch.logits is not None and batch.classes is not None
    logits = batch.logits.detach()
    if not bool(torch.isfinite(logits).all()):
        raise LiftCamError("the model's output contains NaN or infinite values")
    batch.logits = logits
    targets = batch.targets
    score_function = targets if callable(targets) and not isinstance(targets, Tensor) else None
    return MethodInputs(
        activations=batch.captured.activations,
        targets=batch.classes,
        scores=batch.scores(logits),
        reference=batch.reference,
        images=batch.captured.inputs,
        model=batch.model,
        score_function=score_function,
        layer=batch.layer,
        **batch.computed,
    )
