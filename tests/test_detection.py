"""Detection: a two-stage detector's detections explained with its discrete choices frozen."""

from __future__ import annotations

from typing import Any

import pytest
import torch
import torchvision
import torchvision.transforms.functional as TF
from PIL import Image
from torch import Tensor, nn

from liftcam.data import sample_photos
from liftcam.detection import DetectionExplainer
from liftcam.errors import LayerError, ModelError, TargetError
from liftcam.explain import Explanation
from liftcam.fusion import FusedExplanation
from liftcam.maps import minmax

SIDE = 160


def _detector(name: str = "fasterrcnn_mobilenet_v3_large_fpn", canonical_scale: int | None = None) -> nn.Module:
    """Random weights (no pretrained detector offline), every box kept (score threshold 0), no resizing of
    a SIDE x SIDE input. ``canonical_scale``: RoIAlign's (224), smaller to spread small proposals over levels."""
    torch.manual_seed(0)
    model: Any = torchvision.models.get_model(
        name, weights=None, weights_backbone=None, num_classes=5, box_score_thresh=0.0, min_size=SIDE, max_size=SIDE
    )
    if canonical_scale is not None:
        model.roi_heads.box_roi_pool.canonical_scale = canonical_scale
    # batch-norm statistics from a few images, else the random backbone's maps vanish (std ~1e-8)
    for m in model.backbone.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.momentum = None
    model.backbone.train()
    with torch.no_grad():
        model.backbone(torch.rand(8, 3, SIDE, SIDE, generator=torch.Generator().manual_seed(1)))
    with torch.no_grad():  # logits of a few units, not thousands: probabilities that are not all 0 or 1
        model.roi_heads.box_predictor.cls_score.weight.mul_(1e-3)
    result: nn.Module = model.eval()
    return result


@pytest.fixture(scope="module")
def detector() -> nn.Module:
    return _detector()


@pytest.fixture(scope="module")
def image() -> Tensor:
    photo = Image.open(sample_photos()["astronaut"]).convert("RGB").resize((SIDE, SIDE))
    return TF.to_tensor(photo)


def test_lift_cam_conserves_for_each_detection_and_scores_are_the_detectors(detector: nn.Module, image: Tensor) -> None:
    explainer = DetectionExplainer(detector)
    assert explainer.layer == "backbone.body.16"
    with torch.no_grad():
        (out,) = detector([image])
    result = explainer(image, ["lift-cam", "grad-cam", "lrp-cam", "shapley-cam"], detections=[0, 1, 2, 3])
    assert [d.index for d in result.detections] == [0, 1, 2, 3]
    for d in result.detections:
        assert d.label == int(out["labels"][d.index]) and d.score == float(out["scores"][d.index])
    lift = result.explanations["lift-cam"]
    torch.testing.assert_close(lift.scores, out["scores"][:4])
    assert len(set(lift.scores.tolist())) == 4  # different detections, different scores
    assert lift.delta is not None and lift.weights is not None
    assert float((lift.delta.abs() / lift.scores.abs()).max()) < 1e-4
    assert lift.maps.shape == (4, SIDE, SIDE)
    for exp in result.explanations.values():
        assert bool(torch.isfinite(exp.raw).all())
    assert not torch.allclose(lift.raw[0], lift.raw[1])


def test_the_reference_pass_keeps_the_actual_proposals(detector: nn.Module, image: Tensor) -> None:
    """At A = 0 the detector itself would propose other boxes; the explained score keeps the actual ones."""
    explainer = DetectionExplainer(detector)
    result = explainer(image, "lift-cam", detections=[0, 1])
    lift = result.explanations["lift-cam"]
    assert lift.weights is not None

    layer = dict(detector.named_modules())[explainer.layer]
    proposals: dict[str, Tensor] = {}

    def keep(_m: nn.Module, _args: Any, out: Any) -> None:
        proposals["zero"] = out[0][0]

    handles = [
        layer.register_forward_hook(lambda _m, _a, out: torch.zeros_like(out)),
        detector.rpn.register_forward_hook(keep),
    ]
    try:
        with torch.no_grad():
            detector([image])
    finally:
        for handle in handles:
            handle.remove()
    actual = torch.tensor([d.proposal for d in result.detections])
    assert not all(bool((proposals["zero"] == box).all(dim=1).any()) for box in actual)

    # the frozen game: F(R) at the actual proposals, from the same scoring module
    captured = explainer.explainer.capture(explainer.detect(image)[1])
    captured.activations.zero_()
    frozen = explainer.scores.frozen
    frozen.proposals, frozen.labels = actual, torch.tensor([d.label for d in result.detections])
    reference = explainer.explainer.logits(captured)[0]
    torch.testing.assert_close(lift.weights.sum(1), lift.scores - reference, rtol=1e-4, atol=1e-6)


def test_grad_cam_equals_pytorch_grad_cam_on_a_detection(detector: nn.Module, image: Tensor) -> None:
    pytorch_grad_cam = pytest.importorskip("pytorch_grad_cam")
    explainer = DetectionExplainer(detector)
    ours = explainer(image, "grad-cam", detections=[2]).explanations["grad-cam"]

    layer = dict(detector.named_modules())[explainer.layer]
    with pytorch_grad_cam.GradCAM(model=detector, target_layers=[layer]) as cam:
        peer = torch.from_numpy(cam(input_tensor=image[None], targets=[lambda out: out["scores"][2]]))
    expected = minmax(peer)
    assert float((ours.maps - expected).abs().max()) < 2e-3
    assert ours.maps.std() > 0.05


def test_detections_chosen_by_label_and_box_and_bad_choices_refused(detector: nn.Module, image: Tensor) -> None:
    explainer = DetectionExplainer(detector)
    found, _ = explainer.detect(image)
    third = found[3]
    result = explainer(image, "grad-cam", detections=[(third.label, third.box)])
    assert result.detections == [third]
    with pytest.raises(TargetError, match="out of range"):
        explainer(image, "grad-cam", detections=[len(found)])
    with pytest.raises(TargetError, match="IoU"):
        explainer(image, "grad-cam", detections=[(third.label, (0.0, 0.0, 1.0, 1.0))])
    with pytest.raises(ModelError, match="not a torchvision detector"):
        DetectionExplainer(torchvision.models.resnet18())
    with pytest.raises(LayerError, match="not in the detector's backbone"):
        DetectionExplainer(detector, "rpn.head.conv.0")
    hooks_left = [m for m in detector.modules() if m._forward_hooks]
    assert hooks_left == []


SINGLE_STAGE = {
    "retinanet_resnet50_fpn": ("retinanet", "backbone.body.layer4"),
    "fcos_resnet50_fpn": ("fcos", "backbone.body.layer4"),
    "ssdlite320_mobilenet_v3_large": ("ssd", "backbone.features.1"),
}


@pytest.mark.parametrize("name", list(SINGLE_STAGE))
def test_single_stage_detections_are_explained_at_their_frozen_anchor(name: str, image: Tensor) -> None:
    torch.manual_seed(0)
    size = {"min_size": SIDE, "max_size": SIDE} if "ssd" not in name else {}  # SSDlite: its own 320 x 320
    model: Any = torchvision.models.get_model(name, weights=None, weights_backbone=None, score_thresh=0.0, **size)
    model.eval()
    explainer = DetectionExplainer(model)
    kind, layer = SINGLE_STAGE[name]
    assert (explainer.kind, explainer.layer) == (kind, layer)
    with torch.no_grad():
        (out,) = model([image])
    result = explainer(image, ["lift-cam", "grad-cam"], detections=[0, 1])
    lift = result.explanations["lift-cam"]
    torch.testing.assert_close(lift.scores, out["scores"][:2], rtol=0, atol=0)  # the detector's own scores
    assert all(d.anchor >= 0 for d in result.detections)
    assert lift.delta is not None
    assert float((lift.delta.abs() / lift.scores.abs()).max()) < 1e-4
    assert bool(torch.isfinite(result.explanations["grad-cam"].raw).all())
    if kind != "ssd":  # every FPN level (p6, p7 too: the head reads them all), each conserving
        if kind == "fcos":  # GroupNorm of a zero level divides by sqrt(eps): float32 keeps only 1e-2 of the sum
            model, image = model.double(), image.double()
        levels = DetectionExplainer(model, "backbone.fpn")
        assert levels.layers == [f"backbone.fpn[{k}]" for k in ["0", "1", "2", "p6", "p7"]]
        fused = levels(image, "lift-cam", detections=[0, 1]).explanations["lift-cam"]
        assert isinstance(fused, FusedExplanation) and fused.maps.shape == (2, SIDE, SIDE)
        read = torch.zeros(2, dtype=torch.bool)
        for exp in fused.layers.values():
            assert exp.delta is not None and float((exp.delta.abs() / exp.scores.abs()).max()) < 1e-4
            assert exp.weights is not None
            read |= exp.weights.abs().sum(dim=1) > 0
        assert bool(read.all())  # each detection's score reads its anchor's level


def test_maps_cover_the_padded_input_and_the_image_size_is_given(detector: nn.Module, image: Tensor) -> None:
    wide = torch.nn.functional.interpolate(image[None], size=(SIDE, SIDE * 3 // 2), mode="bilinear")[0]
    result = DetectionExplainer(detector)(wide, "grad-cam", detections=[0])
    height, width = result.image_size
    assert (height, width) == (SIDE * 2 // 3, SIDE)  # max_size SIDE: the long side scaled to SIDE
    assert result.input_size == (128, SIDE)  # padded to a multiple of 32
    assert result.explanations["grad-cam"].maps.shape[1:] == result.input_size


def test_box_iou_term_equals_pytorch_grad_cams_box_score_target(detector: nn.Module, image: Tensor) -> None:
    """``s_j = p_j + IoU(b_j(A), b_j)``, pytorch-grad-cam's ``FasterRCNNBoxScoreTarget``; LIFT-CAM conserves."""
    pytorch_grad_cam = pytest.importorskip("pytorch_grad_cam")
    from pytorch_grad_cam.utils.model_targets import FasterRCNNBoxScoreTarget

    explainer = DetectionExplainer(detector, box_iou=True)
    result = explainer(image, ["grad-cam", "lift-cam"], detections=[1])
    (chosen,) = result.detections
    lift = result.explanations["lift-cam"]
    torch.testing.assert_close(lift.scores, torch.tensor([chosen.score + 1.0]))  # IoU 1 at the actual pass
    assert lift.delta is not None and float(lift.delta.abs().max()) < 1e-4 * float(lift.scores.abs().max())

    layer = dict(detector.named_modules())[explainer.layer]
    target = FasterRCNNBoxScoreTarget([chosen.label], [torch.tensor(chosen.box)])
    with pytorch_grad_cam.GradCAM(model=detector, target_layers=[layer]) as cam:
        peer = torch.from_numpy(cam(input_tensor=image[None], targets=[target]))
    ours = result.explanations["grad-cam"].maps
    assert float((ours - minmax(peer)).abs().max()) < 2e-3
    # IoU is at its maximum (1) at the actual boxes, so its gradient vanishes: gradient maps do not change;
    # LIFT-CAM's differences see it (at the reference the box is another one)
    plain = DetectionExplainer(detector)(image, ["grad-cam", "lift-cam"], detections=[1]).explanations
    torch.testing.assert_close(plain["grad-cam"].maps, ours, atol=1e-5, rtol=0)
    assert plain["lift-cam"].weights is not None and lift.weights is not None
    assert float((plain["lift-cam"].weights - lift.weights).abs().sum()) > 1e-3
    with pytest.raises(ModelError, match="two-stage"):
        DetectionExplainer(
            torchvision.models.get_model("ssdlite320_mobilenet_v3_large", weights_backbone=None), box_iou=True
        )


def test_any_detector_plugs_in_through_an_output_function(detector: nn.Module, image: Tensor) -> None:
    """``Explainer(model, layer, output=...)``: a function from the detector's output to the chosen boxes'
    scores. Gradient methods need nothing more (the same map as through the frozen choices); LIFT-CAM
    refuses the detector's discrete steps by name rather than explain a different score."""
    import warnings

    import liftcam
    from liftcam.errors import UnsupportedOperationError

    layer = "backbone.body.16"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.fx cannot trace a detector: it is re-run
        plugged = liftcam.Explainer(detector, layer, output=lambda outs: torch.stack([o["scores"][:3] for o in outs]))
        ours = plugged(image[None], "grad-cam", targets=2)
        with pytest.raises(UnsupportedOperationError, match="no rule"):
            plugged(image[None], "lift-cam", targets=2)
    frozen = DetectionExplainer(detector, layer)(image, "grad-cam", detections=[2]).explanations["grad-cam"]
    torch.testing.assert_close(ours.scores, frozen.scores)
    assert float((ours.maps - frozen.maps).abs().max()) < 2e-3


@pytest.fixture(scope="module")
def resnet50_fpn() -> nn.Module:
    return _detector("fasterrcnn_resnet50_fpn", canonical_scale=64)  # small proposals spread over three levels


def test_fpn_levels_each_conserve_and_the_fused_grad_cam_equals_pytorch_grad_cams(resnet50_fpn: nn.Module) -> None:
    """``layer="backbone.fpn"``: the levels the box head reads (not ``pool``, which only the frozen RPN reads).
    RoIAlign reads one level per proposal, chosen by its size (frozen with the proposal): each detection's
    map is at its own level. pytorch-grad-cam fuses the FPN's output convolutions the same way."""
    pytorch_grad_cam = pytest.importorskip("pytorch_grad_cam")
    model: Any = resnet50_fpn
    photo = Image.open(sample_photos()["astronaut"]).convert("RGB").resize((SIDE, SIDE))
    image = TF.to_tensor(photo)

    explainer = DetectionExplainer(model, "backbone.fpn")
    assert explainer.layers == [f"backbone.fpn[{k}]" for k in range(4)]
    found, _ = explainer.detect(image)
    level_of = model.roi_heads.box_roi_pool.map_levels
    levels = [int(level_of([torch.tensor([d.proposal])])) for d in found]
    chosen = [levels.index(k) for k in sorted(set(levels))]
    assert len(chosen) >= 3
    result = explainer(image, ["lift-cam", "grad-cam"], detections=chosen)
    lift, grad = result.explanations["lift-cam"], result.explanations["grad-cam"]
    assert isinstance(lift, FusedExplanation) and isinstance(grad, FusedExplanation)
    for level, exp in enumerate(lift.layers.values()):
        assert exp.delta is not None and exp.weights is not None
        assert float((exp.delta.abs() / exp.scores.abs()).max()) < 1e-4
        for row, j in enumerate(chosen):  # only the detection's own level has coefficients
            assert (float(exp.weights[row].abs().sum()) > 1e-4) == (levels[j] == level)

    blocks = list(model.backbone.fpn.layer_blocks)  # the FPN's output convolutions: its levels
    for row, j in enumerate(chosen):
        with pytorch_grad_cam.GradCAM(model=model, target_layers=blocks) as cam:
            peer = torch.from_numpy(cam(input_tensor=image[None], targets=[lambda out, j=j: out["scores"][j]]))
        assert float((grad.maps[row] - minmax(peer)[0]).abs().max()) < 2e-3
        assert grad.maps[row].std() > 0.05
    with pytest.raises(LayerError, match="no element 'p9'"):
        DetectionExplainer(model, "backbone.fpn[p9]")(image, "grad-cam", detections=[0])


def test_at_a_body_layer_only_the_fpn_levels_read_are_computed_with_the_same_result(
    monkeypatch: pytest.MonkeyPatch, resnet50_fpn: nn.Module
) -> None:
    """The FPN's levels that no frozen proposal reads are skipped (zeros): the scores, LIFT-CAM's coefficients
    and Grad-CAM's maps are those of the whole FPN."""
    from liftcam.detection import _ReadLevels

    model: Any = resnet50_fpn
    image = TF.to_tensor(Image.open(sample_photos()["coffee"]).convert("RGB").resize((SIDE, SIDE)))
    explainer = DetectionExplainer(model, "backbone.body.layer3")
    assert explainer.scores.levels is not None
    assert DetectionExplainer(model, "backbone.fpn").scores.levels is None  # the FPN is explained itself
    found, _ = explainer.detect(image)
    level_of = model.roi_heads.box_roi_pool.map_levels
    levels = [int(level_of([torch.tensor([d.proposal])])) for d in found]
    chosen = [levels.index(k) for k in sorted(set(levels))][:2]
    computed: list[int] = []
    whole = _ReadLevels.forward

    def counting(self: Any, x: dict[str, Tensor]) -> dict[str, Tensor]:
        out = whole(self, x)
        computed.append(sum(v.stride(-1) != 0 for v in out.values()))
        return out

    monkeypatch.setattr(_ReadLevels, "forward", counting)
    lazy = explainer(image, ["lift-cam", "grad-cam"], detections=chosen[:1]).explanations
    assert computed and max(computed[1:]) == 1  # the detector's own pass: every level; then the one read
    monkeypatch.setattr(_ReadLevels, "forward", lambda self, x: dict(self.fpn(x)))
    full = explainer(image, ["lift-cam", "grad-cam"], detections=chosen[:1]).explanations
    for method in ("lift-cam", "grad-cam"):
        ours, reference = lazy[method], full[method]
        assert isinstance(ours, Explanation) and isinstance(reference, Explanation)
        torch.testing.assert_close(ours.scores, reference.scores, rtol=0, atol=0)
        torch.testing.assert_close(ours.raw, reference.raw, rtol=1e-4, atol=1e-6)
    assert lazy["lift-cam"].delta is not None and float(lazy["lift-cam"].delta.abs().max()) < 1e-4
