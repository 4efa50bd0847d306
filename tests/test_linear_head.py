"""On a GAP + Linear head LIFT-CAM is exact: it equals Shapley values by enumeration and W[c,k] mean(A_k)."""

from __future__ import annotations

import pytest
import torch
import torchvision

import liftcam
from helpers import shapley_by_enumeration
from liftcam.errors import HeadError


def test_lift_cam_equals_exact_shapley_on_tiny_linear_head(tiny) -> None:  # type: ignore[no-untyped-def]
    x = torch.randn(3, 3, 10, 10)
    explainer = liftcam.Explainer(tiny, "body")
    captured = explainer.capture(x)
    a = captured.activations
    exp = explainer.explain_captured(captured, ["lift-cam"])["lift-cam"]
    k = a.shape[1]
    assert k == 4
    for b in range(a.shape[0]):
        c = int(exp.targets[b])

        def value(subset: tuple[int, ...], b: int = b, c: int = c) -> float:
            masked = torch.zeros_like(a[b : b + 1])
            masked[:, list(subset)] = a[b : b + 1, list(subset)]
            with torch.no_grad():
                return float(tiny.fc(tiny.pool(tiny.act(masked)).flatten(1))[0, c])

        phi = shapley_by_enumeration(value, k)
        torch.testing.assert_close(exp.weights[b].double(), phi, rtol=1e-5, atol=1e-6)  # type: ignore[index]
        # efficiency: the Shapley values sum to v(N) - v(empty)
        assert abs(float(phi.sum()) - (value(tuple(range(k))) - value(()))) < 1e-5


def test_lift_cam_equals_weight_times_mean_on_linear_heads(tiny, lite0, photo_batch) -> None:  # type: ignore[no-untyped-def]
    cases = [
        (tiny, torch.randn(2, 3, 10, 10), "act", tiny.fc.weight),
        (lite0.model, photo_batch, "features.17", lite0.model.classifier[1].weight),
    ]
    torch.manual_seed(0)
    resnet = torchvision.models.resnet50().eval()
    cases.append((resnet, torch.randn(2, 3, 224, 224), "layer4", resnet.fc.weight))
    for model, x, layer, weight in cases:
        explainer = liftcam.Explainer(model, layer)
        captured = explainer.capture(x)
        out = explainer.explain_captured(captured, ["lift-cam", "cam"])
        expected = weight[out["lift-cam"].targets].detach() * captured.activations.mean(dim=(2, 3))
        torch.testing.assert_close(out["lift-cam"].weights, expected, rtol=1e-4, atol=1e-6)
        # CAM's coefficients are W[c, k] exactly
        torch.testing.assert_close(out["cam"].weights, weight[out["cam"].targets].detach())


def test_cam_refuses_nonlinear_head(lite0, photo_batch) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(HeadError, match="global average pooling"):
        liftcam.explain(lite0.model, photo_batch[:1], "features.16", "cam")
    vgg = torchvision.models.vgg11().eval()
    with pytest.raises(HeadError, match="max_pool2d"):
        liftcam.explain(vgg, torch.randn(1, 3, 64, 64), "features.19", "cam")
