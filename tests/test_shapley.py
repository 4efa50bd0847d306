"""Shapley values of activation maps: enumeration, sampling estimators, fast games, head-only evaluation."""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import liftcam
from helpers import null_player_marginals, random_factored_game, shapley_by_enumeration
from liftcam.head import HeadEvaluator
from liftcam.methods import AblationCam, Shap
from liftcam.shapley import (
    AdditiveGame,
    FactoredGame,
    HeadGame,
    exact_shapley,
    image_game,
    kernel_shapley,
    permutation_shapley,
    shapley_values,
)
from liftcam.shapley.game import CoalitionGame
from liftcam.targets import resolve_targets


class NonlinearHead(nn.Module):
    """K = 6 maps -> max-pool, 1x1 conv, SiLU, GAP, Linear, ReLU, Linear: no shortcut applies."""

    def __init__(self, k: int = 6) -> None:
        super().__init__()
        self.body = nn.Conv2d(3, k, 3, padding=1)
        self.mix = nn.Conv2d(k, 8, 1)
        self.fc1 = nn.Linear(8, 8)
        self.fc2 = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.body(x)
        h = F.silu(self.mix(F.max_pool2d(a, 2)))
        return self.fc2(F.relu(self.fc1(h.mean(dim=(2, 3)))))


def _setup(model: nn.Module, layer: str, x: torch.Tensor) -> tuple[liftcam.Explainer, HeadEvaluator]:
    explainer = liftcam.Explainer(model, layer)
    captured = explainer.capture(x)
    classes = resolve_targets(None, explainer.logits(captured))
    return explainer, HeadEvaluator(explainer.split, captured, None, classes)


@pytest.fixture
def nonlinear() -> tuple[NonlinearHead, torch.Tensor]:
    torch.manual_seed(0)
    return NonlinearHead().eval(), torch.randn(2, 3, 8, 8)


def test_exact_enumeration_equals_brute_force(nonlinear) -> None:  # type: ignore[no-untyped-def]
    model, x = nonlinear
    _, evaluator = _setup(model, "body", x)
    a = evaluator.activations
    for b in range(2):
        reference = torch.randn_like(a[b]) * 0.1
        game = image_game(evaluator, b, reference)
        assert isinstance(game, HeadGame)  # nothing to factor in this head
        cls = int(evaluator.classes[b])

        def value(subset: tuple[int, ...], b: int = b, reference: torch.Tensor = reference, cls: int = cls) -> float:
            coalition = reference.clone()
            coalition[list(subset)] = a[b, list(subset)]
            with torch.no_grad():
                return float(
                    model.fc2(F.relu(model.fc1(F.silu(model.mix(F.max_pool2d(coalition[None], 2))).mean((2, 3)))))[
                        0, cls
                    ]
                )

        expected = shapley_by_enumeration(value, 6)
        result = exact_shapley(game)
        torch.testing.assert_close(result.values, expected, rtol=1e-5, atol=1e-6)
        assert abs(float(result.values.sum()) - (result.v_full - result.v_empty)) < 1e-9


class SaturatingGame(CoalitionGame):
    """v(S) = 3 tanh(sum_{k in S} a_k - 1) + sum_{k in S} b_k: no estimator is exact on it."""

    def __init__(self, k: int = 12) -> None:
        g = torch.Generator().manual_seed(5)
        self.a = torch.rand(k, generator=g, dtype=torch.float64) * 0.4
        self.b = torch.randn(k, generator=g, dtype=torch.float64) * 0.1
        self.n_players = k

    def values(self, masks: torch.Tensor) -> torch.Tensor:
        z = masks.double()
        return 3 * torch.tanh(z @ self.a - 1) + z @ self.b


def test_sampling_estimators_converge_and_are_reproducible() -> None:
    game = SaturatingGame()
    exact = exact_shapley(game).values
    k = game.n_players
    for estimator in (permutation_shapley, kernel_shapley):
        coarse = estimator(game, 40, seed=1)
        fine = estimator(game, 4000, seed=1)
        err_coarse = float((coarse.values - exact).abs().max())
        err_fine = float((fine.values - exact).abs().max())
        assert err_fine < err_coarse / 3, (estimator.__name__, err_coarse, err_fine)
        # efficiency holds exactly
        total = game.values(torch.ones(1, k))[0] - game.values(torch.zeros(1, k))[0]
        assert abs(float(fine.values.sum() - total)) < 1e-9
        # the standard error is honest: errors are a few standard errors at most
        assert float(((fine.values - exact).abs() / fine.stderr.clamp_min(1e-12)).max()) < 5
        assert float(fine.stderr.max()) < float(coarse.stderr.max())
        again = estimator(game, 4000, seed=1)
        assert torch.equal(again.values, fine.values)
        assert not torch.equal(estimator(game, 4000, seed=2).values, fine.values)


def test_permutation_chain_values_match_coalitions(nonlinear) -> None:  # type: ignore[no-untyped-def]
    model, x = nonlinear
    _, evaluator = _setup(model, "body", x)
    game = image_game(evaluator, 0, torch.zeros_like(evaluator.activations[0]))
    orders = torch.stack([torch.randperm(6) for _ in range(3)])
    chain = game.chain_values(orders)
    for p in range(3):
        for j in range(7):
            mask = torch.zeros(1, 6)
            mask[0, orders[p, :j]] = 1
            assert abs(float(chain[p, j] - game.values(mask)[0])) < 1e-6


def test_running_sums_by_one_scan_equal_the_row_by_row_sums() -> None:
    """The one-kernel running sums (CUDA's path) against the row-by-row additions (the CPU's), on the CPU:
    equal within float rounding here (the CPU's cumsum accumulates in float64); bit for bit on CUDA
    (tests/test_devices.py)."""
    game = random_factored_game("cpu")
    orders = torch.stack([torch.randperm(40, generator=torch.Generator().manual_seed(i)) for i in range(3)])
    by_rows, by_scan = (torch.empty(3, 41, 300) for _ in range(2))
    game._running_sums(by_rows, orders, scan=False)
    game._running_sums(by_scan, orders, scan=True)
    torch.testing.assert_close(by_scan, by_rows, rtol=1e-6, atol=1e-5)
    expected = game.base + torch.cat([torch.zeros(1, 300), game.rows[orders[1]].double().cumsum(0).float()])
    torch.testing.assert_close(by_rows[1], expected, rtol=1e-6, atol=1e-5)


def test_a_null_player_joins_the_chains_for_exactly_nothing() -> None:
    """Equal coalitions in the chains give equal values (a row-wise sum, not GEMV): a zero row's marginal
    contributions are exactly 0 (on CUDA too: tests/test_devices.py). Only where the estimate swaps in the
    exact ``v(empty)``/``v(N)`` at the ends (for exact efficiency) does a null player drawn first or last
    pick up their rounding (player 3 is last in the 7th permutation of seed 0: ~4e-7)."""
    game = random_factored_game("cpu")
    assert torch.equal(null_player_marginals(game), torch.zeros(20, dtype=torch.float64))
    estimate = float(permutation_shapley(game, 20, seed=0).values[3])
    assert abs(estimate) < 1e-5


def test_factored_game_equals_head_game_on_lite0(lite0, photo_batch) -> None:  # type: ignore[no-untyped-def]
    _, evaluator = _setup(lite0.model, "features.16", photo_batch[:2])
    reference = torch.zeros_like(evaluator.activations[1])
    fast = image_game(evaluator, 1, reference)
    slow = HeadGame(evaluator, 1, reference)
    assert isinstance(fast, FactoredGame)  # 1x1 conv, BN, ReLU6, GAP, dropout, linear
    # few coalitions (Ablation-CAM's K + 1, LIME-CAM's K): building the rows would cost more than the head
    assert isinstance(image_game(evaluator, 1, reference, coalitions=4 * 320 - 1), HeadGame)
    assert isinstance(image_game(evaluator, 1, reference, coalitions=4 * 320), FactoredGame)
    torch.manual_seed(0)
    masks = (torch.rand(40, 320) < torch.rand(40, 1)).float()
    torch.testing.assert_close(fast.values(masks), slow.values(masks), rtol=1e-5, atol=1e-4)
    orders = torch.stack([torch.randperm(320) for _ in range(2)])
    orders = torch.stack([orders, orders.flip(1)], dim=1).reshape(4, 320)  # antithetic pairs share sums
    torch.testing.assert_close(fast.chain_values(orders), slow.chain_values(orders), rtol=1e-5, atol=1e-4)
    _, linear = _setup(lite0.model, "features.17", photo_batch[:1])
    assert isinstance(image_game(linear, 0, torch.zeros_like(linear.activations[0])), AdditiveGame)


def test_factored_game_is_precise_at_lite0_depthwise_layer(lite0, photo_batch) -> None:  # type: ignore[no-untyped-def]
    # K = 1152 channels through conv, BN, conv, BN, ReLU6: rows computed in float32 were off by 1.2e-4 of
    # the logit on two sample photos, failed the 1e-4 check and fell back to the 2x slower head game
    _, evaluator = _setup(lite0.model, "features.16._swish#2", photo_batch)
    ends = torch.stack([torch.ones(1152), torch.zeros(1152)])
    for b in range(photo_batch.shape[0]):
        reference = torch.zeros_like(evaluator.activations[b])
        fast = image_game(evaluator, b, reference)
        assert isinstance(fast, FactoredGame), b
        torch.testing.assert_close(fast.values(ends), HeadGame(evaluator, b, reference).values(ends), rtol=1e-5, atol=0)


def test_linear_head_shapley_equals_lift_cam_and_ablation_is_proportional(tiny) -> None:  # type: ignore[no-untyped-def]
    x = torch.randn(3, 3, 10, 10)
    for fast in (True, False):
        out = liftcam.explain(tiny, x, "act", ["lift-cam", Shap(estimator="exact", fast=fast), AblationCam()])
        a = liftcam.Explainer(tiny, "act").capture(x).activations
        expected = tiny.fc.weight[out["lift-cam"].targets].detach() * a.mean(dim=(2, 3))
        torch.testing.assert_close(out["shap"].weights, out["lift-cam"].weights, rtol=1e-4, atol=1e-6)
        torch.testing.assert_close(out["shap"].weights, expected, rtol=1e-4, atol=1e-6)
        # Ablation-CAM: (s - s_{-k}) / s = phi_k / s on a linear head
        scaled = out["ablation-cam"].weights * out["ablation-cam"].scores[:, None]  # type: ignore[operator]
        torch.testing.assert_close(scaled, expected, rtol=1e-4, atol=1e-6)


def test_shap_method_estimators_and_stderr(nonlinear) -> None:  # type: ignore[no-untyped-def]
    model, x = nonlinear
    exact = liftcam.explain(model, x, "body", Shap(estimator="exact"))
    sampled = liftcam.explain(model, x, "body", Shap(estimator="permutation", n_samples=2000, seed=3))
    assert torch.equal(exact.extras["stderr"], torch.zeros_like(exact.extras["stderr"]))
    assert (sampled.extras["stderr"] > 0).all()
    err = (sampled.weights - exact.weights).abs()  # type: ignore[operator]
    assert float((err / sampled.extras["stderr"]).max()) < 5
    auto = liftcam.explain(model, x, "body", "shap")
    torch.testing.assert_close(auto.weights, exact.weights)


def test_head_only_evaluation_equals_whole_model(nonlinear) -> None:  # type: ignore[no-untyped-def]
    model, x = nonlinear
    _, evaluator = _setup(model, "body", x)
    modified = torch.randn(5, 6, 8, 8)
    head_scores = evaluator.scores(1, modified)
    calls = []

    def substitute(module: nn.Module, inputs: object, output: torch.Tensor) -> torch.Tensor:
        calls.append(1)
        return modified

    handle = model.body.register_forward_hook(substitute)
    try:
        with torch.no_grad():
            whole = model(x[1:2].expand(5, -1, -1, -1))
    finally:
        handle.remove()
    torch.testing.assert_close(head_scores, whole[:, evaluator.classes[1]])
    # the head evaluator never ran the body: the substitution hook fired only for the whole model
    assert calls == [1]


def test_rerun_fallback_evaluator_warns_once_and_agrees(nonlinear) -> None:  # type: ignore[no-untyped-def]
    model, x = nonlinear
    graph = liftcam.explain(model, x, "body", ["shap", "ablation-cam"])
    explainer = liftcam.Explainer(model, "body", split_mode="rerun")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        rerun = explainer(x, [Shap(fast=False), AblationCam()])
    messages = [str(w.message) for w in caught if "re-runs the whole model" in str(w.message)]
    assert len(messages) == 1
    for name in graph:
        torch.testing.assert_close(graph[name].weights, rerun[name].weights, rtol=1e-4, atol=1e-5)


def test_chunking_by_memory_budget_does_not_change_results(nonlinear) -> None:  # type: ignore[no-untyped-def]
    model, x = nonlinear
    explainer = liftcam.Explainer(model, "body")
    captured = explainer.capture(x)
    big = explainer.explain_captured(captured, [Shap(fast=False)])["shap"]
    small = explainer.explain_captured(captured, [Shap(fast=False)], memory_bytes=1)["shap"]
    torch.testing.assert_close(big.weights, small.weights)


def test_shapley_values_auto_picks_estimator() -> None:
    assert shapley_values(SaturatingGame(10)).estimator == "exact"
    assert shapley_values(SaturatingGame(30), n_samples=20).estimator == "permutation"
    additive = AdditiveGame(1.0, torch.tensor([1.0, 2.0, 3.0]))
    result = shapley_values(additive)
    assert result.estimator == "additive" and torch.equal(
        result.values, torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64)
    )


def test_exact_enumeration_handles_twenty_players() -> None:
    game = SaturatingGame(20)
    exact = exact_shapley(game)  # 2^20 coalitions, vectorised
    assert exact.evaluations == 2**20
    assert abs(float(exact.values.sum()) - (exact.v_full - exact.v_empty)) < 1e-9
    sampled = permutation_shapley(game, 2000, seed=0)
    assert float(((sampled.values - exact.values).abs() / sampled.stderr).max()) < 5


def test_lift_cam_is_complete_where_other_coefficients_are_not(nonlinear) -> None:  # type: ignore[no-untyped-def]
    """Completeness ``sum alpha / sum phi``: the exact Shapley values sum to F(A) - F(R), and so do LIFT-CAM's
    coefficients (summation-to-delta) although they differ from phi on this nonlinear head; Grad-CAM's do not."""
    from liftcam.metrics.shapley_fidelity import completeness

    model, x = nonlinear
    out = liftcam.explain(model, x, "body", ["lift-cam", "grad-cam", Shap(estimator="exact")])
    phi = out["shap"].weights
    for b in range(x.shape[0]):
        assert abs(completeness(out["lift-cam"].weights[b], phi[b]) - 1) < 1e-4  # type: ignore[index]
        assert abs(completeness(out["grad-cam"].weights[b], phi[b]) - 1) > 1e-2  # type: ignore[index]
    assert not torch.allclose(out["lift-cam"].weights, phi, rtol=1e-3)  # type: ignore[arg-type]
