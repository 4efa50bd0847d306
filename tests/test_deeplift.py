"""The DeepLIFT Rescale engine: exact multipliers, summation-to-delta, and clear refusals."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

import liftcam
from liftcam.deeplift import paired_pass
from liftcam.errors import HeadError, UnsupportedOperationError

ELEMENTWISE = {
    "relu": torch.relu,
    "relu6": F.relu6,
    "hardtanh": lambda t: F.hardtanh(t, -0.5, 1.5),
    "silu": F.silu,
    "gelu": F.gelu,
    "sigmoid": torch.sigmoid,
    "tanh": torch.tanh,
    "leaky_relu": lambda t: F.leaky_relu(t, 0.2),
    "elu": F.elu,
    "hardswish": F.hardswish,
    "softplus": F.softplus,
    "clamp": lambda t: t.clamp(min=-0.3, max=0.7),
}


def _sum_head(fn):  # type: ignore[no-untyped-def]
    return lambda a: fn(a).flatten(1).sum(dim=1, keepdim=True)


@pytest.mark.parametrize("name", sorted(ELEMENTWISE))
def test_elementwise_multiplier_is_the_secant(name: str) -> None:
    fn = ELEMENTWISE[name]
    torch.manual_seed(0)
    a = torch.randn(3, 4, 5, 5) * 2
    r = torch.randn(3, 4, 5, 5)
    paired = paired_pass(_sum_head(fn), a, r)
    m = paired.multipliers(paired.logits[:, 0])
    secant = (fn(a) - fn(r)) / (a - r)
    torch.testing.assert_close(m, secant, rtol=1e-4, atol=1e-5)


def test_multiplier_is_the_derivative_where_input_equals_reference() -> None:
    a = torch.linspace(-2, 2, 50).view(2, 1, 5, 5)
    paired = paired_pass(_sum_head(torch.tanh), a, a.clone())
    m = paired.multipliers(paired.logits[:, 0])
    torch.testing.assert_close(m, 1 - torch.tanh(a) ** 2)


def test_inplace_call_has_the_same_multiplier() -> None:
    a, r = torch.randn(2, 3, 4, 4), torch.randn(2, 3, 4, 4)

    def head(t: torch.Tensor) -> torch.Tensor:
        t.relu_()  # relies on mutation, ignores the result
        return t.flatten(1).sum(1, keepdim=True)

    paired = paired_pass(head, a, r)
    m = paired.multipliers(paired.logits[:, 0])
    torch.testing.assert_close(m, (a.relu() - r.relu()) / (a - r))


def test_maxpool_routes_difference_to_actual_argmax() -> None:
    x = torch.tensor([[1.0, 5.0], [2.0, 3.0]]).view(1, 1, 2, 2)
    r = torch.tensor([[4.0, 0.0], [0.0, 0.0]]).view(1, 1, 2, 2)
    paired = paired_pass(lambda t: F.max_pool2d(t, 2).flatten(1), x, r)
    m = paired.multipliers(paired.logits[:, 0])
    # y - y_r = 5 - 4 goes to the actual arg-max (0, 1), whose x - r is 5.
    torch.testing.assert_close(m, torch.tensor([[0.0, 0.2], [0.0, 0.0]]).view(1, 1, 2, 2))


def test_maxpool_routes_negative_difference_to_reference_argmax() -> None:
    x = torch.tensor([[1.0, 2.0], [0.0, 0.0]]).view(1, 1, 2, 2)
    r = torch.tensor([[6.0, 0.0], [0.0, 0.0]]).view(1, 1, 2, 2)
    paired = paired_pass(lambda t: F.max_pool2d(t, 2).flatten(1), x, r)
    m = paired.multipliers(paired.logits[:, 0])
    # y - y_r = 2 - 6 goes to the reference's arg-max (0, 0), whose x - r is -5.
    torch.testing.assert_close(m, torch.tensor([[0.8, 0.0], [0.0, 0.0]]).view(1, 1, 2, 2))


class EveryOpModel(nn.Module):
    """A head with every supported nonlinearity, as modules, functions and in-place tensor methods,
    a module reused three times, max-pooling, a squeeze-excitation product and torch.flatten."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Conv2d(3, 6, 3, padding=1)
        self.conv = nn.Conv2d(6, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.shared = nn.ReLU(inplace=True)
        self.acts = nn.ModuleList(
            [nn.ReLU6(inplace=True), nn.Hardtanh(-1.0, 2.0), nn.SiLU(), nn.GELU(), nn.Sigmoid(), nn.Tanh(),
             nn.LeakyReLU(0.1, inplace=True), nn.ELU(), nn.Hardswish(), nn.Softplus()]
        )  # fmt: skip
        self.pool = nn.MaxPool2d(2)
        self.se = nn.Conv2d(8, 8, 1)
        self.fc1 = nn.Linear(8 * 2 * 2, 16)
        self.fc2 = nn.Linear(16, 5)
        with torch.no_grad():
            self.bn.running_mean.uniform_(-0.2, 0.2)
            self.bn.running_var.uniform_(0.5, 2.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.body(x)
        h = self.shared(self.bn(self.conv(a)))
        h = self.pool(h) + 0.5 * F.max_pool2d(a.mean(1, keepdim=True), 2)
        for act in self.acts:
            h = h + 0.5 * act(h)
        gate = torch.sigmoid(self.se(F.adaptive_avg_pool2d(h, 1)))
        h = h * gate  # product of two functions of A
        h = F.relu(h - 0.1) + 0.0  # a fresh tensor: eager autograd must be able to differentiate
        h.sub_(0.05).tanh_()  # in place, result ignored
        h = F.adaptive_max_pool2d(h, 2)
        h = self.shared(torch.flatten(h, 1))
        h = self.shared(self.fc1(h))
        return self.fc2(F.silu(h))


def _check_summation_to_delta(exp: liftcam.Explanation, scale: float = 1.0) -> None:
    assert exp.delta is not None and exp.weights is not None
    assert torch.isfinite(exp.delta).all()
    assert exp.delta.abs().max() <= 1e-4 * max(scale, 1.0), exp.delta
    # the residual is tiny relative to what is distributed (and something is distributed)
    assert (exp.weights.sum(1).abs() > 1e3 * exp.delta.abs()).all(), (exp.weights.sum(1), exp.delta)


@pytest.mark.parametrize("reference", ["zeros", "mean", "random"])
def test_summation_to_delta_on_every_op_head(reference: str) -> None:
    torch.manual_seed(1)
    model = EveryOpModel().eval()
    x = torch.randn(4, 3, 8, 8)
    ref: object = reference
    if reference == "random":
        ref = torch.randn(6, 8, 8)
    exp = liftcam.explain(model, x, "body", "lift-cam", reference=ref)  # type: ignore[arg-type]
    _check_summation_to_delta(exp, float(exp.scores.abs().max()))
    # and the delta is honest: recompute s(A) - s(R) from scratch
    with torch.no_grad():
        s = model(x).gather(1, exp.targets[:, None])[:, 0]
    torch.testing.assert_close(exp.scores, s)


def test_every_op_head_matches_rerun_fallback() -> None:
    torch.manual_seed(2)
    model = EveryOpModel().eval()
    x = torch.randn(3, 3, 8, 8)
    graph = liftcam.Explainer(model, "body", split_mode="graph")(x, ["lift-cam", "grad-cam"])
    rerun = liftcam.Explainer(model, "body", split_mode="rerun")(x, ["lift-cam", "grad-cam"])
    for name in graph:
        torch.testing.assert_close(graph[name].raw, rerun[name].raw)


@pytest.mark.parametrize(
    ("arch", "layer"),
    [
        ("vgg16", "features.29"),
        ("resnet50", "layer4"),
        ("resnet50", "layer4.2.conv2"),  # head with a skip connection from the body and a reused ReLU
        ("mobilenet_v2", "features.18"),
        ("mobilenet_v2", "features.17"),  # nonlinear head: conv, BN, ReLU6, pool, dropout, linear
        ("densenet121", "features"),  # F.relu called functionally in the head
    ],
)
def test_summation_to_delta_on_torchvision_models(arch: str, layer: str) -> None:
    torch.manual_seed(0)
    model = torchvision.models.get_model(arch, weights=None).eval()
    x = torch.randn(2, 3, 224, 224)
    exp = liftcam.explain(model, x, layer, "lift-cam")
    _check_summation_to_delta(exp, float(exp.scores.abs().max()))


@pytest.mark.parametrize("layer", ["features.16", "features.17", "features.14"])
def test_summation_to_delta_on_pretrained_lite0(lite0, photo_batch, layer: str) -> None:  # type: ignore[no-untyped-def]
    exp = liftcam.explain(lite0.model, photo_batch, layer, "lift-cam")
    _check_summation_to_delta(exp, float(exp.scores.abs().max()))


class CumprodHead(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Conv2d(3, 4, 3)
        self.fc = nn.Linear(4 * 36, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.cumprod(self.body(x), dim=1).flatten(1))


def test_unknown_operation_is_named() -> None:
    model = CumprodHead().eval()
    with pytest.raises(UnsupportedOperationError, match="cumprod"):
        liftcam.explain(model, torch.randn(2, 3, 8, 8), "body", "lift-cam")
    # gradient methods do not need rules
    exp = liftcam.explain(model, torch.randn(2, 3, 8, 8), "body", "grad-cam")
    assert exp.maps.shape == (2, 8, 8)


def test_softmax_output_conserves() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.Linear(4 * 36, 3), nn.Softmax(dim=1)).eval()
    exp = liftcam.explain(model, torch.randn(2, 3, 8, 8), "0", "lift-cam")
    assert exp.delta is not None and exp.delta.abs().max() < 1e-6


def test_training_mode_dropout_is_refused() -> None:
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.Dropout(0.5), nn.Linear(4 * 36, 3))
    model.train()
    with pytest.raises(HeadError, match="eval"):
        liftcam.explain(model, torch.randn(2, 3, 8, 8), "0", "lift-cam")


class BatchMixing(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Conv2d(3, 4, 3)
        self.fc = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.body(x)
        a = a - a.mean(dim=0, keepdim=True)  # depends on the other samples
        return self.fc(a.mean(dim=(2, 3)))


def test_batch_mixing_head_is_refused() -> None:
    with pytest.raises(HeadError, match="mixes the samples of a batch"):
        liftcam.explain(BatchMixing().eval(), torch.randn(2, 3, 8, 8), "body", "lift-cam")
