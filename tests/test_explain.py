"""The public API contract: shapes, targets, references, errors, and leaving the model as found."""

from __future__ import annotations

import warnings

import pytest
import torch
import torchvision
from torch import nn

import liftcam
from helpers import quick_methods
from liftcam.errors import LayerError, LiftCamError, TargetError
from liftcam.methods import method_class
from liftcam.targets import CUSTOM_TARGET


def test_contract_shapes_and_ranges(tiny) -> None:  # type: ignore[no-untyped-def]
    x = torch.randn(5, 3, 10, 10)
    many = liftcam.explain(tiny, x, "act", list(liftcam.METHODS))
    assert set(many) == set(liftcam.METHODS)
    for name, exp in many.items():
        assert exp.method == name and exp.layer == "act"
        whole_model = name == "full-grad"  # a map at the input's resolution
        assert exp.maps.shape == (5, 10, 10) and exp.raw.shape == ((5, 10, 10) if whole_model else (5, 5, 5))
        assert exp.maps.min() >= 0 and exp.maps.max() <= 1 and torch.isfinite(exp.maps).all()
        assert exp.targets.dtype == torch.long and exp.targets.shape == (5,)
        assert exp.scores.shape == (5,) and exp.logits.shape == (5, 3)
        assert not exp.maps.requires_grad and not exp.raw.requires_grad
        if not method_class(name).has_coefficients:
            assert exp.weights is None
            assert name in ("hires-cam", "layer-cam", "grad-cam-elementwise", "eigen-cam", "eigen-grad-cam",
                            "kpca-cam", "full-grad")  # fmt: skip
        else:
            assert exp.weights is not None and exp.weights.shape == (5, 4)
            # raw is sum_k alpha_k A^k
            a = liftcam.Explainer(tiny, "act").capture(x).activations
            torch.testing.assert_close(exp.raw, torch.einsum("bk,bkhw->bhw", exp.weights, a))
    assert many["lift-cam"].delta is not None and many["grad-cam"].delta is None
    single = liftcam.explain(tiny, x, "act", "grad-cam")
    torch.testing.assert_close(single.maps, many["grad-cam"].maps)


def test_all_zero_map_stays_zero() -> None:
    model = nn.Sequential(nn.Conv2d(3, 2, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2, 2)).eval()
    with torch.no_grad():
        model[0].weight.zero_()
        model[0].bias.fill_(-1.0)  # every activation is 0 after the ReLU
    exp = liftcam.explain(model, torch.randn(2, 3, 8, 8), "1", ["lift-cam", "grad-cam", "grad-cam++", "xgrad-cam"])
    for e in exp.values():
        assert torch.equal(e.maps, torch.zeros_like(e.maps))


def test_targets_forms(tiny) -> None:  # type: ignore[no-untyped-def]
    x = torch.randn(3, 3, 10, 10)
    with torch.no_grad():
        logits = tiny(x)
    default = liftcam.explain(tiny, x, "body", "grad-cam")
    assert torch.equal(default.targets, logits.argmax(1))
    torch.testing.assert_close(default.scores, logits.max(1).values)
    assert torch.equal(liftcam.explain(tiny, x, "body", "grad-cam", targets=2).targets, torch.tensor([2, 2, 2]))
    listed = liftcam.explain(tiny, x, "body", "lift-cam", targets=[0, 1, 2])
    assert torch.equal(listed.targets, torch.tensor([0, 1, 2]))
    torch.testing.assert_close(listed.scores, logits[torch.arange(3), torch.tensor([0, 1, 2])])
    tensor = liftcam.explain(tiny, x, "body", "lift-cam", targets=torch.tensor([0, 1, 2]))
    torch.testing.assert_close(tensor.weights, listed.weights)
    # a score function: the difference of two logits; LIFT-CAM still sums to its delta
    custom = liftcam.explain(tiny, x, "body", ["lift-cam", "grad-cam"], targets=lambda lg: lg[:, 0] - lg[:, 1])
    assert torch.equal(custom["lift-cam"].targets, torch.full((3,), CUSTOM_TARGET))
    torch.testing.assert_close(custom["lift-cam"].scores, logits[:, 0] - logits[:, 1])
    assert custom["lift-cam"].delta.abs().max() < 1e-5  # type: ignore[union-attr]
    by_class = [liftcam.explain(tiny, x, "body", "grad-cam", targets=c).weights for c in (0, 1)]
    torch.testing.assert_close(custom["grad-cam"].weights, by_class[0] - by_class[1])  # type: ignore[operator]


@pytest.mark.parametrize("bad", [3, -1, [0, 1], [0, 1, 7], 1.5, "cat"])
def test_bad_targets(tiny, bad) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(TargetError):
        liftcam.explain(tiny, torch.randn(3, 3, 10, 10), "body", "lift-cam", targets=bad)


def test_out_of_range_message(tiny) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(TargetError, match="class 3 is out of range for a model with 3 classes"):
        liftcam.explain(tiny, torch.randn(1, 3, 10, 10), "body", "cam", targets=3)


def test_references(tiny) -> None:  # type: ignore[no-untyped-def]
    x = torch.randn(4, 3, 10, 10)
    explainer = liftcam.Explainer(tiny, "body")
    a = explainer.capture(x).activations
    zeros = explainer(x, "lift-cam")
    explicit = explainer(x, "lift-cam", reference=torch.zeros(4))
    torch.testing.assert_close(zeros.weights, explicit.weights)
    mean = explainer(x, "lift-cam", reference="mean")
    ref = a.mean(0, keepdim=True)
    with torch.no_grad():
        ref_logits = tiny.fc(tiny.pool(tiny.act(ref)).flatten(1))
    expected_delta = mean.scores - ref_logits[0, mean.targets]
    torch.testing.assert_close(mean.weights.sum(1), expected_delta, rtol=1e-5, atol=1e-6)  # type: ignore[union-attr]
    with pytest.raises(LiftCamError, match="does not broadcast"):
        explainer(x, "lift-cam", reference=torch.zeros(3, 2))
    with pytest.raises(LiftCamError, match="NaN"):
        explainer(x, "lift-cam", reference=torch.full((4,), float("nan")))


def test_wrong_layer_lists_close_matches() -> None:
    model = torchvision.models.resnet18()
    with pytest.raises(LayerError, match=r"no layer named 'layer5'.*layer4"):
        liftcam.explain(model, torch.randn(1, 3, 64, 64), "layer5")
    with pytest.raises(LayerError, match=r"layer4\.1\.conv1"):
        liftcam.explain(model, torch.randn(1, 3, 64, 64), "layer4.1.conv")


def test_layer_as_module_and_layer_errors() -> None:
    model = torchvision.models.resnet18().eval()
    x = torch.randn(2, 3, 64, 64)
    by_module = liftcam.explain(model, x, model.layer4, "grad-cam")
    by_name = liftcam.explain(model, x, "layer4", "grad-cam")
    assert by_module.layer == "layer4"
    torch.testing.assert_close(by_module.maps, by_name.maps)
    with pytest.raises(LayerError, match="called 2 times in the forward pass; pick a call from 1 to 2"):
        liftcam.explain(model, x, "layer4.1.relu#3")  # ResNet blocks reuse their ReLU
    with pytest.raises(LayerError, match="not spatial maps"):
        liftcam.explain(model, x, "fc")
    with pytest.raises(LayerError, match="not a submodule"):
        liftcam.explain(model, x, nn.Conv2d(1, 1, 1))


def test_bad_inputs(tiny) -> None:  # type: ignore[no-untyped-def]
    x = torch.randn(2, 3, 10, 10)
    x[1, 0, 0, 0] = float("nan")
    with pytest.raises(LiftCamError, match="NaN"):
        liftcam.explain(tiny, x, "body")
    with pytest.raises(LiftCamError, match="float"):
        liftcam.explain(tiny, torch.zeros(1, 3, 10, 10, dtype=torch.uint8), "body")
    with pytest.raises(LiftCamError, match="unknown method 'gradcam'"):
        liftcam.explain(tiny, torch.randn(1, 3, 10, 10), "body", "gradcam")


def _hook_count(model: nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks) for m in model.modules())


class Untraceable(nn.Module):
    """Data-dependent control flow: torch.fx cannot trace it."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU())
        self.fc = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.sum() > -1e9:  # always true, but depends on the values
            x = x * 1.0
        a = self.body(x)
        a = torch.relu(a - 0.1)
        return self.fc(a.amax(dim=(2, 3)) * 0.5 + a.mean(dim=(2, 3)))


def test_untraceable_model_falls_back_to_rerun() -> None:
    torch.manual_seed(0)
    model = Untraceable().eval()
    x = torch.randn(3, 3, 8, 8)
    with pytest.warns(UserWarning, match="re-running the model"):
        explainer = liftcam.Explainer(model, "body")
    assert explainer.split.mode == "rerun"
    exp = explainer(x, "grad-cam")
    a = model.body(x).detach().requires_grad_(True)
    s = model.fc(torch.relu(a - 0.1).amax(dim=(2, 3)) * 0.5 + torch.relu(a - 0.1).mean(dim=(2, 3)))
    (g,) = torch.autograd.grad(s.gather(1, exp.targets[:, None]).sum(), a)
    torch.testing.assert_close(exp.weights, g.mean(dim=(2, 3)))
    lift = explainer(x, "lift-cam")  # amax over the spatial dimensions: global max pooling, exact
    assert lift.delta is not None and lift.delta.abs().max() < 1e-5
    assert _hook_count(model) == 0


@pytest.mark.filterwarnings("ignore:the model could not be split")  # split_mode="rerun" says so, as it should
def test_hooks_removed_and_model_left_as_found() -> None:
    torch.manual_seed(0)
    model = torchvision.models.resnet18().eval()
    model.layer1.requires_grad_(False)
    flags = {n: p.requires_grad for n, p in model.named_parameters()}
    before = {n: p.detach().clone() for n, p in model.state_dict().items()}
    x = torch.randn(2, 3, 64, 64)
    for mode in ("graph", "rerun"):
        liftcam.Explainer(model, "layer4", split_mode=mode)(x, quick_methods())  # type: ignore[arg-type]
        assert _hook_count(model) == 0
        with pytest.raises(TargetError):
            liftcam.Explainer(model, "layer4", split_mode=mode)(x, "lift-cam", targets=5000)  # type: ignore[arg-type]
        assert _hook_count(model) == 0
    assert {n: p.requires_grad for n, p in model.named_parameters()} == flags
    assert all(torch.equal(before[n], p) for n, p in model.state_dict().items())
    assert all(p.grad is None for p in model.parameters())
    assert not model.training


def test_user_hooks_are_kept_and_called() -> None:
    model = torchvision.models.resnet18().eval()
    calls = []
    handle = model.layer4.register_forward_hook(lambda m, i, o: calls.append(o.shape))
    try:
        liftcam.explain(model, torch.randn(1, 3, 64, 64), "layer4", ["lift-cam", "grad-cam"])
    finally:
        handle.remove()
    assert calls == [torch.Size([1, 512, 2, 2])]  # the body ran exactly once


def test_batch_results_equal_single_image_results() -> None:
    torch.manual_seed(0)
    model = torchvision.models.vgg11().eval()
    x = torch.randn(3, 3, 64, 64)
    batch = liftcam.explain(model, x, "features.18", ["lift-cam", "grad-cam++"])
    for i in range(3):
        one = liftcam.explain(model, x[i : i + 1], "features.18", ["lift-cam", "grad-cam++"])
        for name in batch:
            torch.testing.assert_close(one[name].raw[0], batch[name].raw[i], rtol=1e-4, atol=1e-5)


def test_rerun_split_equals_graph_split_on_resnet() -> None:
    torch.manual_seed(0)
    model = torchvision.models.resnet18().eval()
    x = torch.randn(2, 3, 64, 64)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        graph = liftcam.Explainer(model, "layer3.1.conv2")(x, ["lift-cam", "grad-cam"])
    rerun = liftcam.Explainer(model, "layer3.1.conv2", split_mode="rerun")(x, ["lift-cam", "grad-cam"])
    for name in graph:
        torch.testing.assert_close(graph[name].raw, rerun[name].raw, rtol=1e-4, atol=1e-6)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
@pytest.mark.usefixtures("full_precision_cuda")
def test_cuda_matches_cpu() -> None:
    torch.manual_seed(0)
    model = torchvision.models.resnet18().eval()
    x = torch.randn(2, 3, 64, 64)
    cpu = liftcam.explain(model, x, "layer4", quick_methods())
    gpu = liftcam.explain(model.cuda(), x.cuda(), "layer4", quick_methods())
    for name in cpu:
        assert gpu[name].maps.is_cuda
        torch.testing.assert_close(gpu[name].maps.cpu(), cpu[name].maps, atol=1e-3, rtol=0)
