"""pytorch-grad-cam 1.5's other methods, each equal to the peer's on the same model, layer and input (a
projection's sign, which an SVD leaves to LAPACK, aside)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
import torchvision
from torch import Tensor, nn

import liftcam
from liftcam.maps import minmax
from liftcam.methods import FinerCam, RandomCam

pytorch_grad_cam = pytest.importorskip("pytorch_grad_cam")


@pytest.fixture(scope="module")
def resnet18() -> nn.Module:
    torch.manual_seed(0)
    return torchvision.models.resnet18().eval()


@pytest.fixture(scope="module")
def x() -> Tensor:
    torch.manual_seed(1)
    return torch.randn(3, 3, 160, 160)


def _peer(
    cls_name: str, model: nn.Module, x: Tensor, classes: Tensor | None = None, **options: Any
) -> tuple[Tensor, list[np.ndarray]]:
    """The peer's maps on ``layer4`` (targets: ``classes``, else its arg-max) and the raw maps its
    ``get_cam_image`` returned; ``options`` for its call (``eigen_smooth``)."""
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    cls = getattr(pytorch_grad_cam, cls_name)
    raw: list[np.ndarray] = []
    original = cls.get_cam_image

    def recording(self: Any, *args: Any, **kwargs: Any) -> np.ndarray:
        out: np.ndarray = original(self, *args, **kwargs)
        raw.append(out)
        return out

    cls.get_cam_image = recording
    try:
        with cls(model=model, target_layers=[model.layer4]) as cam:
            targets = None if classes is None else [ClassifierOutputTarget(int(c)) for c in classes]
            maps = torch.from_numpy(cam(input_tensor=x, targets=targets, **options))
    finally:
        cls.get_cam_image = original
    return minmax(maps), raw


@pytest.mark.parametrize(
    ("method", "peer"), [("fem", "FEM"), ("grad-cam-elementwise", "GradCAMElementWise"), ("kpca-cam", "KPCA_CAM")]
)
def test_maps_equal_pytorch_grad_cams(resnet18: nn.Module, x: Tensor, method: str, peer: str) -> None:
    ours = liftcam.explain(resnet18, x, "layer4", method)
    expected, raw = _peer(peer, resnet18, x)
    torch.testing.assert_close(ours.raw, torch.from_numpy(raw[0]).to(ours.raw.dtype), rtol=1e-4, atol=1e-5)
    err = float((ours.maps - expected).abs().max())
    assert err < 2e-3, f"{method}: max abs difference {err}"
    assert ours.maps.std() > 0.05


@pytest.mark.parametrize(("method", "peer"), [("eigen-cam", "EigenCAM"), ("eigen-grad-cam", "EigenGradCAM")])
def test_projections_equal_pytorch_grad_cams_up_to_the_svds_sign(
    resnet18: nn.Module, x: Tensor, method: str, peer: str
) -> None:
    ours = liftcam.explain(resnet18, x, "layer4", method)
    expected, raw = _peer(peer, resnet18, x)
    theirs = torch.from_numpy(raw[0]).to(ours.raw.dtype)
    agreeing = 0
    for i in range(x.shape[0]):
        sign = 1.0 if float((ours.raw[i] * theirs[i]).sum()) > 0 else -1.0
        torch.testing.assert_close(ours.raw[i], sign * theirs[i], rtol=1e-3, atol=1e-4 * float(theirs[i].abs().max()))
        if sign > 0:  # the same orientation: the same map
            assert float((ours.maps[i] - expected[i]).abs().max()) < 2e-3
            agreeing += 1
    assert agreeing > 0
    # our orientation: the projection agrees with where the maps are large
    if method == "eigen-cam":
        with torch.no_grad():
            feats: list[Tensor] = []
            handle = resnet18.layer4.register_forward_hook(lambda _m, _i, o: feats.append(o))
            resnet18(x)
            handle.remove()
        total = feats[0].sum(dim=1)
        for i in range(x.shape[0]):
            centred = total[i] - total[i].mean()
            assert float((centred * (ours.raw[i] - ours.raw[i].mean())).sum()) > 0
        assert ours.extras["direction"].shape == (3, 512)


def test_finer_cam_equals_pytorch_grad_cams(resnet18: nn.Module, x: Tensor) -> None:
    from pytorch_grad_cam import FinerCAM

    ours = liftcam.explain(resnet18, x, "layer4", ["finer-cam", "grad-cam"])
    with FinerCAM(model=resnet18, target_layers=[resnet18.layer4]) as cam:
        expected = minmax(torch.from_numpy(cam(input_tensor=x, targets=None)))
    err = float((ours["finer-cam"].maps - expected).abs().max())
    assert err < 2e-3, f"max abs difference {err}"
    # not Grad-CAM of the class alone
    assert float((ours["finer-cam"].maps - ours["grad-cam"].maps).abs().max()) > 0.05
    # another base method reads the same gradient; a method of more than the gradient is refused
    plus = liftcam.explain(resnet18, x, "layer4", FinerCam(base="layer-cam"))
    assert plus.weights is None and plus.maps.shape == (3, 160, 160)
    with pytest.raises(liftcam.LiftCamError, match="base"):
        FinerCam(base="lift-cam")


def test_random_cam_is_seeded_and_independent_of_the_decision(resnet18: nn.Module, x: Tensor) -> None:
    first = liftcam.explain(resnet18, x, "layer4", RandomCam(seed=3), targets=0)
    again = liftcam.explain(resnet18, x, "layer4", RandomCam(seed=3), targets=5)
    other = liftcam.explain(resnet18, x, "layer4", RandomCam(seed=4), targets=0)
    assert first.weights is not None and again.weights is not None and other.weights is not None
    torch.testing.assert_close(first.weights, again.weights, rtol=0, atol=0)
    assert not torch.equal(first.weights, other.weights)
    assert float(first.weights.abs().max()) <= 1 and first.weights.shape == (3, 512)
    assert float(first.weights.mean().abs()) < 0.1  # centred: U(-1, 1)


SMOOTHED = {"grad-cam": "GradCAM", "layer-cam": "LayerCAM", "hires-cam": "HiResCAM", "lift-cam": None}


@pytest.mark.parametrize("method", list(SMOOTHED))
def test_eigen_smooth_is_pytorch_grad_cams_up_to_the_sign_and_agrees_with_the_sum(
    resnet18: nn.Module, x: Tensor, method: str
) -> None:
    from pytorch_grad_cam.utils.svd_on_activations import get_2d_projection

    explainer = liftcam.Explainer(resnet18, "layer4")
    plain = explainer(x, method)
    smooth = explainer(x, method, eigen_smooth=True)
    assert not torch.allclose(plain.raw, smooth.raw)
    for i in range(x.shape[0]):  # oriented to agree with the un-smoothed map
        centred = plain.raw[i] - plain.raw[i].mean()
        assert float((centred * (smooth.raw[i] - smooth.raw[i].mean())).sum()) > 0
    if SMOOTHED[method] is None:
        # with coefficients: the component of alpha_k A^k
        a = explainer.capture(x).activations
        assert plain.weights is not None
        terms = (plain.weights[:, :, None, None] * a).numpy()
        theirs = torch.from_numpy(get_2d_projection(terms))
    else:
        _, raw = _peer(SMOOTHED[method], resnet18, x, plain.targets, eigen_smooth=True)
        theirs = torch.from_numpy(raw[0])
    for i in range(x.shape[0]):
        sign = 1.0 if float((smooth.raw[i] * theirs[i]).sum()) > 0 else -1.0
        scale = float(theirs[i].abs().max())
        torch.testing.assert_close(smooth.raw[i], sign * theirs[i].to(smooth.raw.dtype), rtol=1e-3, atol=1e-4 * scale)
    with pytest.raises(liftcam.LiftCamError, match="no channel terms"):
        explainer(x, "eigen-cam", eigen_smooth=True)


@pytest.mark.parametrize(("method", "peer"), [("grad-cam", "GradCAM"), ("layer-cam", "LayerCAM")])
def test_aug_smooth_equals_pytorch_grad_cams(resnet18: nn.Module, x: Tensor, method: str, peer: str) -> None:
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    explainer = liftcam.Explainer(resnet18, "layer4")
    plain = explainer(x, method)
    smooth = explainer(x, method, aug_smooth=True)
    torch.testing.assert_close(smooth.raw, plain.raw)  # the input's own
    targets = [ClassifierOutputTarget(int(t)) for t in plain.targets]
    with getattr(pytorch_grad_cam, peer)(model=resnet18, target_layers=[resnet18.layer4]) as cam:
        expected = torch.from_numpy(cam(input_tensor=x, targets=targets, aug_smooth=True))
    err = float((smooth.maps - expected).abs().max())
    assert err < 2e-3, f"max abs difference {err}"
    assert float((smooth.maps - plain.maps).abs().max()) > 0.02
    with pytest.raises(liftcam.LiftCamError, match="class targets"):
        explainer(x, method, targets=lambda logits: logits[:, 0], aug_smooth=True)


def test_full_grad_equals_pytorch_grad_cams(x: Tensor) -> None:
    """On a model with convolution biases and batch norms (VGG11-BN: 8 of each)."""
    from pytorch_grad_cam import FullGrad
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    torch.manual_seed(0)
    model = torchvision.models.vgg11_bn(num_classes=10).eval()
    with torch.no_grad():  # batch-norm statistics that are not the identity
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 2.0)
    ours = liftcam.explain(model, x, "features.25", "full-grad", targets=[1, 2, 3])
    assert ours.raw.shape == (3, 160, 160)  # at the input's resolution, whatever the layer
    targets = [ClassifierOutputTarget(c) for c in (1, 2, 3)]
    with FullGrad(model=model, target_layers=[]) as cam:
        expected = torch.from_numpy(cam(input_tensor=x, targets=targets))
    err = float((ours.maps - expected).abs().max())
    assert err < 2e-3, f"max abs difference {err}"
    assert ours.maps.std() > 0.05
    assert [m for m in model.modules() if m._forward_hooks] == []
