"""torchcam 0.5's SS-CAM, IS-CAM and SmoothGrad-CAM++: each equal to torchcam's on the same model, layer
and input, its global generator seeded as ours (one image: torchcam draws a batch's noise at once)."""

from __future__ import annotations

import copy

import pytest
import torch
import torchvision
from torch import Tensor, nn

import liftcam
from liftcam.maps import minmax
from liftcam.methods import IsCam, SmoothGradCamPlusPlus, SsCam

torchcam_methods = pytest.importorskip("torchcam.methods")

SIDE = 64


@pytest.fixture(scope="module")
def resnet18() -> nn.Module:
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=10).eval()
    with torch.no_grad():  # fewer maps, so that one forward per map and sample stays quick
        model.layer4[1].conv2 = nn.Conv2d(512, 24, 3, padding=1, bias=False)
        model.layer4[1].bn2 = nn.BatchNorm2d(24).eval()
        model.layer4[1].downsample = nn.Conv2d(512, 24, 1, bias=False)
        model.fc = nn.Linear(24, 10)
    return model


@pytest.fixture(scope="module")
def x() -> Tensor:
    return torch.randn(1, 3, SIDE, SIDE, generator=torch.Generator().manual_seed(1))


def _torchcam(cls_name: str, model: nn.Module, x: Tensor, target: int, seed: int, **options: object) -> Tensor:
    cls = getattr(torchcam_methods, cls_name)
    with cls(model, "layer4", input_shape=(3, SIDE, SIDE), **options) as extractor:
        torch.manual_seed(seed)
        out = model(x)
        (cam,) = extractor(target, out)
    return cam.detach()


@pytest.mark.parametrize(
    ("ours", "theirs", "options"),
    [
        (SsCam(n_samples=3, std=2.0, seed=5), "SSCAM", {"num_samples": 3, "std": 2.0}),
        (IsCam(n_samples=4), "ISCAM", {"num_samples": 4}),
    ],
    ids=["ss-cam", "is-cam"],
)
def test_maps_equal_torchcams(resnet18: nn.Module, x: Tensor, ours: liftcam.methods.CamMethod, theirs: str,
                              options: dict[str, object]) -> None:  # fmt: skip
    exp = liftcam.explain(resnet18, x, "layer4", ours)
    target = int(exp.targets[0])
    cam = _torchcam(theirs, resnet18, x, target, seed=5, **options)  # (1, h, w), ReLU'd and scaled
    assert exp.weights is not None
    expected = minmax(torch.relu(cam))
    ours_raw = minmax(torch.relu(exp.raw))
    err = float((ours_raw - expected).abs().max())
    assert err < 1e-4, f"max abs difference {err}"
    assert float(ours_raw.std()) > 0.05


def test_smoothgrad_cam_plus_plus_coefficients_equal_torchcams(resnet18: nn.Module, x: Tensor) -> None:
    """With one noisy copy (torchcam rectifies the last copy's gradient, ours their mean: the same for one).
    torchcam then draws the map on the noisy copy's activations, ours on the input's: the coefficients are
    compared (torchcam's ``_get_weights``)."""
    exp = liftcam.explain(resnet18, x, "layer4", SmoothGradCamPlusPlus(n_samples=1, std=0.3, seed=5))
    target = int(exp.targets[0])
    with torchcam_methods.SmoothGradCAMpp(
        resnet18, "layer4", num_samples=1, std=0.3, input_shape=(3, SIDE, SIDE)
    ) as ex:
        torch.manual_seed(5)
        resnet18(x)
        (weights,) = ex._get_weights(target)
    assert exp.weights is not None
    torch.testing.assert_close(exp.weights, weights, rtol=1e-4, atol=1e-6)
    assert float(exp.weights.abs().max()) > 0


def test_sampled_methods_are_seeded_per_image(resnet18: nn.Module, x: Tensor) -> None:
    """An image's noise does not depend on its batch: alone or with another image, the same coefficients."""
    pair = torch.cat([x, x.flip(-1)])
    for method in (SsCam(n_samples=2, seed=1), SmoothGradCamPlusPlus(n_samples=2, seed=1)):
        first = liftcam.explain(resnet18, x, "layer4", method)
        classes = [int(first.targets[0]), (int(first.targets[0]) + 1) % 10]  # another class for the second
        second = liftcam.explain(resnet18, pair[1:], "layer4", method, targets=classes[1])
        batch = liftcam.explain(resnet18, pair, "layer4", method, targets=classes)
        assert first.weights is not None and second.weights is not None and batch.weights is not None
        alone = torch.cat([first.weights, second.weights])
        torch.testing.assert_close(batch.weights, alone, rtol=1e-5, atol=1e-7)
        assert not torch.allclose(batch.weights[0], batch.weights[1], rtol=1e-2)
    # through a nonlinear head (layer4's), the smoothing changes the coefficients; at layer4 the head is
    # linear, the gradient the same at every noisy copy, and SmoothGrad-CAM++ is Grad-CAM++
    plain = liftcam.explain(resnet18, x, "layer3", "grad-cam++")
    smooth = liftcam.explain(resnet18, x, "layer3", SmoothGradCamPlusPlus(n_samples=4, seed=1))
    assert plain.weights is not None and smooth.weights is not None
    assert not torch.allclose(plain.weights, smooth.weights, rtol=1e-2)


def test_ss_cam_noise_does_not_depend_on_the_chunk(resnet18: nn.Module, x: Tensor) -> None:
    """K = 24 maps: noisy masks made 16 at a time (CPU's chunk), 32 (a chunk of 17 - 32) or all at once (a
    chunk of 40, CUDA-like) draw the same noise, so the coefficients agree up to the forward's rounding."""
    default = liftcam.explain(resnet18, x, "layer4", SsCam(n_samples=2, seed=3)).weights
    assert default is not None
    for batch_size in (5, 17, 40):
        other = liftcam.explain(resnet18, x, "layer4", SsCam(n_samples=2, seed=3, batch_size=batch_size)).weights
        assert other is not None
        torch.testing.assert_close(other, default, rtol=1e-4, atol=1e-6)
    reseeded = liftcam.explain(resnet18, x, "layer4", SsCam(n_samples=2, seed=4)).weights
    assert reseeded is not None and not torch.allclose(reseeded, default, rtol=1e-3)


def test_is_cam_runs_a_constant_maps_input_once(resnet18: nn.Module, x: Tensor) -> None:
    """Eight more of layer4's 24 maps made constant (zero after the ReLU): their masks are all zero and IS-CAM
    runs that one zero input once, not N times each; the map is still torchcam's, which runs them all."""
    model = copy.deepcopy(resnet18)
    block = model.layer4[1]
    with torch.no_grad():
        block.bn2.bias[:8] = -1e4
        block.downsample.weight[:8] = 0
        maps = model.layer4(model.layer3(model.layer2(model.layer1(model.maxpool(model.relu(model.bn1(
            model.conv1(x)))))))).flatten(2)  # fmt: skip
    constant = int((maps.amax(dim=2) == maps.amin(dim=2)).sum())
    assert constant >= 8  # ours, and some dead already
    inputs_seen: list[int] = []
    handle = model.register_forward_pre_hook(lambda _, args: inputs_seen.append(args[0].shape[0]))
    try:
        exp = liftcam.explain(model, x, "layer4", IsCam(n_samples=4))
    finally:
        handle.remove()
    # the model's inputs: the zero input once, then 4 steps over the live masks (each map's: 4 * 24)
    assert sum(inputs_seen) == 1 + 4 * (24 - constant)
    cam = _torchcam("ISCAM", model, x, int(exp.targets[0]), seed=0, num_samples=4)
    err = float((minmax(torch.relu(exp.raw)) - minmax(torch.relu(cam))).abs().max())
    assert err < 1e-4, f"max abs difference {err}"
