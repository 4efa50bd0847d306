"""LRP-CAM's AttnLRP rules against lxt, the AttnLRP authors' package, on a transformer block.

lxt's explicit rules (``lxt.explicit.functional``: epsilon rule for linear layers and sums, LayerNorm with
the standard deviation detached, the uniform rule for ``matmul``, the softmax rule) need only torch; the
package's ``__init__`` imports Hugging Face models, so the module is loaded from its file (lxt is installed
without its dependencies by ``scripts/setup.sh test``).
"""

from __future__ import annotations

import importlib.util
from types import ModuleType

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from liftcam.lrp import lrp_relevance

EPSILON = 1e-12  # the same stabiliser on both sides: the rules, not the epsilons, are compared


def _lxt_functional() -> ModuleType:
    spec = importlib.util.find_spec("lxt")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("lxt is not installed (scripts/setup.sh test installs it)")
    path = f"{spec.submodule_search_locations[0]}/explicit/functional.py"
    module_spec = importlib.util.spec_from_file_location("lxt_explicit_functional", path)
    assert module_spec is not None and module_spec.loader is not None
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module


class Block(nn.Module):
    """Pre-norm single-head attention block with a residual, read out at the class token."""

    def __init__(self, dim: int = 8, classes: int = 3) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.q, self.k, self.v, self.out = (nn.Linear(dim, dim) for _ in range(4))
        self.fc = nn.Linear(dim, classes)

    def forward(self, x: Tensor) -> Tensor:
        h = self.norm(x)
        weights = F.softmax(self.q(h) @ self.k(h).transpose(-1, -2) / 8**0.5, dim=-1)
        x = x + self.out(weights @ self.v(h))
        return self.fc(x[:, 0])

    def lxt_forward(self, lxt: ModuleType, x: Tensor) -> Tensor:
        """The same block written with lxt's rule functions."""

        def linear(layer: nn.Linear, t: Tensor) -> Tensor:
            out: Tensor = lxt.linear_epsilon(t, layer.weight, layer.bias, EPSILON)
            return out

        h = lxt.layer_norm_grad_fn.apply(x, self.norm.weight, self.norm.bias, self.norm.eps, EPSILON)
        logits = lxt.matmul(linear(self.q, h), linear(self.k, h).transpose(-1, -2), False, EPSILON) / 8**0.5
        weights = lxt.softmax(logits, -1)
        x = lxt.add2(x, linear(self.out, lxt.matmul(weights, linear(self.v, h), False, EPSILON)), False, EPSILON)
        result: Tensor = linear(self.fc, x[:, 0])
        return result


def test_lrp_cam_relevance_equals_lxt_on_an_attention_block() -> None:
    lxt = _lxt_functional()
    torch.manual_seed(0)
    block = Block().double().eval()
    with torch.no_grad():  # LayerNorm's affine parameters away from their identity start
        block.norm.weight.normal_(1.0, 0.3)
        block.norm.bias.normal_(0.0, 0.3)
    tokens = torch.randn(2, 5, 8, dtype=torch.float64)
    target = 1

    logits, ours = lrp_relevance(block, tokens, lambda lg: lg[:, target], EPSILON)

    x = tokens.clone().requires_grad_(True)
    lxt_logits = block.lxt_forward(lxt, x)
    score = lxt_logits[:, target]
    (theirs,) = torch.autograd.grad(score, x, grad_outputs=score.detach())

    torch.testing.assert_close(lxt_logits.detach(), logits)
    torch.testing.assert_close(ours, theirs, rtol=1e-7, atol=1e-10)
    # the rules matter: gradient x input is another attribution
    leaf = tokens.clone().requires_grad_(True)
    (gradient,) = torch.autograd.grad(block(leaf)[:, target].sum(), leaf)
    assert not torch.allclose(ours, gradient * tokens, rtol=1e-3)


@pytest.mark.parametrize("norm", ["rms_norm", "normalize"])
def test_lrp_cam_scale_only_normalisations_pass_relevance_as_lxt(norm: str) -> None:
    """RMSNorm and ``normalize`` take lxt's identity rule; ours, the epsilon rule on the layer with its
    scale frozen, is the same rule since the frozen layer is diagonal."""
    lxt = _lxt_functional()
    torch.manual_seed(1)
    fc = nn.Linear(8, 3).double()
    weight = torch.rand(8, dtype=torch.float64) + 0.5
    x = torch.randn(4, 8, dtype=torch.float64)

    def ours_head(t: Tensor) -> Tensor:
        h = F.rms_norm(t, (8,), weight, 1e-6) if norm == "rms_norm" else F.normalize(t, dim=-1)
        return fc(h)

    def lxt_head(t: Tensor) -> Tensor:
        h = lxt.rms_norm_identity(t, weight, 1e-6) if norm == "rms_norm" else lxt.normalize(t, 2.0, -1)
        out: Tensor = lxt.linear_epsilon(h, fc.weight, fc.bias, EPSILON)
        return out

    _, ours = lrp_relevance(ours_head, x, lambda lg: lg[:, 2], EPSILON)
    leaf = x.clone().requires_grad_(True)
    score = lxt_head(leaf)[:, 2]
    (theirs,) = torch.autograd.grad(score, leaf, grad_outputs=score.detach())
    # lxt's RMSNorm computes in float32
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-6)
