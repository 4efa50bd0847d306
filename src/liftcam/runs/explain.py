"""Explaining photos with several methods for the CLI's ``explain`` and the web app: one function computes,
the callers only write files or JSON.

:func:`explain_images` takes preprocessed crops, explains them for the chosen targets with every method in
shared passes (several layers: each explained, the maps fused), and, when asked, rates each method's
coefficients against sampled Shapley values of the activation maps (their Pearson r).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from ..errors import HeadError, LiftCamError, UnsupportedOperationError
from ..explain import Explainer, Explanation, Reference
from ..fusion import FusedExplanation, fuse
from ..methods import GRADIENT_FAMILY, METHODS, CamMethod, Shap, method_class, sampled_method
from ..metrics.similarity import pearson
from ..models import LoadedModel
from ..targets import pixel_shares, predicted_regions

#: Method groups accepted where a list of methods is: ``all`` and ``fast`` (the gradient family).
METHOD_GROUPS: dict[str, tuple[str, ...]] = {"all": METHODS, "fast": GRADIENT_FAMILY}


def resolve_methods(requested: Sequence[str]) -> list[str]:
    """Method names from a group name or a list of names (each checked); duplicates dropped."""
    if len(requested) == 1 and requested[0] in METHOD_GROUPS:
        return list(METHOD_GROUPS[requested[0]])
    for name in requested:
        method_class(name)
    return list(dict.fromkeys(requested))


@dataclass(frozen=True)
class TargetChoice:
    """The classes to explain: one class for every image, or the top-k predicted classes."""

    cls: int | None = None
    top: int = 1


def parse_target(text: str | None, categories: Sequence[str]) -> TargetChoice:
    """``None`` (arg-max), ``topK``, a class index, or an exact class name (case-insensitive)."""
    if text is None or not text.strip():
        return TargetChoice()
    match = re.fullmatch(r"top(\d+)", text.strip().lower())
    if match:
        k = int(match.group(1))
        if k < 1:
            raise LiftCamError(f"--target {text}: k must be at least 1")
        if categories and k > len(categories):
            raise LiftCamError(f"--target {text}: the model has only {len(categories)} classes")
        return TargetChoice(top=k)
    if re.fullmatch(r"-?\d+", text.strip()):
        cls = int(text)
        if cls < 0 or (categories and cls >= len(categories)):
            raise LiftCamError(f"class {cls} is out of range for a model with {len(categories) or '?'} classes")
        return TargetChoice(cls=cls)
    lowered = [c.lower() for c in categories]
    if text.strip().lower() in lowered:
        return TargetChoice(cls=lowered.index(text.strip().lower()))
    raise LiftCamError(f"--target {text!r} is neither a class index, a class name of this model, nor topK")


def applicable_methods(
    loaded: LoadedModel, explainer: Explainer, captured: Any, methods: Sequence[str]
) -> tuple[list[str], list[str]]:
    """The methods of ``methods`` that apply to this model and head, and a note for each one left out."""
    kept, notes = list(methods), []
    if loaded.task == "segmentation":
        for name in [m for m in kept if method_class(m).needs_class_scores]:
            kept.remove(name)
            notes.append(f"{name} skipped: it compares classes of a (B, C) output, not pixel regions")
    for name in [m for m in kept if method_class(m).head_specific]:
        try:
            explainer.explain_captured(captured, [name])
        except (HeadError, UnsupportedOperationError) as exc:
            kept.remove(name)
            notes.append(f"{name} skipped: {exc}")
    return kept, notes


@dataclass
class RankedExplanations:
    """Every method's explanations of a batch for its ``rank``-th target (1: the top class or the given one).

    ``targets``: the classes (B,) or, for a segmenter, the region targets; ``shapley``: the sampled Shapley
    values that rate the coefficients (None without ``fidelity``).
    """

    rank: int
    targets: Any
    explanations: dict[str, Explanation | FusedExplanation]
    shapley: Explanation | None = None

    def shapley_pearson(self, row: int) -> dict[str, float | None]:
        """Per method, the Pearson r of its coefficients with the Shapley values (None: no coefficients)."""
        if self.shapley is None or self.shapley.weights is None:
            return {}
        rates: dict[str, float | None] = {}
        for name, exp in self.explanations.items():
            if name == "shap":
                continue
            weights = exp.weights if isinstance(exp, Explanation) else None
            rates[name] = None if weights is None else pearson(weights[row], self.shapley.weights[row])
        return rates


@dataclass
class ExplainedBatch:
    """The result of :func:`explain_images`: the probabilities (B, C) on CPU (a segmenter's: each class's
    share of the pixels), the predicted label maps of a segmenter (else None), one entry per target rank, and
    the methods that applied with a note for each one left out."""

    probabilities: Tensor
    labels: np.ndarray | None
    ranks: list[RankedExplanations]
    methods: list[str]
    notes: list[str] = field(default_factory=list)

    def top(self, row: int, k: int = 5) -> list[tuple[int, float]]:
        """The ``k`` most probable classes of image ``row`` with their probabilities."""
        top = self.probabilities[row].topk(min(k, self.probabilities.shape[1]))
        return [(int(c), float(p)) for p, c in zip(top.values, top.indices, strict=True)]


def explain_images(
    loaded: LoadedModel,
    explainers: Sequence[Explainer],
    x: Tensor,
    methods: Sequence[str],
    target: TargetChoice = TargetChoice(),
    reference: Reference = "zeros",
    fidelity: int = 0,
    seed: int = 0,
    samples: int | None = None,
    check_methods: bool = False,
) -> ExplainedBatch:
    """Explain the model inputs ``x`` (B, C, H, W) with ``methods`` at the explainers' layers.

    ``target``: the class or the top-k predicted classes (a segmenter: the pixels predicted as each);
    ``fidelity``: with N > 0, N sampled Shapley permutations rate each method's coefficients; ``seed`` and
    ``samples`` configure the sampled methods; ``check_methods``: leave out the methods this head has no rule
    for (a method group) instead of failing.
    """
    if not explainers:
        raise LiftCamError("no layer to explain")
    captured = explainers[0].capture(x)
    others = [(e, e.capture(x)) for e in explainers[1:]]
    notes: list[str] = []
    methods = list(methods)
    if check_methods:
        methods, notes = applicable_methods(loaded, explainers[0], captured, methods)
        if not methods:
            raise LiftCamError("no method of the group applies to this model")
    ranks: list[tuple[int, Any]] = []
    labels = None
    if loaded.task == "segmentation":  # each class explained over the pixels predicted as it
        dense = explainers[0].logits(captured)
        labels = dense.argmax(dim=1).cpu().numpy()
        regions = predicted_regions(dense, target.cls, target.top)
        ranks.extend((r + 1, region) for r, region in enumerate(regions))
    elif target.cls is not None:
        ranks.append((1, target.cls))
    else:
        order = explainers[0].logits(captured).argsort(dim=1, descending=True)
        ranks.extend((r + 1, order[:, r]) for r in range(target.top))
    specs: list[str | CamMethod] = [sampled_method(m, seed, samples) for m in methods]
    # sampled Shapley values of the maps rate each method's coefficients (their Pearson r)
    hidden = bool(fidelity) and "shap" not in methods and labels is None
    if hidden:
        specs.append(Shap(n_samples=fidelity, seed=seed))
    results: list[RankedExplanations] = []
    for rank, targets in ranks:
        explanations: dict[str, Any] = explainers[0].explain_captured(captured, specs, targets, reference)
        if others:  # several layers: each explained on its own, the maps fused
            per_layer = {explainers[0].layer: explanations}
            per_layer.update({e.layer: e.explain_captured(c, specs, targets, reference) for e, c in others})
            explanations = dict(fuse(per_layer))
        shapley = explanations.pop("shap") if hidden else explanations.get("shap") if fidelity else None
        results.append(RankedExplanations(rank, targets, explanations, shapley))
    logits = next(iter(results[0].explanations.values())).logits
    probabilities = (pixel_shares(logits) if labels is not None else logits.softmax(dim=1)).cpu()
    return ExplainedBatch(probabilities, labels, results, methods, notes)


def crops_to_batch(loaded: LoadedModel, images: Sequence[Image.Image]) -> tuple[list[Image.Image], Tensor]:
    """The model's centre crops of ``images`` and their normalised input tensor (B, C, H, W)."""
    prep = loaded.preprocessing
    crops = [prep.crop_image(im) for im in images]
    return crops, torch.stack([prep.normalize(c) for c in crops])
