"""Several layers at once: each layer explained on its own, and the maps fused.

The fused map is LayerCAM's and pytorch-grad-cam's multi-layer map: each layer's raw map through ReLU,
scaled to [0, 1], upsampled to the input's resolution, averaged over the layers, and scaled again,

``M = minmax(1/L sum_l upsample(minmax(ReLU(sum_k alpha_{l,k} A_l^k))))``

(for one layer, the map of :func:`~liftcam.maps.normalized_maps`: bilinear upsampling commutes with the
affine scaling).

Each layer keeps its own :class:`~liftcam.explain.Explanation` (coefficients, raw map, and for LIFT-CAM its
summation-to-delta ``sum_k alpha_{l,k} = F(A_l) - F(R_l)``, the other layers' activations as they are).
For nested layers (``layer3`` and ``layer4``) the head of the shallower one runs through the deeper one;
for parallel ones (an FPN's levels, ``"backbone.fpn[0]"``), the other levels are held at their actual values.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, overload

import torch
from torch import Tensor, nn

from .errors import LiftCamError
from .explain import Explainer, Explanation, Reference
from .maps import minmax, upsample
from .methods import CamMethod
from .targets import Targets


@dataclass(frozen=True)
class FusedExplanation:
    """One method's explanation at several layers.

    Attributes:
        method: the method's name.
        maps: (B, H, W) the fused map in [0, 1] at input resolution (see :func:`fuse_maps`).
        layers: each layer's own :class:`~liftcam.explain.Explanation`, by layer name, in the given order.
    """

    method: str
    maps: Tensor
    layers: dict[str, Explanation]

    def _repr_png_(self) -> bytes:
        """Jupyter's display: each image's fused overlay (:func:`liftcam.show`)."""
        from .viz import figure_png, show

        return figure_png(show(self))

    @property
    def targets(self) -> Tensor:
        """(B,) the explained classes (the same at every layer)."""
        return next(iter(self.layers.values())).targets

    @property
    def scores(self) -> Tensor:
        """(B,) the explained scores (the model's, the same at every layer)."""
        return next(iter(self.layers.values())).scores

    @property
    def logits(self) -> Tensor:
        return next(iter(self.layers.values())).logits


def fuse_maps(raw: Sequence[Tensor], size: Sequence[int]) -> Tensor:
    """``minmax(mean_l upsample(minmax(ReLU(raw_l)), size))`` of the layers' raw maps (B, h_l, w_l)."""
    if not raw:
        raise LiftCamError("no maps to fuse")
    return minmax(torch.stack([upsample(minmax(torch.relu(r)), size) for r in raw]).mean(dim=0))


def fuse(per_layer: Mapping[str, Mapping[str, Explanation]]) -> dict[str, FusedExplanation]:
    """Per method, the layers' explanations (``{layer: {method: Explanation}}``) as one :class:`FusedExplanation`."""
    layers = list(per_layer)
    methods = list(per_layer[layers[0]])
    fused = {}
    for m in methods:
        each = {name: per_layer[name][m] for name in layers}
        size = next(iter(each.values())).maps.shape[1:]
        fused[m] = FusedExplanation(m, fuse_maps([e.raw for e in each.values()], size), each)
    return fused


class MultiLayerExplainer:
    """A model explained at several layers at once: one :class:`~liftcam.explain.Explainer` per layer, the
    maps fused (see the module's equation).

    Args:
        model: as for :class:`~liftcam.explain.Explainer`.
        layers: the layers, names or modules (``"name#k"`` and ``"name[e]"`` as for one layer).
        **options: passed to every layer's :class:`~liftcam.explain.Explainer` (``split_mode``, ``output``,
            ``reshape``, ...).
    """

    def __init__(self, model: nn.Module, layers: Sequence[str | nn.Module], **options: Any) -> None:
        if isinstance(layers, (str, nn.Module)) or not layers:
            raise LiftCamError("give a list of one or more layers")
        self.explainers = [Explainer(model, layer, **options) for layer in layers]
        names = [e.layer for e in self.explainers]
        if len(set(names)) != len(names):
            raise LiftCamError(f"a layer is given twice: {', '.join(names)}")

    @property
    def layers(self) -> list[str]:
        return [e.layer for e in self.explainers]

    @overload
    def __call__(  # type: ignore[overload-overlap]
        self, x: Tensor, method: str | CamMethod = ..., targets: Targets = ..., reference: Reference = ...
    ) -> FusedExplanation: ...

    @overload
    def __call__(
        self, x: Tensor, method: Sequence[str | CamMethod], targets: Targets = ..., reference: Reference = ...
    ) -> dict[str, FusedExplanation]: ...

    def __call__(
        self,
        x: Tensor,
        method: str | CamMethod | Sequence[str | CamMethod] = "lift-cam",
        targets: Targets = None,
        reference: Reference = None,
    ) -> FusedExplanation | dict[str, FusedExplanation]:
        """Explain ``x`` at every layer with one method (a :class:`FusedExplanation`) or several (a dict)."""
        single = isinstance(method, (str, CamMethod))
        specs: list[str | CamMethod] = [method] if single else list(method)  # type: ignore[list-item, arg-type]
        per_layer = {e.layer: e.explain_captured(e.capture(x), specs, targets, reference) for e in self.explainers}
        result = fuse(per_layer)
        return next(iter(result.values())) if single else result
