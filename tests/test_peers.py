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


class SmoothHead(nn.Module):
    """A head with smooth nonlinearities, so that the Hessian term of Shapley-CAM is not zero."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU())
        self.mix = nn.Conv2d(8, 8, 1)
        self.fc = nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.nn.functional.silu(self.mix(self.body(x)))
        return self.fc(torch.tanh(h.mean(dim=(2, 3))))


def test_shapley_cam_equals_pytorch_grad_cam() -> None:
    torch.manual_seed(0)
    model = SmoothHead().eval()
    x = torch.randn(3, 3, 16, 16)
    ours = liftcam.explain(model, x, "body", ["shapley-cam", "grad-cam"])
    with pytorch_grad_cam.ShapleyCAM(model=model, target_layers=[model.body]) as cam:
        peer = cam(input_tensor=x, targets=[ClassifierOutputTarget(int(t)) for t in ours["shapley-cam"].targets])
    torch.testing.assert_close(ours["shapley-cam"].maps, minmax(torch.from_numpy(peer)), atol=2e-3, rtol=0)
    difference = (ours["shapley-cam"].weights - ours["grad-cam"].weights).abs().max()
    assert difference > 0.02 * ours["grad-cam"].weights.abs().max()  # the Hessian term matters


def test_ablation_cam_equals_pytorch_grad_cam() -> None:
    torch.manual_seed(0)
    model = torchvision.models.resnet18().eval()
    x = torch.randn(2, 3, 64, 64)
    ours = liftcam.explain(model, x, "layer4", "ablation-cam")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cam = pytorch_grad_cam.AblationCAM(model=model, target_layers=[model.layer4])
        targets = [ClassifierOutputTarget(int(t)) for t in ours.targets]
        peer = cam(input_tensor=x, targets=targets)
    torch.testing.assert_close(ours.maps, minmax(torch.from_numpy(peer)), atol=2e-3, rtol=0)


def test_score_cam_equals_pytorch_grad_cam(monkeypatch: pytest.MonkeyPatch) -> None:
    """pytorch-grad-cam's ScoreCAM takes a softmax over channels of the target scores and upsamples
    with align_corners=True; with the softmax probability as its target, the channel softmax removed
    and our align_corners=True, both compute alpha_k = softmax(f(x * M_k))_c."""
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputSoftmaxTarget

    torch.manual_seed(0)
    model = torchvision.models.resnet18().eval()
    x = torch.randn(2, 3, 64, 64)
    ours = liftcam.explain(model, x, "layer3", liftcam.methods.ScoreCam(align_corners=True))
    monkeypatch.setattr(torch.nn, "Softmax", lambda dim: lambda t: t)
    with pytorch_grad_cam.ScoreCAM(model=model, target_layers=[model.layer3]) as cam:
        peer = cam(input_tensor=x, targets=[ClassifierOutputSoftmaxTarget(int(t)) for t in ours.targets])
    torch.testing.assert_close(ours.maps, minmax(torch.from_numpy(peer)), atol=2e-3, rtol=0)
    default = liftcam.explain(model, x, "layer3", "score-cam")
    assert not torch.allclose(default.weights, ours.weights)  # align_corners matters


class VggHead(nn.Module):
    """VGG16 after features.29 as an explicit module (captum's LRP needs one module per layer)."""

    def __init__(self, vgg: nn.Module) -> None:
        super().__init__()
        self.pool = vgg.features[30]
        self.avgpool = vgg.avgpool
        c = vgg.classifier
        self.classifier = nn.Sequential(c[0], nn.ReLU(), nn.Dropout(), c[3], nn.ReLU(), nn.Dropout(), c[6])

    def forward(self, a: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.avgpool(self.pool(a)), 1))


def test_lrp_cam_equals_captum_lrp(vgg16: nn.Module) -> None:
    torch.manual_seed(2)
    x = torch.randn(2, 3, 224, 224)
    explainer = liftcam.Explainer(vgg16, "features.29")
    captured = explainer.capture(x)
    exp = explainer.explain_captured(captured, ["lrp-cam"])["lrp-cam"]
    head = VggHead(vgg16).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        relevance = captum_attr.LRP(head).attribute(captured.activations.clone(), target=exp.targets)
    expected = relevance.detach().sum(dim=(2, 3))
    scale = float(expected.abs().max())
    torch.testing.assert_close(exp.weights, expected, rtol=1e-4, atol=1e-5 * scale)


def test_lime_cam_equals_captum_lime(lite0, photo_batch) -> None:  # type: ignore[no-untyped-def]
    from captum._utils.models.linear_model import SkLearnLasso

    explainer = liftcam.Explainer(lite0.model, "features.17")
    captured = explainer.capture(photo_batch[:1])
    exp = explainer.explain_captured(captured, [liftcam.methods.LimeCam(n_samples=300, seed=7)])["lime-cam"]
    head = nn.Sequential(lite0.model.avgpool, nn.Flatten(), lite0.model.classifier).eval()
    a = captured.activations
    k = a.shape[1]
    lime = captum_attr.Lime(
        head,
        interpretable_model=SkLearnLasso(alpha=0.01),
        similarity_func=captum_attr._core.lime.get_exp_kernel_similarity_function("cosine", kernel_width=1.0),
    )
    torch.manual_seed(7)  # captum draws its masks from the global generator, one row at a time
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        coef = lime.attribute(
            a.clone(),
            target=exp.targets,
            baselines=0.0,
            feature_mask=torch.arange(k).view(1, k, 1, 1).expand_as(a),
            n_samples=300,
            perturbations_per_eval=64,
            return_input_shape=False,
        )
    torch.testing.assert_close(exp.weights, coef.float(), rtol=1e-3, atol=1e-3 * float(coef.abs().max()))
