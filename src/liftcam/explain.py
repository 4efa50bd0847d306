"""Explain a batch: run the body once, the head as the methods need, and build Explanations."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, overload

import torch
from torch import Tensor, nn

from .capture import (
    Captured,
    Element,
    OutputAdapter,
    SplitMode,
    call_name,
    parse_layer,
    resolve_layer,
    split_model,
)
from .errors import LiftCamError
from .head import DEFAULT_MEMORY_BYTES
from .layout import Reshape
from .linear_head import linear_head_weight
from .maps import normalized_maps, per_channel
from .methods import CamMethod, MethodResult, Need, get_method
from .methods.principal import first_component
from .providers import Batch, provide
from .targets import Targets

Reference = Literal["zeros", "mean"] | Tensor | None
#: The input's factors in ``aug_smooth`` (ttach's ``Multiply`` as pytorch-grad-cam uses it), each with and
#: without a horizontal flip.
AUGMENTATION_FACTORS = (0.9, 1.0, 1.1)


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
        extras: per-method extras, e.g. ``"stderr"`` (B, K) for sampled Shapley values.
        inputs: (B, C, H, W) the explained input batch (for display; not copied).
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
    extras: dict[str, Tensor] = field(default_factory=dict)
    inputs: Tensor | None = field(default=None, repr=False)

    def _repr_png_(self) -> bytes:
        """Jupyter's display: each image's overlay, titled with the method and class (:func:`liftcam.show`)."""
        from .viz import figure_png, show

        return figure_png(show(self))


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
        ref = ref.view(1, -1, *([1] * (activations.dim() - 2)))
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
        model: any PyTorch CNN or vision transformer; its train/eval mode is the caller's.
        layer: the target layer, a dotted name as in ``model.named_modules()`` or the module; None picks
            one (:func:`liftcam.models.guess_layer`). A module called several times in the forward pass
            (a block's shared ReLU) is cut at its first call (as pytorch-grad-cam), or its k-th with ``"name#k"``.
            ``"name[e]"`` is ``element=e``.
        split_mode: ``"auto"`` (torch.fx graph split, else re-running the model), ``"graph"`` or
            ``"rerun"``.
        lrp_epsilon: the epsilon of ``lrp-cam``'s rule (captum's default, as the official code).
        output: a function from the model's output to its (B, C) logits, for outputs that are not a tensor,
            a tuple (the first element), a dict with ``"logits"`` or ``"out"``, or an object with ``.logits``.
        element: for a layer that outputs a tuple, list or dict of tensors, the one explained, by position or
            dict key (default: the first with the batch's size that can be seen as maps); the others are passed
            on unchanged (an FPN's other levels, HRNet's other branches).
        reshape: how the layer's output becomes maps ``(B, K, h, w)``, a callable as pytorch-grad-cam's
            ``reshape_transform`` that only selects and rearranges elements. Not needed for transformer
            tokens (prefix tokens and the patch grid are found from the model or the input) and
            channels-last outputs: see :mod:`liftcam.layout`.
    """

    def __init__(
        self,
        model: nn.Module,
        layer: str | nn.Module | None = None,
        *,
        split_mode: SplitMode = "auto",
        lrp_epsilon: float = 1e-9,
        reshape: Reshape | None = None,
        output: Callable[[Any], Tensor] | None = None,
        element: Element | None = None,
    ) -> None:
        if layer is None:
            from .models import guess_layer

            layer = guess_layer(model)
        layer, call, element = parse_layer(layer, element=element)
        name, module = resolve_layer(model, layer)
        self.model = model if output is None else OutputAdapter(model, output)
        self.split = split_model(self.model, module, split_mode, reshape, call, element)
        # the name in the user's model, not in the adapter
        self.split.layer = call_name(name, call) + ("" if element is None else f"[{element}]")
        self.lrp_epsilon = lrp_epsilon
        # the input's spatial dimensions, from the first convolution: one input without its batch
        # dimension is told apart from a batch
        first_conv = next((m for m in model.modules() if isinstance(m, nn.modules.conv._ConvNd)), None)
        self._input_spatial = len(first_conv.kernel_size) if first_conv is not None else 2

    @property
    def layer(self) -> str:
        return self.split.layer

    def capture(self, x: Tensor) -> Captured:
        """Run the body on ``x`` (B, C, H, W), or (B, C, L), (B, C, T, H, W), once, without autograd; return
        the activations. One input without its batch dimension (C, H, W) is taken as a batch of one."""
        if not isinstance(x, Tensor):
            raise LiftCamError(f"input must be a torch.Tensor, not {type(x).__name__}")
        if x.dim() == self._input_spatial + 1:
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
        return Captured(activations, context, captured.input_size, x)

    def logits(self, captured: Captured) -> Tensor:
        """The model's output for captured activations (the head alone, no autograd)."""
        with torch.no_grad():
            return self.split.head(captured.activations.clone(), captured.context)

    def linear_head_weight(self, captured: Captured) -> Tensor:
        """``W`` (C, K) if the head is GAP + Linear; :class:`HeadError` otherwise."""
        return linear_head_weight(lambda t: self.split.head(t, captured.context), captured.activations)

    @overload
    def __call__(  # type: ignore[overload-overlap]
        self,
        x: Tensor,
        method: str | CamMethod = ...,
        targets: Targets = ...,
        reference: Reference = ...,
        *,
        eigen_smooth: bool = ...,
        aug_smooth: bool = ...,
    ) -> Explanation: ...

    @overload
    def __call__(
        self,
        x: Tensor,
        method: Sequence[str | CamMethod],
        targets: Targets = ...,
        reference: Reference = ...,
        *,
        eigen_smooth: bool = ...,
        aug_smooth: bool = ...,
    ) -> dict[str, Explanation]: ...

    def __call__(
        self,
        x: Tensor,
        method: str | CamMethod | Sequence[str | CamMethod] = "lift-cam",
        targets: Targets = None,
        reference: Reference = None,
        *,
        eigen_smooth: bool = False,
        aug_smooth: bool = False,
    ) -> Explanation | dict[str, Explanation]:
        """Explain ``x`` with one method (an :class:`Explanation`) or several (a dict by name).

        A method is a name of :data:`METHODS` or a configured instance (``liftcam.methods.Shap(n_samples=200)``).
        pytorch-grad-cam's smoothing options, for every method:

        * ``eigen_smooth``: the raw map is the first principal component of the channel terms ``alpha_k A^k``
          (a map method's own terms), not their sum (its sign: agreeing with the sum);
        * ``aug_smooth``: ``maps`` is the mean of the maps of six test-time augmentations of the input
          (horizontal flip or not, times 0.9, 1 or 1.1; each map flipped back), the classes those of the
          input itself; ``raw``, ``weights`` and the rest are the input's own.
        """
        single = isinstance(method, (str, CamMethod))
        specs: list[str | CamMethod] = [method] if single else list(method)  # type: ignore[list-item, arg-type]
        captured = self.capture(x)
        result = self.explain_captured(captured, specs, targets, reference, eigen_smooth=eigen_smooth)
        if aug_smooth:
            assert captured.inputs is not None
            result = self._augmentation_smoothed(captured.inputs, result, specs, reference, eigen_smooth)
        return next(iter(result.values())) if single else result

    def _augmentation_smoothed(
        self,
        x: Tensor,
        explained: dict[str, Explanation],
        specs: list[str | CamMethod],
        reference: Reference,
        eigen_smooth: bool,
    ) -> dict[str, Explanation]:
        """The maps averaged over pytorch-grad-cam's (ttach's) default augmentations: flip x (0.9, 1, 1.1)."""
        first = next(iter(explained.values()))
        if bool((first.targets < 0).any()):
            raise LiftCamError("aug_smooth needs class targets: a function or region target does not follow a flip")
        total = {name: torch.zeros_like(e.maps) for name, e in explained.items()}
        for flip in (False, True):
            for factor in AUGMENTATION_FACTORS:
                if not flip and factor == 1.0:
                    maps = {name: e.maps for name, e in explained.items()}
                else:
                    augmented = (x.flip(-1) if flip else x) * factor
                    result = self.explain_captured(
                        self.capture(augmented), specs, first.targets, reference, eigen_smooth=eigen_smooth
                    )
                    maps = {name: e.maps.flip(-1) if flip else e.maps for name, e in result.items()}
                for name in total:
                    total[name] += maps[name]
        count = 2 * len(AUGMENTATION_FACTORS)
        return {name: dataclasses.replace(e, maps=total[name] / count) for name, e in explained.items()}

    def explain_captured(
        self,
        captured: Captured,
        methods: Sequence[str | CamMethod],
        targets: Targets = None,
        reference: Reference = None,
        memory_bytes: int = DEFAULT_MEMORY_BYTES,
        eigen_smooth: bool = False,
    ) -> dict[str, Explanation]:
        """Explain already captured activations with every method in ``methods``.

        Each pass is shared by every method that needs it: one head pass with autograd for the
        gradient methods, one paired reference/actual pass for DeepLIFT, one LRP pass, and a
        head evaluator for the perturbation methods. ``memory_bytes`` bounds one chunk of head
        evaluations. ``eigen_smooth``: see :meth:`__call__`.
        """
        chosen = {m.name: m for m in (get_method(spec) for spec in methods)}
        if not chosen:
            raise LiftCamError("no method given")
        needs: frozenset[Need] = frozenset().union(*(m.needs for m in chosen.values()))
        batch = Batch(
            split=self.split,
            captured=captured,
            targets=targets,
            reference=resolve_reference(reference, captured.activations),
            needs=needs,
            model=self.model,
            lrp_epsilon=self.lrp_epsilon,
            memory_bytes=memory_bytes,
            capture=self.capture,
        )
        inputs = provide(batch)
        classes, scores, logits, reference_scores = inputs.targets, inputs.scores, batch.logits, batch.reference_scores
        assert logits is not None
        explanations: dict[str, Explanation] = {}
        for name, m in chosen.items():
            result = m.compute(inputs)
            alpha = result.weights
            delta = None
            if Need.DEEPLIFT in m.needs and alpha is not None and reference_scores is not None:
                delta = alpha.sum(dim=1) - (scores - reference_scores)
            raw = result.raw.detach()
            if eigen_smooth:
                raw = _eigen_smoothed(name, result, captured.activations)
            explanations[name] = Explanation(
                method=name,
                layer=self.layer,
                maps=normalized_maps(raw, captured.input_size),
                raw=raw,
                weights=None if alpha is None else alpha.detach(),
                targets=classes,
                scores=scores,
                logits=logits,
                delta=delta,
                extras={k: v.detach() for k, v in result.extras.items()},
                inputs=captured.inputs,
            )
        return explanations


def _eigen_smoothed(name: str, result: MethodResult, activations: Tensor) -> Tensor:
    """pytorch-grad-cam's ``eigen_smooth``: the first principal component of the channel terms
    ``alpha_k A^k`` (a map method's own terms) instead of their sum, oriented to agree with the sum."""
    terms = result.contributions
    if terms is None and result.weights is not None:
        terms = per_channel(result.weights, activations) * activations
    if terms is None:
        raise LiftCamError(f"{name} has no channel terms to smooth (eigen_smooth): its map is not a channel sum")
    return first_component(terms.detach())[0]


@overload
def explain(  # type: ignore[overload-overlap]
    model: nn.Module,
    x: Tensor,
    layer: str | nn.Module | None = ...,
    method: str | CamMethod = ...,
    targets: Targets = ...,
    reference: Reference = ...,
    *,
    eigen_smooth: bool = ...,
    aug_smooth: bool = ...,
) -> Explanation: ...


@overload
def explain(
    model: nn.Module,
    x: Tensor,
    layer: str | nn.Module | None,
    method: Sequence[str | CamMethod],
    targets: Targets = ...,
    reference: Reference = ...,
    *,
    eigen_smooth: bool = ...,
    aug_smooth: bool = ...,
) -> dict[str, Explanation]: ...


def explain(
    model: nn.Module,
    x: Tensor,
    layer: str | nn.Module | None = None,
    method: str | CamMethod | Sequence[str | CamMethod] = "lift-cam",
    targets: Targets = None,
    reference: Reference = None,
    *,
    eigen_smooth: bool = False,
    aug_smooth: bool = False,
) -> Explanation | dict[str, Explanation]:
    """Explain ``model``'s decision on ``x`` with class activation maps at ``layer`` (None: a layer chosen by
    :func:`liftcam.models.guess_layer`).

    ``method`` is one name of :data:`liftcam.METHODS` (returns an :class:`Explanation`) or a list of
    names (returns a dict; the body runs once and the head passes are shared). ``targets``: None
    (arg-max), an int, one int per image, or a callable ``logits -> (B,) scores``. ``reference`` (for
    ``lift-cam``): zeros (default), ``"mean"`` over the batch, or a tensor broadcastable to ``A``.
    ``eigen_smooth``, ``aug_smooth``: pytorch-grad-cam's smoothing (see :meth:`Explainer.__call__`).
    To explain many batches with the same model and layer, build an :class:`Explainer` once.
    """
    return Explainer(model, layer)(x, method, targets, reference, eigen_smooth=eigen_smooth, aug_smooth=aug_smooth)
