"""Every rule of the table alone: summation-to-delta to float precision, on random inputs and references
(the zero reference included), and the decompositions equal to the operations they replace."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

import liftcam
from liftcam import rules
from liftcam.deeplift import paired_pass
from liftcam.errors import HeadError

Op = Callable[[Tensor], Tensor]
# each operation of a (B, 4, 5, 6) tensor; several combine the input with itself to reach the two-input rules
OPERATIONS: dict[str, Op] = {
    "layer_norm(last)": lambda a: F.layer_norm(a, (6,)),
    "layer_norm(3 dims, affine)": lambda a: F.layer_norm(
        a, (4, 5, 6), torch.linspace(0.5, 2, 120, dtype=a.dtype).view(4, 5, 6), torch.ones(4, 5, 6, dtype=a.dtype)
    ),
    "group_norm": lambda a: F.group_norm(a, 2, torch.arange(1.0, 5.0, dtype=a.dtype), torch.zeros(4, dtype=a.dtype)),
    "instance_norm": lambda a: F.instance_norm(a),
    "rms_norm": lambda a: F.rms_norm(a, (6,), eps=1e-6),
    "softmax(channels)": lambda a: F.softmax(a, dim=1),
    "softmax(last)": lambda a: a.softmax(-1),
    "log_softmax": lambda a: F.log_softmax(a, dim=1),
    "logsumexp": lambda a: torch.logsumexp(a, dim=(2, 3)),
    "var": lambda a: a.var(dim=1),
    "std": lambda a: torch.std(a, dim=(2, 3), keepdim=True),
    "norm": lambda a: torch.norm(a, dim=1),
    "vector_norm": lambda a: torch.linalg.vector_norm(a, dim=-1),
    "normalize": lambda a: F.normalize(a, dim=-1),
    "exp": lambda a: torch.exp(a),
    "log": lambda a: torch.log(a * a + 1),
    "sqrt": lambda a: torch.sqrt(a * a + 0.5),
    "rsqrt": lambda a: torch.rsqrt(a * a + 1e-3),
    "pow(scalar)": lambda a: a**3,
    "rpow": lambda a: 2.0**a,
    "square": lambda a: torch.square(a),
    "abs": lambda a: a.abs(),
    "erf": lambda a: torch.erf(a),
    "reciprocal": lambda a: torch.reciprocal(a * a + 1),
    "division by A": lambda a: a / (a * a + 1),
    "division of A by A": lambda a: a.flip(1) / (a.abs() + 0.5),
    # at the zero reference the denominator is 1e-6: the generic split, not the quotient's closed form
    "division by A near 0": lambda a: a.flip(1) / (a.abs() + 1e-6),
    "product": lambda a: a * a.flip(2),
    "pow(A, A)": lambda a: torch.pow(a.abs() + 0.5, a.flip(1)),
    "maximum": lambda a: torch.maximum(a, a.flip(1)),
    "max(dim)": lambda a: a.max(dim=1).values,
    "max(a, b)": lambda a: torch.max(a, a.flip(3)),
    "amax(2 dims)": lambda a: a.amax(dim=(2, 3)),
    "min(dim)": lambda a: torch.min(a, dim=-1, keepdim=True)[0],
    "amin": lambda a: a.amin(dim=1),
    "matmul": lambda a: a @ a.transpose(-2, -1),
    "einsum": lambda a: torch.einsum("bkhw,bkhw->bk", a, a.flip(1)),
    "attention": lambda a: F.scaled_dot_product_attention(a, a.flip(1), a.flip(2)),
    "causal attention": lambda a: F.scaled_dot_product_attention(a, a * 0.5, a, is_causal=True),
}


def _projected(op: Op, a: Tensor) -> Callable[[Tensor], Tensor]:
    """The head ``t -> <w, op(t)>`` per sample, with a fixed random ``w`` (a plain sum of a softmax is 1)."""
    size = op(a[:1]).numel()
    w = torch.randn(size, generator=torch.Generator().manual_seed(5), dtype=a.dtype)
    return lambda t: (op(t).reshape(t.shape[0], -1) * w).sum(dim=1, keepdim=True)


def _check(op: Op, a: Tensor, r: Tensor, tolerance: float) -> None:
    head = _projected(op, a)
    paired = paired_pass(head, a, r)
    m = paired.multipliers(paired.logits[:, 0])
    assert torch.isfinite(m).all()
    distributed = (m * (a - r)).flatten(1).sum(dim=1)
    with torch.no_grad():
        delta = head(a)[:, 0] - head(r)[:, 0]
    scale = 1 + (m * (a - r)).abs().flatten(1).sum(dim=1)
    assert ((distributed - delta).abs() <= tolerance * scale).all(), (distributed, delta)
    torch.testing.assert_close(paired.logits.detach(), head(a))  # the rules leave the output as it is


@pytest.mark.parametrize("name", sorted(OPERATIONS))
@pytest.mark.parametrize("reference", ["random", "zero", "near"])
def test_summation_to_delta_of_each_rule(name: str, reference: str) -> None:
    generator = torch.Generator().manual_seed(0)
    a = torch.randn(3, 4, 5, 6, generator=generator, dtype=torch.float64)
    r = {
        "random": torch.randn(3, 4, 5, 6, generator=generator, dtype=torch.float64),
        "zero": torch.zeros_like(a),
        "near": a + 1e-9 * torch.randn(3, 4, 5, 6, generator=generator, dtype=torch.float64),  # x ~ r: derivatives
    }[reference]
    _check(OPERATIONS[name], a, r, 1e-9)


@pytest.mark.parametrize(
    "name",
    ["layer_norm(last)", "softmax(channels)", "attention", "division by A", "division by A near 0", "std",
     "normalize", "rms_norm"],
)  # fmt: skip
def test_summation_to_delta_in_float32(name: str) -> None:
    generator = torch.Generator().manual_seed(1)
    a, r = torch.randn(2, 4, 5, 6, generator=generator), torch.zeros(2, 4, 5, 6)
    _check(OPERATIONS[name], a, r, 1e-4)


@pytest.mark.parametrize("name", sorted(rules.names_of(rules.Kind.COMPOSITE)))
def test_every_decomposition_equals_its_operation(name: str) -> None:
    rule = rules.RULES[name]
    generator = torch.Generator().manual_seed(2)
    x = torch.randn(2, 4, 5, 6, generator=generator, dtype=torch.float64)
    calls = {
        "layer_norm": ((x, (5, 6)), F.layer_norm),
        "rms_norm": ((x, (6,)), F.rms_norm),
        "group_norm": ((x, 2), F.group_norm),
        "instance_norm": ((x,), F.instance_norm),
        "softmax": ((x, 2), F.softmax),
        "log_softmax": ((x, 1), F.log_softmax),
        "logsumexp": ((x, (1, 3)), torch.logsumexp),
        "var": ((x, 1), torch.var),
        "std": ((x, (2, 3)), torch.std),
        "norm": ((x, 2, 1), torch.norm),
        "vector_norm": ((x, 3, -1), torch.linalg.vector_norm),
        "linalg_vector_norm": ((x, 2, (1, 2)), torch.linalg.vector_norm),
        "normalize": ((x, 2.0, 2), F.normalize),
        "scaled_dot_product_attention": ((x, x.flip(2), x.flip(3)), F.scaled_dot_product_attention),
    }
    if name == "multi_head_attention_forward":
        attention = nn.MultiheadAttention(6, 2, batch_first=True).double().eval()
        tokens = torch.randn(2, 7, 6, generator=generator, dtype=torch.float64)
        expected = attention(tokens, tokens, tokens, need_weights=False)[0]
        query = tokens.transpose(0, 1)
        out, _ = rules.multi_head_attention_forward(
            query, query, query, 6, 2, attention.in_proj_weight, attention.in_proj_bias, None, None, False, 0.0,
            attention.out_proj.weight, attention.out_proj.bias, training=False, need_weights=False,
        )  # fmt: skip
        torch.testing.assert_close(out.transpose(0, 1), expected)
        return
    args, reference = calls[name]
    assert rule.decompose is not None
    torch.testing.assert_close(rule.decompose(*args), reference(*args))


class EncoderBlock(nn.Module):
    """A torchvision-style pre-norm block: LayerNorm, multi-head attention, LayerNorm, GELU MLP."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attention = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))

    def forward(self, tokens: Tensor) -> Tensor:
        y = self.norm1(tokens)
        tokens = tokens + self.attention(y, y, y, need_weights=False)[0]
        return tokens + self.mlp(self.norm2(tokens))


class TinyViT(nn.Module):
    """Patch embedding, two encoder blocks, a class token, the final LayerNorm and a linear classifier."""

    def __init__(self, dim: int = 8, heads: int = 2, classes: int = 3) -> None:
        super().__init__()
        self.patch = nn.Conv2d(3, dim, 4, stride=4)
        self.cls = nn.Parameter(torch.randn(1, 1, dim))
        self.blocks = nn.Sequential(EncoderBlock(dim, heads), EncoderBlock(dim, heads))
        self.norm = nn.LayerNorm(dim)
        self.fc = nn.Linear(dim, classes)
        self.num_prefix_tokens = 1

    def forward(self, x: Tensor) -> Tensor:
        maps = self.patch(x)
        tokens = torch.cat([self.cls.expand(x.shape[0], -1, -1), maps.flatten(2).transpose(1, 2)], dim=1)
        return self.fc(self.norm(self.blocks(tokens))[:, 0])


@pytest.mark.parametrize("reference", ["zeros", "mean"])
def test_summation_to_delta_through_transformer_blocks(reference: str) -> None:
    """From the patch embedding's maps through attention, LayerNorm and GELU to the class logit."""
    torch.manual_seed(0)
    model = TinyViT().eval()
    x = torch.randn(3, 3, 16, 16)
    exp = liftcam.explain(model, x, "patch", "lift-cam", reference=reference)
    assert exp.delta is not None and exp.weights is not None
    assert exp.delta.abs().max() <= 1e-4 * max(1.0, float(exp.scores.abs().max()))
    assert (exp.weights.sum(1).abs() > 100 * exp.delta.abs()).all()


class NormHeads(nn.Module):
    """ConvNeXt-style channels-last LayerNorm and GroupNorm after the target layer, a global max pool."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Conv2d(3, 8, 3, padding=1)
        self.group = nn.GroupNorm(2, 8)
        self.norm = nn.LayerNorm(8)
        self.fc = nn.Linear(8, 3)

    def forward(self, x: Tensor) -> Tensor:
        a = self.group(self.body(x))
        a = self.norm(a.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        return self.fc(F.gelu(a).amax(dim=(2, 3)))


def test_summation_to_delta_through_norms_and_global_max_pooling() -> None:
    """A zero reference at a normalisation's input makes ``rsqrt(eps)`` huge: the Shapley split of the
    product would give two huge shares that cancel (a residual of 1e-3 in float32); the better-conditioned
    order keeps float32 exact to its precision, and the coefficients of the size of the score."""
    torch.manual_seed(0)
    model, x = NormHeads().eval(), torch.randn(4, 3, 8, 8)
    exp = liftcam.explain(model.double(), x.double(), "body", "lift-cam")
    assert exp.delta is not None and exp.weights is not None
    assert exp.delta.abs().max() <= 1e-9 * max(1.0, float(exp.scores.abs().max()))
    exp = liftcam.explain(model.float(), x, "body", "lift-cam")
    assert exp.delta is not None and exp.weights is not None
    assert exp.delta.abs().max() <= 1e-5 * max(1.0, float(exp.scores.abs().max()))
    assert exp.weights.abs().sum(dim=1).max() < 100 * max(1.0, float(exp.scores.abs().max()))
    exp = liftcam.explain(model, x, "body", "lift-cam", reference="mean")
    assert exp.delta is not None and exp.delta.abs().max() <= 1e-5 * max(1.0, float(exp.scores.abs().max()))


def test_training_mode_batch_norm_holds_the_batch_statistics_constant() -> None:
    """In training mode the batch statistics mix the samples: they are taken from the actual batch and
    held constant (as a decision), so each sample's head is affine there and conserves exactly; the
    running statistics are not updated by LIFT-CAM."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 36, 3))
    model.train()
    x = torch.randn(4, 3, 8, 8)
    running = model[1].running_mean.clone()
    exp = liftcam.explain(model, x, "0", "lift-cam", reference="mean")
    torch.testing.assert_close(model[1].running_mean, running)
    assert exp.delta is not None and exp.delta.abs().max() < 1e-5
    with torch.no_grad():  # the explained scores are the training-mode model's
        torch.testing.assert_close(exp.logits, model(x))
    # a head in training mode with active dropout is still refused
    dropout = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.Dropout(0.5), nn.Linear(4 * 36, 3)).train()
    with pytest.raises(HeadError, match="eval"):
        liftcam.explain(dropout, x, "0", "lift-cam")


# --- LRP (AttnLRP's rules) -------------------------------------------------------------------------


def _lrp(head: Callable[[Tensor], Tensor], a: Tensor) -> tuple[Tensor, Tensor]:
    from liftcam.lrp import lrp_relevance

    logits, relevance = lrp_relevance(head, a, lambda lg: lg[:, 0], epsilon=1e-12)
    return logits[:, 0], relevance


def test_lrp_uniform_rule_splits_a_product_in_halves_and_conserves() -> None:
    torch.manual_seed(0)
    a = torch.randn(2, 4, 3, 3, dtype=torch.float64)
    fc = nn.Linear(36, 1, bias=False).double()
    score, relevance = _lrp(lambda t: fc((t * t.flip(1)).flatten(1)), a)
    # epsilon rule at the bias-free linear layer conserves, the uniform rule gives each factor half
    torch.testing.assert_close(relevance.flatten(1).sum(1), score)
    z = (a * a.flip(1)).flatten(1)
    r_z = z * fc.weight[0]
    expected = (r_z / 2).view_as(a) + (r_z / 2).view_as(a).flip(1)
    torch.testing.assert_close(relevance, expected)


def test_lrp_softmax_rule() -> None:
    torch.manual_seed(0)
    a = torch.randn(2, 6, dtype=torch.float64).view(2, 6, 1, 1)
    fc = nn.Linear(6, 1, bias=False).double()
    _, relevance = _lrp(lambda t: fc(F.softmax(t.flatten(1), dim=1)), a)
    x = a.flatten(1)
    y = F.softmax(x, dim=1)
    r_y = y * fc.weight[0]
    torch.testing.assert_close(relevance.flatten(1), x * (r_y - y * r_y.sum(1, keepdim=True)))


def test_lrp_layer_norm_holds_the_standard_deviation_constant() -> None:
    torch.manual_seed(0)
    a = torch.randn(2, 8, 1, 1, dtype=torch.float64)
    fc = nn.Linear(8, 1, bias=False).double()
    _, relevance = _lrp(lambda t: fc(F.layer_norm(t.flatten(1), (8,))), a)
    x = a.flatten(1)
    scale = torch.rsqrt(x.var(dim=1, keepdim=True, unbiased=False) + 1e-5)
    y = (x - x.mean(1, keepdim=True)) * scale
    r_y = y * fc.weight[0]  # the linear layer's epsilon rule
    # the centring-and-scaling map is linear: R_x = x * J^T (R_y / y)
    share = r_y / y
    expected = x * (share - share.mean(1, keepdim=True)) * scale
    torch.testing.assert_close(relevance.flatten(1), expected)


class WhereHead(nn.Module):
    """Decisions on values of A: a ``where`` on a comparison with the spatial mean, an arg-max gather."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Conv2d(3, 4, 3, padding=1)
        self.fc = nn.Linear(8, 3)

    def forward(self, x: Tensor) -> Tensor:
        a = self.body(x)
        kept = torch.where(a > a.mean(dim=(2, 3), keepdim=True), a, 0.5 * a)
        flat = a.flatten(2)
        top = flat.gather(2, flat.argmax(dim=2, keepdim=True))[..., 0]
        return self.fc(torch.cat([kept.mean(dim=(2, 3)), top], dim=1))


@pytest.mark.parametrize("reference", ["zeros", "mean"])
def test_decisions_are_taken_from_the_actual_pass(reference: str) -> None:
    """With the actual pass's decisions frozen, ``where`` and the gather are affine: exact conservation
    against the head evaluated at the reference with those decisions."""
    torch.manual_seed(0)
    model = WhereHead().eval()
    x = torch.randn(3, 3, 8, 8)
    exp = liftcam.explain(model, x, "body", "lift-cam", reference=reference)
    assert exp.delta is not None and exp.delta.abs().max() < 1e-5
    a = model.body(x).detach()
    r = torch.zeros_like(a) if reference == "zeros" else a.mean(dim=0, keepdim=True).expand_as(a)
    with torch.no_grad():
        mask = a > a.mean(dim=(2, 3), keepdim=True)
        index = a.flatten(2).argmax(dim=2, keepdim=True)
        frozen = torch.cat([torch.where(mask, r, 0.5 * r).mean(dim=(2, 3)), r.flatten(2).gather(2, index)[..., 0]], 1)
        expected = model.fc(frozen).gather(1, exp.targets[:, None])[:, 0]
    torch.testing.assert_close(exp.weights.sum(dim=1), exp.scores - expected, rtol=1e-5, atol=1e-5)


def test_quotient_split_is_exact_per_element_also_for_a_denominator_near_0_in_float32() -> None:
    """The quotient's closed-form split would leave shares of ~1e6 that cancel (error ~0.06 in float32); the
    generic split takes over there, so each element's contributions add up to its own change."""
    from liftcam.deeplift import _quotient_multipliers

    generator = torch.Generator().manual_seed(3)
    for denominator_reference in (1.0, 1e-6):  # a softmax-like denominator, and one near 0
        a, ref_a = torch.randn(4, 50, generator=generator), torch.zeros(4, 50)
        b = torch.rand(4, 1, generator=generator) + 0.5
        ref_b = torch.full((4, 1), denominator_reference)
        y, m_a, m_b = _quotient_multipliers(a, b, ref_a, ref_b, torch.div)
        distributed = m_a * (a - ref_a) + m_b * (b - ref_b)
        change = y - ref_a / ref_b
        assert float((distributed - change).abs().max()) <= 1e-5 * float(change.abs().max())
