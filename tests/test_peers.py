"""Equality with peers where the definitions agree: captum's DeepLift, pytorch-grad-cam's CAMs."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
import torchvision
from torch import nn

import liftcam
from liftcam.maps import minmax

captum_attr = pytest.importorskip("captum.attr")
pytorch_grad_cam = pytest.importorskip("pytorch_grad_cam")
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget  # noqa: E402


@pytest.fixture(scope="module")
def vgg16() -> nn.Module:
    torch.manual_seed(0)
    return torchvision.models.vgg16().eval()


@pytest.mark.parametrize("baseline", ["zeros", "random"])
def test_lift_cam_equals_captum_deeplift_on_vgg16_head(vgg16: nn.Module, baseline: str) -> None:
    """The official LIFT-CAM code's construction: captum DeepLift on a hand-built VGG16 head module."""
    torch.manual_seed(1)
    x = torch.randn(3, 3, 224, 224)
    explainer = liftcam.Explainer(vgg16, "features.29")
    captured = explainer.capture(x)
    a = captured.activations
    reference = torch.zeros_like(a) if baseline == "zeros" else torch.rand_like(a) * a.mean()
    exp = explainer.explain_captured(captured, ["lift-cam"], reference=reference)["lift-cam"]

    head = nn.Sequential(vgg16.features[30], vgg16.avgpool, nn.Flatten(), vgg16.classifier).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        attributions = captum_attr.DeepLift(head).attribute(a.clone(), baselines=reference, target=exp.targets)
    expected = attributions.detach().sum(dim=(2, 3))
    scale = float(expected.abs().max())
    torch.testing.assert_close(exp.weights, expected, rtol=1e-4, atol=1e-5 * scale)


METHOD_CLASSES = {
    "grad-cam": "GradCAM",
    "grad-cam++": "GradCAMPlusPlus",
    "xgrad-cam": "XGradCAM",
    "hires-cam": "HiResCAM",
    "layer-cam": "LayerCAM",
}


def _peer_maps(model: nn.Module, layer: nn.Module, method: str, x: torch.Tensor, targets: torch.Tensor) -> np.ndarray:
    cls = getattr(pytorch_grad_cam, METHOD_CLASSES[method])
    with cls(model=model, target_layers=[layer]) as cam:
        return cam(input_tensor=x, targets=[ClassifierOutputTarget(int(t)) for t in targets])  # type: ignore[no-any-return]


class ScaledLogits(nn.Module):
    """``model(x) * factor``: pytorch-grad-cam's Grad-CAM++ adds 1e-6 to its denominator
    ``2 g^2 + sum(A) g^3``, which is of the order of g^2 for real gradients (|g| ~ 1e-3); with the
    logits scaled by 1e4 the guard is negligible and the two definitions agree."""

    def __init__(self, model: nn.Module, factor: float) -> None:
        super().__init__()
        self.model = model
        self.factor = factor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x) * self.factor  # type: ignore[no-any-return]


@pytest.mark.parametrize(
    ("model_name", "layer"),
    [("resnet18", "layer4"), ("efficientnet-lite0", "features.17"), ("efficientnet-lite0", "features.16")],
)
def test_gradient_maps_equal_pytorch_grad_cam(model_name: str, layer: str, lite0, photo_batch) -> None:  # type: ignore[no-untyped-def]
    if model_name == "resnet18":
        torch.manual_seed(0)
        base = torchvision.models.resnet18().eval()
        x = torch.randn(4, 3, 224, 224)
    else:
        base, x = lite0.model, photo_batch[:4]
    model = ScaledLogits(base, 1e4)
    layer = f"model.{layer}"
    ours = liftcam.explain(model, x, layer, list(METHOD_CLASSES))
    module = dict(model.named_modules())[layer]
    for method, exp in ours.items():
        peer = torch.from_numpy(_peer_maps(model, module, method, x, exp.targets))
        # pytorch-grad-cam scales before and after its resize (with a 1e-7 guard); scaling again removes
        # the difference, min-max commuting with bilinear interpolation.
        expected = minmax(peer)
        assert expected.shape == exp.maps.shape
        err = (exp.maps - expected).abs().max()
        assert err < 2e-3, f"{method}: max abs difference {err}"
        assert exp.maps.std() > 0.05  # not a trivial all-equal map
    # the unscaled model gives the same maps for every method without an epsilon in its definition
    unscaled = liftcam.explain(
        base, x, layer.removeprefix("model."), ["grad-cam", "xgrad-cam", "hires-cam", "layer-cam"]
    )
    for method, exp in unscaled.items():
        torch.testing.assert_close(exp.maps, ours[method].maps, atol=1e-4, rtol=0)
    assert all(p.requires_grad for p in model.parameters())
