"""Several layers at once: each layer's explanation kept, the maps fused as pytorch-grad-cam fuses them;
a layer's tuple or dict output explained at one element."""

from __future__ import annotations

from collections import OrderedDict

import pytest
import torch
import torchvision
from torch import Tensor, nn

import liftcam
from liftcam.errors import LayerError, LiftCamError
from liftcam.fusion import fuse_maps
from liftcam.maps import minmax, normalized_maps

GRADIENT_METHODS = {"grad-cam": "GradCAM", "xgrad-cam": "XGradCAM", "hires-cam": "HiResCAM", "layer-cam": "LayerCAM"}


@pytest.fixture(scope="module")
def resnet18() -> nn.Module:
    torch.manual_seed(0)
    return torchvision.models.resnet18().eval()


def test_fused_gradient_maps_equal_pytorch_grad_cams_multi_layer_maps(resnet18: nn.Module) -> None:
    pytorch_grad_cam = pytest.importorskip("pytorch_grad_cam")
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    torch.manual_seed(1)
    x = torch.randn(3, 3, 224, 224)
    explainer = liftcam.MultiLayerExplainer(resnet18, ["layer2", "layer3", "layer4"])
    assert explainer.layers == ["layer2", "layer3", "layer4"]
    ours = explainer(x, list(GRADIENT_METHODS))
    layers = [resnet18.layer2, resnet18.layer3, resnet18.layer4]
    for method, fused in ours.items():
        assert list(fused.layers) == ["layer2", "layer3", "layer4"]
        assert [e.raw.shape[-1] for e in fused.layers.values()] == [28, 14, 7]
        with getattr(pytorch_grad_cam, GRADIENT_METHODS[method])(model=resnet18, target_layers=layers) as cam:
            peer = cam(input_tensor=x, targets=[ClassifierOutputTarget(int(t)) for t in fused.targets])
        err = float((fused.maps - minmax(torch.from_numpy(peer))).abs().max())
        assert err < 2e-3, f"{method}: max abs difference {err}"
        # not one layer's map: each layer contributes
        for exp in fused.layers.values():
            assert float((fused.maps - exp.maps).abs().max()) > 0.05


def test_each_layer_keeps_its_own_explanation_and_lift_cam_conserves_at_each(resnet18: nn.Module) -> None:
    torch.manual_seed(2)
    x = torch.randn(2, 3, 160, 160)
    fused = liftcam.MultiLayerExplainer(resnet18, ["layer3", "layer4.0"])(x, "lift-cam", targets=[3, 7])
    for name, exp in fused.layers.items():
        alone = liftcam.explain(resnet18, x, name, "lift-cam", targets=[3, 7])
        torch.testing.assert_close(exp.weights, alone.weights, rtol=0, atol=0)
        assert exp.delta is not None and float((exp.delta.abs() / exp.scores.abs()).max()) < 1e-4
    assert fused.targets.tolist() == [3, 7]
    torch.testing.assert_close(fused.scores, resnet18(x)[[0, 1], [3, 7]])


def test_one_layer_fused_is_its_normalised_map() -> None:
    raw = torch.randn(2, 7, 5)
    torch.testing.assert_close(fuse_maps([raw], (56, 40)), normalized_maps(raw, (56, 40)), atol=1e-6, rtol=0)
    with pytest.raises(LiftCamError, match="no maps"):
        fuse_maps([], (4, 4))


def test_layer_lists_are_checked(resnet18: nn.Module) -> None:
    with pytest.raises(LiftCamError, match="list"):
        liftcam.MultiLayerExplainer(resnet18, "layer4")  # type: ignore[arg-type]
    with pytest.raises(LiftCamError, match="twice"):
        liftcam.MultiLayerExplainer(resnet18, ["layer4", "layer4"])
    with pytest.raises(LayerError, match="no layer named 'layer9'"):
        liftcam.MultiLayerExplainer(resnet18, ["layer4", "layer9"])


class Levels(nn.Module):
    """Maps at two resolutions, as a dict (an FPN's output)."""

    def __init__(self) -> None:
        super().__init__()
        self.fine = nn.Conv2d(4, 4, 3, padding=1)
        self.coarse = nn.Conv2d(4, 4, 3, stride=2, padding=1)

    def forward(self, h: Tensor) -> dict[str, Tensor]:
        return OrderedDict(fine=torch.relu(self.fine(h)), coarse=torch.tanh(self.coarse(h)))


class Pyramid(nn.Module):
    """A head that reads both levels."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 3, padding=1)
        self.pyramid = Levels()
        self.fc = nn.Linear(8, 3)

    def forward(self, x: Tensor) -> Tensor:
        levels = self.pyramid(torch.relu(self.stem(x)))
        pooled = torch.cat([levels["fine"].amax(dim=(2, 3)), levels["coarse"].mean(dim=(2, 3))], dim=1)
        return self.fc(pooled)


def _pyramid() -> Pyramid:
    torch.manual_seed(0)
    return Pyramid().eval()


@pytest.mark.parametrize(("layer", "size"), [("pyramid", 8), ("pyramid[fine]", 8), ("pyramid[coarse]", 4)])
def test_a_layer_that_outputs_a_dict_is_explained_at_one_key(layer: str, size: int) -> None:
    model = _pyramid()
    x = torch.randn(2, 3, 8, 8)
    explainer = liftcam.Explainer(model, layer)
    assert explainer.split.mode == "graph"
    assert explainer.layer == layer
    exp = explainer(x, ["lift-cam", "grad-cam", "ablation-cam"])
    assert exp["grad-cam"].raw.shape == (2, size, size)  # the first key by default
    lift = exp["lift-cam"]
    assert lift.delta is not None and lift.delta.abs().max() < 1e-5
    torch.testing.assert_close(lift.logits, model(x))
    if layer == "pyramid[coarse]":  # the other level is held at its actual value in the reference pass
        fine = model.pyramid(torch.relu(model.stem(x)))["fine"].amax(dim=(2, 3))
        reference = model.fc(torch.cat([fine, torch.zeros_like(fine)], dim=1))[[0, 1], lift.targets]
        assert lift.weights is not None
        torch.testing.assert_close(lift.weights.sum(1), lift.scores - reference, rtol=1e-5, atol=1e-6)
    assert liftcam.Explainer(model, "pyramid", element="coarse").layer == "pyramid[coarse]"


def test_fused_dict_levels_and_bad_keys() -> None:
    model = _pyramid()
    x = torch.randn(2, 3, 8, 8)
    fused = liftcam.MultiLayerExplainer(model, ["pyramid[fine]", "pyramid[coarse]"])(x, ["lift-cam", "grad-cam"])
    assert list(fused["lift-cam"].layers) == ["pyramid[fine]", "pyramid[coarse]"]
    assert fused["grad-cam"].maps.shape == (2, 8, 8)
    with pytest.raises(LayerError, match="keys fine, coarse; no element 'middle'"):
        liftcam.Explainer(model, "pyramid[middle]")(x)
    with pytest.raises(LayerError, match="element 2 is not a tensor"):
        liftcam.Explainer(model, "pyramid[2]")(x)
    with pytest.raises(LiftCamError, match="disagree"):
        liftcam.Explainer(model, "pyramid[fine]", element="coarse")
