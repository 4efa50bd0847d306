"""Explain a two-stage detector's detections (torchvision's Faster R-CNN and Mask R-CNN).

A detection ``j`` of the actual pass has a box, a label ``c_j`` and a score ``p_j``: the class probability
of the region proposal ``P_j`` it was decoded from. Its explained score, as a function of the activations
``A`` of a backbone layer, is that probability with the detector's discrete choices frozen:

``s_j(A) = softmax(predictor(box_head(RoIAlign(FPN(rest(A)), P_j))))_{c_j}``

The proposals (the RPN's top-k, NMS and score filtering), the box selection after the box head (score
threshold, NMS, top-k) and the input's resizing are taken from the actual pass and held fixed in the
reference pass and in every perturbation, so ``s_j`` is an ordinary function of ``A``: RoIAlign is linear
in the maps for fixed boxes, and LIFT-CAM's summation-to-delta holds. This is the score pytorch-grad-cam's
gradient sees too, since torchvision detaches the proposals (``FasterRCNNBoxScoreTarget`` adds the box's
IoU, which is not part of this score).

The explained detections are a batch: one copy of the image's activations per detection, so one call of
every method explains all of them, each :class:`~liftcam.explain.Explanation` row a detection.

Several layers at once (the FPN's levels: ``layer="backbone.fpn"``, or a list) are explained each on its own,
the other levels at their actual values, and the maps fused as in :mod:`liftcam.fusion`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import FeaturePyramidNetwork, box_iou, clip_boxes_to_image

from .capture import Captured
from .errors import LayerError, LiftCamError, ModelError, TargetError
from .explain import Explainer, Explanation, Reference
from .fusion import FusedExplanation, fuse
from .methods import CamMethod

#: A detection chosen by its label and a box ``(x0, y0, x1, y1)`` in image pixels, matched by IoU.
LabelledBox = tuple[int, tuple[float, float, float, float]]


@dataclass(frozen=True)
class Detection:
    """One detection of the actual pass: box in image pixels, label, score, and the proposal it came from."""

    index: int
    box: tuple[float, float, float, float]
    label: int
    score: float
    proposal: tuple[float, float, float, float]  # the proposal or anchor box, in the detector's resized input
    anchor: int = -1  # single-stage detectors: the anchor (location) it was decoded from


@dataclass(frozen=True)
class DetectionExplanation:
    """The explained detections of one image and, per method, an :class:`Explanation` with one row each (at
    several layers: a :class:`~liftcam.fusion.FusedExplanation`, each layer's explanation in its ``layers``)."""

    detections: list[Detection]
    explanations: dict[str, Explanation] | dict[str, FusedExplanation]
    input_size: tuple[int, int]  # the detector's input (H, W) the maps are computed at: resized, then padded
    image_size: tuple[int, int]  # the resized image within it (top left); maps[:, :h, :w] cover the image


class _FrozenScores(nn.Module):
    """The backbone's features (a dict of maps, batch B) to the scores (B, n) of the n chosen detections,
    their choices frozen. Called whole in the head's graph.

    * two-stage: RoIAlign at the frozen proposals, box head, softmax, the frozen label's probability;
    * RetinaNet: ``sigmoid`` of the classification head's logit at the frozen anchor and label;
    * FCOS: ``sqrt(sigmoid(logit) * sigmoid(centerness))`` there;
    * SSD, SSDlite: ``softmax`` over the classes at the frozen anchor, the label's probability.
    """

    traced_whole = True

    def __init__(self, detector: nn.Module, kind: str) -> None:
        super().__init__()
        self.part = getattr(detector, "roi_heads" if kind == "two-stage" else "head")
        self.kind = kind
        self.proposals = torch.zeros(0, 4)
        self.anchors = torch.zeros(0, dtype=torch.long)
        self.labels = torch.zeros(0, dtype=torch.long)
        self.image_size = (0, 0)
        self.boxes: Tensor | None = None  # two-stage with the IoU term: each detection's box (resized input)
        self.keep_features = False  # set while the detector's own pass reads the head's features
        self.features: dict[str, Tensor] | None = None

    def forward(self, features: dict[str, Tensor]) -> Tensor:
        batch = next(iter(features.values())).shape[0]
        if self.keep_features:
            self.features = features
            return next(iter(features.values())).new_zeros(batch, 0)
        part: Any = self.part  # torchvision's RoIHeads, or a single-stage head
        n = self.labels.shape[0]
        if self.kind == "two-stage":
            pooled = part.box_roi_pool(features, [self.proposals] * batch, [self.image_size] * batch)
            class_logits, regression = part.box_predictor(part.box_head(pooled))
            probabilities = F.softmax(class_logits, dim=-1)
            scores = probabilities.gather(1, self.labels.repeat(batch)[:, None])[:, 0].view(batch, n)
            if self.boxes is None:
                return scores
            decoded = part.box_coder.decode(regression, [self.proposals] * batch)  # (B n, classes, 4)
            index = self.labels.repeat(batch).view(-1, 1, 1).expand(-1, 1, 4)
            boxes = clip_boxes_to_image(decoded.gather(1, index)[:, 0], self.image_size).view(batch, n, 4)
            return scores + _paired_iou(boxes, self.boxes)
        levels = list(features.values())
        logits = part.classification_head(levels)  # (B, anchors, classes)
        if self.kind == "ssd":
            probabilities = F.softmax(logits[:, self.anchors], dim=-1)  # (B, n, classes)
            return probabilities.gather(2, self.labels.view(1, n, 1).expand(batch, n, 1))[..., 0]
        picked = torch.sigmoid(logits[:, self.anchors, self.labels])
        if self.kind == "fcos":
            _, centerness = part.regression_head(levels)
            picked = torch.sqrt(picked * torch.sigmoid(centerness[:, self.anchors, 0]))
        return picked


def _paired_iou(boxes: Tensor, fixed: Tensor) -> Tensor:
    """IoU of each box (..., n, 4) with its fixed counterpart (n, 4), boxes as ``(x0, y0, x1, y1)``."""
    top_left = torch.maximum(boxes[..., :2], fixed[:, :2])
    bottom_right = torch.minimum(boxes[..., 2:], fixed[:, 2:])
    size = (bottom_right - top_left).clamp(min=0)
    inter = size[..., 0] * size[..., 1]
    area = (boxes[..., 2] - boxes[..., 0]) * (boxes[..., 3] - boxes[..., 1])
    fixed_area = (fixed[:, 2] - fixed[:, 0]) * (fixed[:, 3] - fixed[:, 1])
    return inter / (area + fixed_area - inter)


class _ReadLevels(nn.Module):
    """A two-stage detector's FPN computing only the levels RoIAlign reads at the frozen proposals (each
    proposal is pooled from one level, chosen by its size): the top-down path down to the lowest level read,
    and the output convolution of the levels read; the others are zeros, never read. The whole FPN while the
    detector's own pass reads the features, or before proposals are frozen."""

    traced_whole = True

    def __init__(self, fpn: FeaturePyramidNetwork, frozen: _FrozenScores) -> None:
        super().__init__()
        self.fpn = fpn
        self.frozen = [frozen]  # not a submodule: it belongs to the scoring module

    def forward(self, x: dict[str, Tensor]) -> dict[str, Tensor]:
        fpn, frozen = self.fpn, self.frozen[0]
        pool: Any = frozen.part.box_roi_pool
        if frozen.keep_features or pool.map_levels is None or frozen.proposals.shape[0] == 0:
            return dict(fpn(x))
        names, values = list(x), list(x.values())
        read = {str(pool.featmap_names[level]) for level in pool.map_levels([frozen.proposals]).tolist()}
        wanted = [i for i, name in enumerate(names) if str(name) in read]
        top = len(values) - 1
        last_inner = fpn.get_result_from_inner_blocks(values[top], top)
        out = {}
        for i in range(top, min(wanted) - 1, -1):
            if i < top:  # FeaturePyramidNetwork.forward's top-down step
                lateral = fpn.get_result_from_inner_blocks(values[i], i)
                last_inner = lateral + F.interpolate(last_inner, size=lateral.shape[-2:], mode="nearest")
            if i in wanted:
                out[names[i]] = fpn.get_result_from_layer_blocks(last_inner, i)
        channels = next(iter(out.values())).shape[1]
        for i, name in enumerate(names):  # RoIAlign finds its levels by position: every level is there
            if name not in out:
                zero = torch.zeros((), dtype=values[i].dtype, device=values[i].device)
                out[name] = zero.expand(values[i].shape[0], channels, *values[i].shape[-2:])
        return {name: out[name] for name in names}


class _DetectionScores(nn.Module):
    """``x`` (B, 3, H, W), the detector's resized, normalised input, to the scores (B, n) of the n chosen
    detections. ``read_levels``: a two-stage detector explained in its FPN's body computes only the FPN
    levels its frozen proposals read (:class:`_ReadLevels`)."""

    def __init__(self, detector: nn.Module, kind: str, read_levels: bool = False) -> None:
        super().__init__()
        self.detector = detector
        self.frozen = _FrozenScores(detector, kind)
        backbone: Any = detector.backbone
        fpn = getattr(backbone, "fpn", None)
        self.levels = (
            _ReadLevels(fpn, self.frozen)
            if read_levels and kind == "two-stage" and isinstance(fpn, FeaturePyramidNetwork)
            and hasattr(backbone, "body")
            else None
        )  # fmt: skip

    def forward(self, x: Tensor) -> Tensor:
        backbone: Any = self.detector.backbone
        features = backbone(x) if self.levels is None else self.levels(backbone.body(x))
        if isinstance(features, Tensor):  # RetinaNet and FCOS accept a backbone returning one map
            features = {"0": features}
        scores: Tensor = self.frozen(features)
        return scores


class _Features(nn.Module):
    """Stands in for the detector's backbone during its pass: the features already computed."""

    def __init__(self, features: dict[str, Tensor]) -> None:
        super().__init__()
        self.features = features

    def forward(self, _x: Tensor) -> dict[str, Tensor]:
        return self.features


_SINGLE_STAGE = {"RetinaNet": "retinanet", "FCOS": "fcos", "SSD": "ssd"}


def detector_kind(model: nn.Module) -> str:
    """``"two-stage"`` (Faster/Mask/Keypoint R-CNN), ``"retinanet"``, ``"fcos"`` or ``"ssd"`` (SSD, SSDlite)."""
    parts = ("transform", "backbone", "rpn", "roi_heads")
    if all(hasattr(model, name) for name in parts) and hasattr(model.roi_heads, "box_predictor"):
        return "two-stage"
    for cls in type(model).__mro__:
        kind = _SINGLE_STAGE.get(cls.__name__)
        if kind is not None and all(hasattr(model, n) for n in ("transform", "backbone", "head", "anchor_generator")):
            return kind
    raise ModelError(
        f"{type(model).__name__} is not a torchvision detector (Faster/Mask/Keypoint R-CNN, RetinaNet, FCOS, SSD)"
    )


def default_detection_layer(model: nn.Module) -> str:
    """The backbone body's last returned stage (``backbone.body.layer4`` for ResNet-50 FPN); SSD's VGG trunk
    (``backbone.features``), SSDlite's last MobileNet stage (``backbone.features.1``)."""
    backbone = getattr(model, "backbone", None)
    returned = getattr(getattr(backbone, "body", None), "return_layers", None)
    if isinstance(returned, dict) and returned:
        return "backbone.body." + str(list(returned)[-1])
    features = getattr(backbone, "features", None)
    if isinstance(features, nn.Sequential) and all(isinstance(m, nn.Sequential) for m in features):
        return f"backbone.features.{len(features) - 1}"
    if isinstance(features, nn.Module):
        return "backbone.features"
    raise ModelError(f"cannot find the backbone stages of {type(model).__name__}; pass layer=")


class DetectionExplainer:
    """Explain detections of a torchvision detector (in eval mode) at a backbone layer.

    Args:
        model: ``fasterrcnn_*``, ``maskrcnn_*``, ``keypointrcnn_*``, ``retinanet_*``, ``fcos_*``, ``ssd300_*`` or
            ``ssdlite320_*`` from torchvision, or a model with the same parts.
        layer: a layer of the detector's backbone (default: :func:`default_detection_layer`); one FPN level,
            ``"backbone.fpn[0]"``; or several layers, fused: a list, or ``"backbone.fpn"`` for every FPN level
            the explained scores read (two-stage: the box head's RoIAlign levels, without ``pool``, which only
            the frozen RPN reads; single-stage: every level).
        box_iou: two-stage detectors: add to the score the IoU of the detection's box, decoded from the box
            head at the frozen proposal, with its box in the actual pass (1 there), as pytorch-grad-cam's
            ``FasterRCNNBoxScoreTarget``: ``s_j = p_j + IoU(b_j(A), b_j)``.
    """

    def __init__(self, model: nn.Module, layer: str | Sequence[str] | None = None, box_iou: bool = False) -> None:
        self.kind = detector_kind(model)
        if box_iou and self.kind != "two-stage":
            raise ModelError(f"box_iou is for two-stage detectors; this one is {self.kind}")
        self.box_iou = box_iou
        self.model = model
        names = [layer] if isinstance(layer, str) else list(layer or [default_detection_layer(model)])
        if not names:
            raise LayerError("no layer given")
        in_body = all(name.startswith("backbone.body.") for name in names)
        self.scores = _DetectionScores(model, self.kind, read_levels=in_body)
        self.explainers = []
        for name in names:
            if not name.startswith("backbone."):
                raise LayerError(
                    f"layer {name!r} is not in the detector's backbone: the explained scores depend on the "
                    "backbone's maps (the proposals or anchors are frozen); pick a backbone layer "
                    "(see 'liftcam layers')"
                )
            for level in self._levels(name):
                try:
                    explainer = Explainer(self.scores, "detector." + level)
                except LayerError as exc:  # named as in the user's detector, not in liftcam's scoring module
                    raise LayerError(str(exc).replace("'detector.", "'")) from None
                explainer.split.layer = explainer.layer.removeprefix("detector.")
                self.explainers.append(explainer)
        if len({e.layer for e in self.explainers}) != len(self.explainers):
            raise LayerError(f"a layer is given twice: {', '.join(e.layer for e in self.explainers)}")

    @property
    def explainer(self) -> Explainer:
        """The first layer's explainer: its capture finds the detections."""
        return self.explainers[0]

    @property
    def layer(self) -> str:
        """The layer's name; several layers' joined by ``+``."""
        return "+".join(e.layer for e in self.explainers)

    @property
    def layers(self) -> list[str]:
        return [e.layer for e in self.explainers]

    def _levels(self, name: str) -> list[str]:
        """``name``, or an FPN's levels the explained scores read: ``backbone.fpn`` -> ``backbone.fpn[0]``, ..."""
        module = dict(self.model.named_modules()).get(name)
        if not isinstance(module, FeaturePyramidNetwork):
            return [name]
        seen: list[Any] = []
        handle = module.register_forward_hook(lambda _m, _i, output: seen.append(output))
        reference = next(self.model.parameters())
        try:
            with torch.inference_mode():
                backbone: Any = self.model.backbone
                backbone(torch.zeros(1, 3, 256, 256, dtype=reference.dtype, device=reference.device))
        finally:
            handle.remove()
        keys = [str(k) for k in seen[0]] if seen and isinstance(seen[0], Mapping) else []
        if self.kind == "two-stage":
            pool: Any = self.model.roi_heads  # torchvision's RoIHeads
            read = {str(k) for k in getattr(pool.box_roi_pool, "featmap_names", keys)}
            keys = [k for k in keys if k in read]
        if not keys:
            raise LayerError(f"layer {name!r} returns no levels the explained scores read")
        return [f"{name}[{k}]" for k in keys]

    def detect(self, image: Tensor) -> tuple[list[Detection], Tensor]:
        """Run the detector on ``image`` (3, H, W) in [0, 1]; its detections, each with its proposal, and the
        resized, normalised input (1, 3, h, w) the detector saw."""
        detections, captured, _ = self._detect(image)
        assert captured.inputs is not None
        return detections, captured.inputs

    def _backbone_features(self, captured: Captured) -> dict[str, Tensor]:
        """The backbone's features from the captured activations: the head's first part."""
        frozen = self.scores.frozen
        frozen.keep_features = True
        try:
            with torch.inference_mode():
                self.explainer.split.head(captured.activations, captured.context)
            assert frozen.features is not None
            return frozen.features
        finally:
            frozen.keep_features, frozen.features = False, None

    def _detect(self, image: Tensor) -> tuple[list[Detection], Captured, tuple[int, int]]:
        """:meth:`detect`, and the layer's activations captured on the way: the backbone runs once, split at
        the layer, and the detector's own forward continues from its features."""
        if not isinstance(image, Tensor) or image.dim() != 3 or image.shape[0] != 3:
            shape = tuple(image.shape) if isinstance(image, Tensor) else type(image).__name__
            raise LiftCamError(f"a detector's input is one RGB image (3, H, W), not {shape}")
        if not bool(torch.isfinite(image).all()):
            raise LiftCamError("the input contains NaN or infinite values")
        seen: dict[str, Any] = {}
        model: Any = self.model  # a torchvision detector
        two_stage = self.kind == "two-stage"

        def keep_first(_m: nn.Module, args: tuple[Any, ...], output: Any) -> None:  # proposals, or head outputs
            seen["first"] = output[0][0] if two_stage else output

        def keep_second(_m: nn.Module, _args: tuple[Any, ...], output: Any) -> None:  # box head, or anchors
            seen["second"] = output

        with torch.no_grad():
            images = model.transform([image])[0]
        x = images.tensors
        captured = self._capture(self.explainer, x)
        backbone = model.backbone
        watched = (model.rpn, model.roi_heads.box_predictor) if two_stage else (model.head, model.anchor_generator)
        hooks = [watched[0].register_forward_hook(keep_first), watched[1].register_forward_hook(keep_second)]
        try:
            model.backbone = _Features(self._backbone_features(captured))
            with torch.inference_mode():
                (found,) = model([image])
        finally:
            model.backbone = backbone
            for hook in hooks:
                hook.remove()
        if not isinstance(found, dict) or not {"boxes", "labels", "scores"} <= set(found):
            raise ModelError("the detector's output is not torchvision's boxes/labels/scores per image")
        probabilities, boxes, origins = self._candidates(seen)
        scale = torch.tensor([image.shape[-1] / x.shape[-1], image.shape[-2] / x.shape[-2]] * 2, device=x.device)
        detections = []
        for k, (box, label, score) in enumerate(zip(found["boxes"], found["labels"], found["scores"], strict=True)):
            c = int(label)
            candidates = (probabilities[:, c] == score).nonzero()[:, 0]
            if candidates.numel() == 0:  # never seen with torchvision's own post-processing
                raise ModelError(f"detection {k} matches no proposal or anchor of the actual pass")
            distance = ((boxes(candidates, c) * scale) - box).abs().sum(dim=1)
            p = int(candidates[distance.argmin()])
            detections.append(
                Detection(
                    k,
                    tuple(float(v) for v in box),  # type: ignore[arg-type]
                    c,
                    float(score),
                    tuple(float(v) for v in origins[p]),  # type: ignore[arg-type]
                    -1 if two_stage else p,
                )
            )
        height, width = images.image_sizes[0]
        return detections, captured, (int(height), int(width))

    @staticmethod
    def _capture(explainer: Explainer, x: Tensor) -> Captured:
        try:
            return explainer.capture(x)
        except LayerError as exc:  # named as in the user's detector, not in liftcam's scoring module
            raise LayerError(str(exc).replace("'detector.", "'")) from None

    def _candidates(self, seen: dict[str, Any]) -> tuple[Tensor, Any, Tensor]:
        """From the actual pass: every candidate's class scores (N, C) as the detector computes them, a function
        ``(candidates, label) -> boxes`` decoding their boxes in the resized input, and their proposals or
        anchor boxes (N, 4)."""
        model: Any = self.model
        if self.kind == "two-stage":
            proposals = seen["first"]
            class_logits, regression = seen["second"]
            decoded = model.roi_heads.box_coder.decode(regression, [proposals])
            return F.softmax(class_logits, dim=-1), lambda i, c: decoded[i, c], proposals
        outputs, anchors = seen["first"], seen["second"][0]
        logits, regression = outputs["cls_logits"][0], outputs["bbox_regression"][0]
        if self.kind == "ssd":
            scores = F.softmax(logits, dim=-1)
        elif self.kind == "fcos":
            scores = torch.sqrt(torch.sigmoid(logits) * torch.sigmoid(outputs["bbox_ctrness"][0]))
        else:
            scores = torch.sigmoid(logits)
        if self.kind == "fcos":
            decode = lambda i, c: model.box_coder.decode(regression[i], anchors[i])  # noqa: E731
        else:
            decode = lambda i, c: model.box_coder.decode_single(regression[i], anchors[i])  # noqa: E731
        return scores, decode, anchors

    def __call__(
        self,
        image: Tensor,
        method: str | CamMethod | Sequence[str | CamMethod] = "lift-cam",
        detections: int | Sequence[int] | Sequence[LabelledBox] | None = None,
        reference: Reference = None,
        iou_threshold: float = 0.5,
    ) -> DetectionExplanation:
        """Explain ``detections`` of ``image`` (3, H, W) in [0, 1] with one or several methods.

        ``detections``: None (every detection, in the detector's order, at most 10), the indices of the
        detector's output, or ``(label, box)`` pairs each matched to the detection of that label with the
        highest IoU (at least ``iou_threshold``).
        """
        found, one, image_size = self._detect(image)
        assert one.inputs is not None
        x = one.inputs
        chosen = _choose(found, detections, iou_threshold)
        frozen = self.scores.frozen
        frozen.proposals = torch.tensor([d.proposal for d in chosen], dtype=x.dtype, device=x.device)
        frozen.anchors = torch.tensor([d.anchor for d in chosen], dtype=torch.long, device=x.device)
        frozen.labels = torch.tensor([d.label for d in chosen], dtype=torch.long, device=x.device)
        height, width = image_size
        frozen.image_size = (height, width)
        if self.box_iou:  # each detection's box in the resized input (IoU does not change with the scale)
            scale = torch.tensor(
                [width / image.shape[-1], height / image.shape[-2]] * 2, dtype=x.dtype, device=x.device
            )
            frozen.boxes = torch.tensor([d.box for d in chosen], dtype=x.dtype, device=x.device) * scale
        n = len(chosen)
        specs = [method] if isinstance(method, (str, CamMethod)) else list(method)
        targets = torch.arange(n, device=x.device)
        per_layer: dict[str, dict[str, Explanation]] = {}
        for explainer in self.explainers:
            captured = one if explainer is self.explainer else self._capture(explainer, x)
            batch = Captured(
                captured.activations.expand(n, *captured.activations.shape[1:]).clone(),
                tuple(c.expand(n, *c.shape[1:]).clone() if isinstance(c, Tensor) else c for c in captured.context),
                captured.input_size,
                x.expand(n, *x.shape[1:]),
            )
            per_layer[explainer.layer] = explainer.explain_captured(batch, specs, targets, reference)
        explanations = per_layer[self.explainer.layer] if len(per_layer) == 1 else fuse(per_layer)
        return DetectionExplanation(chosen, explanations, (int(x.shape[-2]), int(x.shape[-1])), image_size)


def top_detections(found: Sequence[Detection], label: int | None = None, top: int = 1) -> list[int]:
    """The indices of the ``top`` highest-scoring detections (the detector sorts them by score), only those of
    ``label`` when it is given: what ``liftcam explain --target`` chooses on a detector."""
    return [d.index for d in found if label is None or d.label == label][:top]


def _choose(
    found: list[Detection], wanted: int | Sequence[int] | Sequence[LabelledBox] | None, iou_threshold: float
) -> list[Detection]:
    if not found:
        raise TargetError("the detector found nothing in this image (lower its box_score_thresh)")
    if wanted is None:
        return found[:10]
    if isinstance(wanted, int):
        wanted = [wanted]
    chosen = []
    for item in wanted:
        if isinstance(item, int):
            if not 0 <= item < len(found):
                raise TargetError(f"detection {item} is out of range: the detector found {len(found)}")
            chosen.append(found[item])
            continue
        label, box = item
        same = [d for d in found if d.label == label]
        if not same:
            raise TargetError(f"no detection of label {label}")
        ious = box_iou(
            torch.tensor([box], dtype=torch.float64), torch.tensor([d.box for d in same], dtype=torch.float64)
        )
        best = int(ious[0].argmax())
        if float(ious[0, best]) < iou_threshold:
            raise TargetError(
                f"no detection of label {label} overlaps box {box} with IoU >= {iou_threshold} "
                f"(best {float(ious[0, best]):.2f})"
            )
        chosen.append(same[best])
    if not chosen:
        raise TargetError("no detection chosen")
    return chosen
