"""Segmentation: a class's logits summed over a region, explained through torchvision's decoders."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torchvision
from torch import Tensor, nn

import liftcam
from liftcam.errors import TargetError
from liftcam.maps import minmax
from liftcam.methods import CamMethod, IsCam, SmoothGradCamPlusPlus, SsCam
from liftcam.models import guess_layer
from liftcam.targets import RegionTarget

SEGMENTERS = {
    "lraspp_mobilenet_v3_large": "backbone.16",
    "deeplabv3_mobilenet_v3_large": "backbone.16",
    "fcn_resnet50": "backbone.layer4",
}
# every method except CAM (needs GAP + Linear) and the sampled ones (slow at this K; same game as Ablation)
# cam needs GAP + Linear; finer-cam compares the classes of a (B, C) output (refused on a region: tested);
# SS-CAM and IS-CAM (N forwards per map) with one sample each
SAMPLED = ("ss-cam", "is-cam")
DENSE_METHODS: list[str | CamMethod] = [
    *(m for m in liftcam.METHODS if m not in ("cam", "shap", "lime-cam", "finer-cam", *SAMPLED)),
    SsCam(n_samples=1),
    IsCam(n_samples=1),
]
# on ResNet-50's 2048 maps, the methods with one forward per map are left to the smaller models
ONE_PASS_METHODS = [m for m in DENSE_METHODS if isinstance(m, str) and m not in ("score-cam", "ablation-cam")]


def _segmenter(name: str, classes: int = 5) -> nn.Module:
    torch.manual_seed(0)
    model: nn.Module = getattr(torchvision.models.segmentation, name)(
        weights=None, weights_backbone=None, num_classes=classes
    )
    return model.eval()


@pytest.fixture(scope="module")
def images() -> Tensor:
    torch.manual_seed(1)
    return torch.randn(2, 3, 64, 80)


@pytest.mark.parametrize("name", list(SEGMENTERS))
def test_every_method_explains_a_predicted_region_and_lift_cam_conserves(name: str, images: Tensor) -> None:
    model = _segmenter(name)
    assert guess_layer(model) == SEGMENTERS[name]
    explainer = liftcam.Explainer(model)  # the dict output's "out" read without a wrapper
    out = model(images)["out"]
    category = int(out.argmax(1).flatten().mode().values)
    methods = ONE_PASS_METHODS if name == "fcn_resnet50" else DENSE_METHODS
    result = explainer(images, methods, targets=RegionTarget(category))
    mask = out.argmax(1) == category
    expected = (out[:, category] * mask).sum(dim=(1, 2))
    for method, exp in result.items():
        assert exp.targets.tolist() == [category, category], method
        torch.testing.assert_close(exp.scores, expected.detach(), rtol=1e-5, atol=1e-3)
        assert exp.maps.shape == (2, 64, 80), method
        assert bool(torch.isfinite(exp.raw).all()), method
    lift = result["lift-cam"]
    assert lift.delta is not None and lift.weights is not None
    assert float((lift.delta.abs() / lift.scores.abs()).max()) < 1e-4
    with pytest.raises(TargetError, match="finer-cam compares classes"):
        explainer(images, "finer-cam", targets=RegionTarget(category))
    # the region is the actual pass's: the reference score is the same pixels' sum at A = 0
    captured = explainer.capture(images)
    zero = captured.activations.zero_()
    reference = explainer.logits(captured)
    assert zero.abs().sum() == 0
    reference_score = (reference[:, category] * mask).sum(dim=(1, 2))
    torch.testing.assert_close(lift.weights.sum(1), expected.detach() - reference_score, rtol=1e-4, atol=1e-2)


def test_noisy_copies_of_a_batch_explain_each_images_own_region(images: Tensor) -> None:
    """SmoothGrad-CAM++ scores the batch's noisy copies together: each copy with its own image's region."""
    model = _segmenter("lraspp_mobilenet_v3_large")
    explainer = liftcam.Explainer(model)
    method = SmoothGradCamPlusPlus(n_samples=2, seed=3)
    boxes = torch.zeros(2, 64, 80, dtype=torch.bool)
    boxes[0, :32, :40], boxes[1, 32:, 40:] = True, True  # a different region per image
    batch = explainer(images, method, targets=RegionTarget(2, boxes))
    alone = []
    for b in range(2):
        weights = explainer(images[b : b + 1], method, targets=RegionTarget(2, boxes[b])).weights
        assert weights is not None
        alone.append(weights)
    assert batch.weights is not None
    torch.testing.assert_close(batch.weights, torch.cat(alone), rtol=1e-4, atol=1e-6)
    assert not torch.allclose(batch.weights[0], batch.weights[1], rtol=1e-2)
    assert float(batch.weights.abs().max()) > 0


def test_grad_cam_on_a_region_equals_pytorch_grad_cam(images: Tensor) -> None:
    pytorch_grad_cam = pytest.importorskip("pytorch_grad_cam")
    from pytorch_grad_cam.utils.model_targets import SemanticSegmentationTarget

    class OutOnly(nn.Module):  # pytorch-grad-cam's recipe: a wrapper returning ["out"]
        def __init__(self, model: nn.Module) -> None:
            super().__init__()
            self.model = model

        def forward(self, x: Tensor) -> Tensor:
            out: Tensor = self.model(x)["out"]
            return out

    model = _segmenter("deeplabv3_mobilenet_v3_large")
    box = torch.zeros(64, 80, dtype=torch.bool)
    box[10:40, 20:70] = True
    category = 3
    ours = liftcam.explain(model, images, "backbone.16", "grad-cam", RegionTarget(category, box))
    ours_from_box = liftcam.explain(model, images, "backbone.16", "grad-cam", RegionTarget(category, (20, 10, 70, 40)))
    torch.testing.assert_close(ours.maps, ours_from_box.maps)

    wrapped = OutOnly(model)
    target = SemanticSegmentationTarget(category, box.numpy().astype(np.float32))
    with pytorch_grad_cam.GradCAM(model=wrapped, target_layers=[model.backbone["16"]]) as cam:
        peer = torch.from_numpy(cam(input_tensor=images, targets=[target, target]))
    expected = minmax(peer)
    assert float((ours.maps - expected).abs().max()) < 2e-3
    assert ours.maps.std() > 0.05


def test_region_targets_refuse_what_they_cannot_explain(images: Tensor) -> None:
    model = _segmenter("lraspp_mobilenet_v3_large")
    explainer = liftcam.Explainer(model)
    with pytest.raises(TargetError, match="has no pixel"):
        explainer(images, "grad-cam", RegionTarget(1, torch.zeros(64, 80, dtype=torch.bool)))
    with pytest.raises(TargetError, match="does not fit"):
        explainer(images, "grad-cam", RegionTarget(1, torch.ones(32, 32, dtype=torch.bool)))
    with pytest.raises(TargetError, match="out of range"):
        explainer(images, "grad-cam", RegionTarget(7, "all"))
    with pytest.raises(TargetError, match="no area"):
        explainer(images, "grad-cam", RegionTarget(1, (10, 10, 10, 30)))
    classifier = torchvision.models.resnet18().eval()
    with pytest.raises(TargetError, match="dense output"):
        liftcam.explain(classifier, torch.randn(1, 3, 64, 64), "layer4", "lift-cam", RegionTarget(1, "all"))


def test_each_image_keeps_its_own_region_in_perturbation_methods(images: Tensor) -> None:
    """Ablation-CAM evaluates many perturbations per image: each must be scored on that image's mask."""
    model = _segmenter("lraspp_mobilenet_v3_large")
    masks = torch.zeros(2, 64, 80, dtype=torch.bool)
    masks[0, :32] = True
    masks[1, 32:] = True
    both = liftcam.explain(model, images, None, "ablation-cam", RegionTarget(2, masks))
    for b in range(2):
        alone = liftcam.explain(model, images[b : b + 1], None, "ablation-cam", RegionTarget(2, masks[b]))
        torch.testing.assert_close(both.weights[b : b + 1], alone.weights, rtol=1e-4, atol=1e-4)  # type: ignore[index]
