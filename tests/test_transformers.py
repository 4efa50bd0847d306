"""Transformers and other layouts: token maps, channels-last stages, model outputs, timm models.

Tiny configurations are built here (random weights); one full-size torchvision ViT-B/16 is compared
with pytorch-grad-cam's ``reshape_transform`` recipe.
"""

from __future__ import annotations

import itertools
from typing import Any

import pytest
import torch
import torchvision
from torch import Tensor, nn

import liftcam
import liftcam.models
from helpers import shapley_by_enumeration
from liftcam.errors import HeadError, LayerError
from liftcam.maps import minmax
from liftcam.methods import Shap
from test_rules import TinyViT


def _randomise_zero_heads(model: nn.Module) -> nn.Module:
    for module in model.modules():
        if isinstance(module, nn.Linear) and not bool(module.weight.any()):
            nn.init.normal_(module.weight, std=0.05)
    return model


def test_vit_b_16_grad_cam_equals_pytorch_grad_cam_with_reshape_transform() -> None:
    pytorch_grad_cam = pytest.importorskip("pytorch_grad_cam")
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    torch.manual_seed(0)
    model = _randomise_zero_heads(torchvision.models.vit_b_16().eval())
    x = torch.randn(2, 3, 224, 224)
    layer = "encoder.layers.encoder_layer_10"
    ours = liftcam.Explainer(model)(x, "grad-cam")  # the default layer, tokens found automatically
    assert liftcam.Explainer(model).layer == layer

    def reshape_transform(tokens: Tensor) -> Tensor:
        return tokens[:, 1:].reshape(tokens.shape[0], 14, 14, tokens.shape[2]).permute(0, 3, 1, 2)

    module = dict(model.named_modules())[layer]
    targets = [ClassifierOutputTarget(int(t)) for t in ours.targets]
    with pytorch_grad_cam.GradCAM(model=model, target_layers=[module], reshape_transform=reshape_transform) as cam:
        peer = minmax(torch.from_numpy(cam(input_tensor=x, targets=targets)))
    assert (ours.maps - peer).abs().max() < 2e-3
    assert ours.maps.std() > 0.05


def test_tokens_are_maps_with_prefix_tokens_kept() -> None:
    torch.manual_seed(0)
    model = TinyViT().eval()
    x = torch.randn(2, 3, 16, 16)
    explainer = liftcam.Explainer(model, "blocks.0")
    captured = explainer.capture(x)
    assert captured.activations.shape == (2, 8, 4, 4)  # 1 class token + 4 x 4 patches of 8 channels
    assert explainer.split.view is not None and explainer.split.view.description == "tokens: 1 prefix + 4 x 4"
    # the head sees the tokens again: logits unchanged
    torch.testing.assert_close(explainer.logits(captured), model(x))
    for name in liftcam.METHODS:
        if name == "cam":
            continue
        exp = explainer(x, name)
        assert exp.maps.shape == (2, 16, 16) and torch.isfinite(exp.maps).all(), name
    lift = explainer(x, "lift-cam", reference="mean")
    assert lift.delta is not None and lift.delta.abs().max() < 1e-5


class AdditiveTokenHead(nn.Module):
    """Patch tokens, then the mean over tokens and a linear classifier: additive in the channel players."""

    def __init__(self) -> None:
        super().__init__()
        self.patch = nn.Conv2d(3, 6, 4, stride=4)
        self.mix = nn.Linear(6, 6)
        self.fc = nn.Linear(6, 3)

    def forward(self, x: Tensor) -> Tensor:
        tokens = self.mix(self.patch(x).flatten(2).transpose(1, 2))
        return self.fc(tokens.mean(dim=1))


def _presence_shapley(maps: Tensor, head: Any) -> Tensor:
    """Shapley values of the channels of one image's maps (K, ...) by enumeration: a coalition keeps its
    channels and zeroes the others; ``head`` maps (1, K, ...) to the explained score."""

    def value(coalition: tuple[int, ...]) -> float:
        kept = torch.zeros_like(maps)
        kept[list(coalition)] = maps[list(coalition)]
        with torch.no_grad():
            return float(head(kept[None]))

    return shapley_by_enumeration(value, maps.shape[0])


def test_exact_shapley_on_a_tiny_transformer_equals_brute_force() -> None:
    """K = 8 channels of the first block's tokens, the class token kept at its value in every coalition."""
    torch.manual_seed(0)
    model = TinyViT().eval()
    x = torch.randn(1, 3, 16, 16)
    exp = liftcam.Explainer(model, "blocks.0")(x, Shap(estimator="exact"))
    with torch.no_grad():
        patches = model.patch(x).flatten(2).transpose(1, 2)
        tokens = model.blocks[0](torch.cat([model.cls.expand(1, -1, -1), patches], dim=1))
    maps = tokens[0, 1:].T.reshape(8, 4, 4)  # the patch tokens' 8 channels over the 4 x 4 grid
    cls = int(exp.targets[0])

    def head(kept: Tensor) -> Tensor:  # the model after blocks.0, on the class token and the kept maps
        rebuilt = torch.cat([tokens[:, :1], kept.flatten(2).transpose(1, 2)], dim=1)
        return model.fc(model.norm(model.blocks[1](rebuilt))[:, 0])[0, cls]

    assert exp.weights is not None
    torch.testing.assert_close(exp.weights[0].double(), _presence_shapley(maps, head), rtol=1e-4, atol=1e-5)


def test_lift_cam_equals_exact_shapley_where_the_token_head_is_additive() -> None:
    torch.manual_seed(0)
    model = AdditiveTokenHead().eval()
    x = torch.randn(2, 3, 16, 16)
    explainer = liftcam.Explainer(model, "mix")
    ours = explainer(x, ["lift-cam", Shap(estimator="exact")])
    assert explainer.split.view is not None and "0 prefix + 4 x 4" in explainer.split.view.description
    torch.testing.assert_close(ours["lift-cam"].weights, ours["shap"].weights, rtol=1e-4, atol=1e-6)


class ChannelsLast(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 4, stride=4)
        self.stage = nn.Linear(8, 8)
        self.norm = nn.LayerNorm(8)
        self.fc = nn.Linear(8, 3)

    def forward(self, x: Tensor) -> Tensor:
        y = self.stage(self.stem(x).permute(0, 2, 3, 1))  # (B, h, w, C), as Swin's stages
        return self.fc(self.norm(y).mean(dim=(1, 2)))


def test_channels_last_stage_is_seen_as_maps() -> None:
    torch.manual_seed(0)
    model = ChannelsLast().eval()
    x = torch.randn(2, 3, 16, 24)
    explainer = liftcam.Explainer(model, "stage")
    exp = explainer(x, ["lift-cam", "grad-cam"])
    assert explainer.split.view is not None and explainer.split.view.description.startswith("channels-last")
    assert exp["grad-cam"].raw.shape == (2, 4, 6) and exp["grad-cam"].maps.shape == (2, 16, 24)
    lift = exp["lift-cam"]
    assert lift.delta is not None and lift.delta.abs().max() < 1e-5
    # Grad-CAM by hand on the (B, h, w, C) output
    a = model.stage(model.stem(x).permute(0, 2, 3, 1)).detach().requires_grad_(True)
    s = model.fc(model.norm(a).mean(dim=(1, 2))).gather(1, exp["grad-cam"].targets[:, None]).sum()
    (g,) = torch.autograd.grad(s, a)
    torch.testing.assert_close(exp["grad-cam"].weights, g.mean(dim=(1, 2)))


def test_a_reshape_callable_describes_any_layout() -> None:
    torch.manual_seed(0)
    model = TinyViT().eval()
    x = torch.randn(2, 3, 16, 16)

    def reshape(t: Tensor) -> Tensor:
        return t[:, 1:].reshape(t.shape[0], 4, 4, t.shape[2]).permute(0, 3, 1, 2)

    auto = liftcam.Explainer(model, "blocks.1")(x, "lift-cam")
    given = liftcam.Explainer(model, "blocks.1", reshape=reshape)(x, "lift-cam")
    torch.testing.assert_close(given.weights, auto.weights)
    with pytest.raises(LayerError, match="only select and rearrange"):
        liftcam.Explainer(model, "blocks.1", reshape=lambda t: reshape(t) * 2)(x, "grad-cam")


class DictOutput(nn.Module):
    def __init__(self, key: str) -> None:
        super().__init__()
        self.body = nn.Conv2d(3, 4, 3, padding=1)
        self.fc = nn.Linear(4, 3)
        self.key = key

    def forward(self, x: Tensor) -> Any:
        logits = self.fc(torch.relu(self.body(x)).mean(dim=(2, 3)))
        if self.key == "object":
            return type("ImageClassifierOutput", (), {"logits": logits})()
        if self.key == "tuple":
            return logits, torch.relu(logits)
        return {self.key: logits}


@pytest.mark.parametrize("kind", ["logits", "out", "object", "tuple"])
def test_common_outputs_are_read_without_a_wrapper(kind: str) -> None:
    torch.manual_seed(0)
    model = DictOutput(kind).eval()
    if kind == "object":  # torch.fx cannot trace the creation of an object: the re-run split, said once
        with pytest.warns(UserWarning, match="re-running the model"):
            exp = liftcam.explain(model, torch.randn(2, 3, 8, 8), "body", "lift-cam")
    else:
        exp = liftcam.explain(model, torch.randn(2, 3, 8, 8), "body", "lift-cam")
    assert exp.logits.shape == (2, 3) and exp.delta is not None and exp.delta.abs().max() < 1e-5


def test_other_outputs_need_an_output_function() -> None:
    torch.manual_seed(0)
    model = DictOutput("scores").eval()
    x = torch.randn(2, 3, 8, 8)
    with pytest.raises(HeadError, match=r"\(a dict with keys scores\); pass output="):
        liftcam.explain(model, x, "body", "grad-cam")
    explainer = liftcam.Explainer(model, "body", output=lambda o: o["scores"])
    exp = explainer(x, ["lift-cam", "score-cam"])
    assert explainer.layer == "body" and exp["lift-cam"].delta is not None
    assert exp["lift-cam"].delta.abs().max() < 1e-5


TIMM_MODELS = [
    ("vit_tiny_patch16_224", "tokens: 1 prefix + 14 x 14"),
    ("deit_tiny_distilled_patch16_224", "tokens: 2 prefix + 14 x 14"),
    ("swin_tiny_patch4_window7_224", "channels-last (B, h, w, C)"),
    ("convnext_atto", "maps"),
    ("levit_128s", "tokens: 0 prefix + 4 x 4"),
]


@pytest.mark.parametrize(("name", "layout"), TIMM_MODELS)
def test_timm_models_at_their_default_layer(name: str, layout: str) -> None:
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    model = _randomise_zero_heads(timm.create_model(name, pretrained=False).eval())
    explainer = liftcam.Explainer(model)
    x = torch.randn(1, 3, 224, 224)
    exps = explainer(x, ["lift-cam", "grad-cam", "grad-cam++", "layer-cam"])
    view = explainer.split.view
    assert (view.description if view is not None else "maps") == layout
    lift = exps["lift-cam"]
    assert lift.delta is not None
    assert float(lift.delta.abs().max()) <= 1e-4 * max(1.0, float(lift.scores.abs().max()))
    assert all(e.maps.shape == (1, 224, 224) for e in exps.values())


def test_every_reference_pass_is_finite_on_a_zero_reference_at_a_layer_norm() -> None:
    torch.manual_seed(0)
    model = TinyViT().eval()
    x = torch.randn(3, 3, 16, 16)
    for layer, reference in itertools.product(["blocks.0", "blocks.1"], ["zeros", "mean"]):
        exp = liftcam.explain(model, x, layer, "lift-cam", reference=reference)
        assert exp.weights is not None and torch.isfinite(exp.weights).all()
        assert exp.delta is not None and exp.delta.abs().max() <= 1e-5 * max(1.0, float(exp.scores.abs().max()))


@pytest.mark.parametrize("split_mode", ["graph", "rerun"])
def test_a_module_called_twice_is_cut_at_the_call_asked_for(split_mode: str) -> None:
    """ResNet's blocks call their ReLU twice: the post-activation maps inside the block are the first call,
    the block's output the second."""
    torch.manual_seed(0)
    model = torchvision.models.resnet18().eval()
    x = torch.randn(2, 3, 64, 64)
    block = model.layer4[1]
    with torch.no_grad():
        stem = model.maxpool(model.relu(model.bn1(model.conv1(x))))
        inside = torch.relu(block.bn1(block.conv1(model.layer4[0](model.layer3(model.layer2(model.layer1(stem)))))))
    first = liftcam.Explainer(model, "layer4.1.relu", split_mode=split_mode)  # type: ignore[arg-type]
    captured = first.capture(x)
    torch.testing.assert_close(captured.activations, inside)
    exp = first.explain_captured(captured, ["lift-cam"])["lift-cam"]
    assert exp.layer == "layer4.1.relu" and exp.delta is not None and exp.delta.abs().max() < 1e-5
    second = liftcam.Explainer(model, "layer4.1.relu#2", split_mode=split_mode)(x, "grad-cam")  # type: ignore[arg-type]
    assert second.layer == "layer4.1.relu#2"
    torch.testing.assert_close(second.maps, liftcam.explain(model, x, "layer4.1", "grad-cam").maps)


def test_the_default_call_equals_pytorch_grad_cam_hooks() -> None:
    """pytorch-grad-cam 1.5 pairs a reused module's first activations with the first gradients."""
    pytorch_grad_cam = pytest.importorskip("pytorch_grad_cam")
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    torch.manual_seed(0)
    model = torchvision.models.resnet18().eval()
    x = torch.randn(2, 3, 64, 64)
    ours = liftcam.explain(model, x, "layer3.1.relu", "grad-cam")
    targets = [ClassifierOutputTarget(int(t)) for t in ours.targets]
    with pytorch_grad_cam.GradCAM(model=model, target_layers=[model.layer3[1].relu]) as cam:
        peer = minmax(torch.from_numpy(cam(input_tensor=x, targets=targets)))
    assert (ours.maps - peer).abs().max() < 2e-3


class TwoBranches(nn.Module):
    """A stage that returns two resolutions (as HRNet's), fused by the head."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 3, padding=1)
        self.stage = Branches()
        self.fc = nn.Linear(8, 3)

    def forward(self, x: Tensor) -> Tensor:
        high, low = self.stage(self.stem(x))
        fused = torch.cat([high.mean(dim=(2, 3)), torch.relu(low).amax(dim=(2, 3))], dim=1)
        return self.fc(fused)


class Branches(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.high = nn.Conv2d(4, 4, 3, padding=1)
        self.low = nn.Conv2d(4, 4, 3, stride=2, padding=1)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return torch.relu(self.high(x)), self.low(x)


@pytest.mark.parametrize(("element", "size"), [(None, 8), (0, 8), (1, 4)])
def test_a_layer_that_outputs_a_tuple_is_explained_at_one_element(element: int | None, size: int) -> None:
    torch.manual_seed(0)
    model = TwoBranches().eval()
    x = torch.randn(2, 3, 8, 8)
    explainer = liftcam.Explainer(model, "stage", element=element)
    exp = explainer(x, ["lift-cam", "grad-cam", "ablation-cam"])
    assert exp["grad-cam"].raw.shape == (2, size, size)  # the first element by default
    lift = exp["lift-cam"]
    assert lift.delta is not None and lift.delta.abs().max() < 1e-5
    torch.testing.assert_close(lift.logits, model(x))


class Conv1dNet(nn.Module):
    """A 1-D CNN (audio, time series): maps (B, K, L)."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv1d(2, 6, 5, padding=2), nn.ReLU(), nn.Conv1d(6, 5, 3, stride=2, padding=1))
        self.head = nn.Sequential(nn.ReLU(), nn.Conv1d(5, 4, 1), nn.GELU(), nn.AdaptiveMaxPool1d(1), nn.Flatten())
        self.fc = nn.Linear(4, 3)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.head(self.body(x)))


def test_one_dimensional_maps() -> None:
    torch.manual_seed(0)
    model = Conv1dNet().eval()
    x = torch.randn(3, 2, 40)
    exps = liftcam.explain(model, x, "body", [*(m for m in liftcam.METHODS if m != "cam"), Shap(estimator="exact")])
    for name, exp in exps.items():
        raw = (3, 40) if name == "full-grad" else (3, 20)  # a whole-model map, at the input's resolution
        assert exp.raw.shape == raw and exp.maps.shape == (3, 40) and torch.isfinite(exp.maps).all(), name
    lift = exps["lift-cam"]
    assert lift.delta is not None and lift.delta.abs().max() < 1e-5
    # Grad-CAM by hand: the mean of the gradient over the positions
    a = model.body(x).detach().requires_grad_(True)
    s = model.fc(model.head(a)).gather(1, lift.targets[:, None]).sum()
    (g,) = torch.autograd.grad(s, a)
    torch.testing.assert_close(exps["grad-cam"].weights, g.mean(dim=2))


@pytest.mark.parametrize(("name", "layout"), [("r3d_18", "maps"), ("swin3d_t", "channels-last (B, t, h, w, C)")])
def test_video_models_give_maps_over_time_and_space(name: str, layout: str) -> None:
    torch.manual_seed(0)
    model = getattr(torchvision.models.video, name)().eval()
    x = torch.randn(2, 3, 8, 64, 64)
    explainer = liftcam.Explainer(model, liftcam.models.default_layer(name, model))
    exps = explainer(x, ["lift-cam", "grad-cam", "layer-cam", "ablation-cam"])
    view = explainer.split.view
    assert (view.description if view is not None else "maps") == layout
    for exp in exps.values():
        assert exp.raw.dim() == 4 and exp.maps.shape == (2, 8, 64, 64)
    lift = exps["lift-cam"]
    assert lift.delta is not None and lift.delta.abs().max() <= 1e-5 * max(1.0, float(lift.scores.abs().max()))


class TinyConvNeXt(nn.Module):
    """A stem, one ConvNeXt block (7x7 depthwise conv, channels-last LayerNorm, GELU MLP, residual) and the
    ConvNeXt head (global average pooling, LayerNorm, linear)."""

    def __init__(self, dim: int = 8, classes: int = 3) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, dim, 4, stride=4)
        self.dwconv = nn.Conv2d(dim, dim, 7, padding=3, groups=dim)
        self.norm = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))
        self.head_norm = nn.LayerNorm(dim)
        self.fc = nn.Linear(dim, classes)

    def forward(self, x: Tensor) -> Tensor:
        a = self.stem(x)
        y = self.mlp(self.norm(self.dwconv(a).permute(0, 2, 3, 1))).permute(0, 3, 1, 2)
        return self.fc(self.head_norm((a + y).mean(dim=(2, 3))))


def test_exact_shapley_on_a_tiny_convnext_equals_brute_force() -> None:
    torch.manual_seed(0)
    model = TinyConvNeXt().eval()
    x = torch.randn(1, 3, 16, 16)
    explainer = liftcam.Explainer(model, "stem")
    exps = explainer(x, ["lift-cam", Shap(estimator="exact")])
    a = explainer.capture(x).activations[0]
    cls = int(exps["shap"].targets[0])

    def head(kept: Tensor) -> Tensor:  # the model after the stem, by its own modules
        return model.fc(model.head_norm(_block(model, kept).mean(dim=(2, 3))))[0, cls]

    assert exps["shap"].weights is not None
    torch.testing.assert_close(exps["shap"].weights[0].double(), _presence_shapley(a, head), rtol=1e-4, atol=1e-5)
    lift = exps["lift-cam"]
    assert lift.delta is not None and lift.delta.abs().max() < 1e-5


def _block(model: TinyConvNeXt, a: Tensor) -> Tensor:
    y = model.mlp(model.norm(model.dwconv(a).permute(0, 2, 3, 1))).permute(0, 3, 1, 2)
    return a + y


def test_no_layer_picks_one_for_any_model() -> None:
    torch.manual_seed(0)
    resnet = torchvision.models.resnet18().eval()
    assert liftcam.explain(resnet, torch.randn(1, 3, 64, 64)).layer == "layer4"
    assert liftcam.Explainer(TinyViT().eval()).layer == "blocks.0"  # the last-but-one block of two
