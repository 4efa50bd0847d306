"""Each metric against values computed by hand on tiny analytic models."""

from __future__ import annotations

import math

import pytest
import torch
import torchvision.transforms.functional as TF
from torch import nn

from helpers import randomisation_model
from liftcam.metrics import (
    Adcc,
    AverageDrop,
    AverageDropInDeletion,
    Deletion,
    EnergyPointingGame,
    IncreaseInConfidence,
    Insertion,
    MetricBatch,
    PointingGame,
    Scorer,
)
from liftcam.metrics.curves import step_counts


class RegionMean(nn.Module):
    """logit 0 = mean of channel 0 over rows 0-1 (a 2 x W region), logit 1 = 0."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        region = x[:, 0, :2, :].mean(dim=(1, 2))
        return torch.stack([region, torch.zeros_like(region)], dim=1)


def _batch(x: torch.Tensor, maps: dict[str, torch.Tensor], **kw: object) -> MetricBatch:
    return MetricBatch(inputs=x, classes=torch.zeros(x.shape[0], dtype=torch.long), maps=maps, **kw)  # type: ignore[arg-type]


def _scorer() -> Scorer:
    return Scorer(RegionMean(), kind="logit", batch_size=3)


def test_average_drop_increase_and_deletion_drop() -> None:
    x = torch.ones(3, 1, 4, 4)
    x[1] *= 2.0
    x[2] = 0.0  # Y = 0: nothing can drop
    half = torch.zeros(3, 4, 4)
    half[:, :1] = 1.0  # keeps row 0 of the region: O = Y / 2, D = Y / 2
    boosted = torch.ones(3, 4, 4)
    maps = {"half": half, "full": boosted, "zero": torch.zeros(3, 4, 4)}
    scorer = _scorer()
    batch = _batch(x, maps)
    ad = AverageDrop().compute(batch, scorer)
    assert torch.allclose(ad["half"]["average_drop"], torch.tensor([50.0, 50.0, 0.0]))
    assert torch.allclose(ad["full"]["average_drop"], torch.tensor([0.0, 0.0, 0.0]))
    assert torch.allclose(ad["zero"]["average_drop"], torch.tensor([100.0, 100.0, 0.0]))
    signed = AverageDrop(clip=False).compute(batch, scorer)
    assert torch.allclose(signed["half"]["average_drop"], torch.tensor([50.0, 50.0, 0.0]))
    ic = IncreaseInConfidence().compute(batch, scorer)
    assert torch.equal(ic["full"]["increase_in_confidence"], torch.zeros(3))  # O = Y is no increase
    add = AverageDropInDeletion().compute(batch, scorer)
    assert torch.allclose(add["half"]["average_drop_in_deletion"], torch.tensor([50.0, 50.0, 0.0]))
    assert torch.allclose(add["full"]["average_drop_in_deletion"], torch.tensor([100.0, 100.0, 0.0]))
    assert torch.allclose(add["zero"]["average_drop_in_deletion"], torch.tensor([0.0, 0.0, 0.0]))
    # Y once per batch, and O and D for all methods in shared batched evaluations
    assert scorer.evaluations == 3 + 2 * 3 * len(maps)


def test_increase_in_confidence_counts_increases() -> None:
    x = torch.ones(2, 1, 4, 4)
    x[:, 0, 0] = -1.0  # region mean 0 ... row 0 negative, row 1 positive: Y = 0
    keep_row1 = torch.zeros(2, 4, 4)
    keep_row1[:, 1] = 1.0  # O = mean(row 1) / 2 = 0.5 > Y = 0
    ic = IncreaseInConfidence().compute(_batch(x, {"m": keep_row1}), _scorer())
    assert torch.equal(ic["m"]["increase_in_confidence"], torch.tensor([100.0, 100.0]))


def test_signed_average_drop_counts_increases_as_negative_drops() -> None:
    x = torch.ones(1, 1, 4, 4)
    x[:, 0, 0] = -1.0
    x[:, 0, 1] = 3.0  # Y = (-4 + 12) / 8 = 1
    keep_row1 = torch.zeros(1, 4, 4)
    keep_row1[:, 1] = 1.0  # O = 12 / 8 = 1.5
    batch = _batch(x, {"m": keep_row1})
    assert float(AverageDrop().compute(batch, _scorer())["m"]["average_drop"][0]) == 0.0
    assert float(AverageDrop(clip=False).compute(batch, _scorer())["m"]["average_drop"][0]) == -50.0
    assert AverageDrop(clip=False).parameters() == {"clip": False}


def test_deletion_curve_and_auc_by_hand() -> None:
    x = torch.ones(1, 1, 4, 4)
    heat = torch.zeros(1, 4, 4)
    heat[0, 0] = 1.0  # row 0 first (4 pixels), then the rest in row-major order
    metric = Deletion(step=4 / 16, fill=0.0)
    out = metric.compute(_batch(x, {"m": heat}), _scorer())["m"]
    # after 0, 4, 8, 12, 16 pixels: region rows 0-1 have 8 pixels; row 0 then row 1 are deleted
    expected = torch.tensor([[1.0, 0.5, 0.0, 0.0, 0.0]])
    assert torch.allclose(out["deletion_curve"], expected)
    assert math.isclose(float(out["deletion"][0]), 0.25 * (0.75 + 0.25), rel_tol=1e-6)
    assert step_counts(16, 4 / 16).tolist() == [0, 4, 8, 12, 16]
    assert step_counts(10, 0.25).tolist() == [0, 2, 4, 6, 8, 10]  # round(2.5) = 2 pixels a step


def test_insertion_from_a_blurred_copy() -> None:
    torch.manual_seed(0)
    x = torch.rand(1, 1, 6, 6)
    heat = torch.zeros(1, 6, 6)
    heat[0, :2] = torch.arange(12, 0, -1).view(2, 6).float()  # the region, in row-major order first
    metric = Insertion(step=6 / 36, blur_kernel=3, blur_sigma=1.0)
    out = metric.compute(_batch(x, {"m": heat}), _scorer())["m"]
    blurred = TF.gaussian_blur(x, [3, 3], [1.0, 1.0])
    start, middle = blurred[0, 0, :2].mean(), torch.cat([x[0, 0, :1], blurred[0, 0, 1:2]]).mean()
    assert torch.allclose(out["insertion_curve"][0, :3], torch.stack([start, middle, x[0, 0, :2].mean()]))
    assert torch.allclose(out["insertion_curve"][0, 2:], x[0, 0, :2].mean().expand(5))


def test_adcc_by_hand() -> None:
    x = torch.ones(2, 1, 4, 4)
    heat = torch.zeros(2, 4, 4)
    heat[:, 0] = 1.0
    heat[:, 1] = 0.5  # O = 0.75 Y: AD = 25; complexity = (4 + 2) / 16
    same = {"m": lambda inputs, classes: heat[: inputs.shape[0]]}  # re-explaining gives the same map
    out = Adcc().compute(_batch(x, {"m": heat}, reexplain=same), _scorer())["m"]
    complexity = 6 / 16
    expected = 3 / (1 / 1.0 + 1 / (1 - complexity) + 1 / (1 - 0.25))
    assert torch.allclose(out["coherency"], torch.full((2,), 100.0))
    assert torch.allclose(out["complexity"], torch.full((2,), 100 * complexity))
    assert torch.allclose(out["adcc"], torch.full((2,), 100 * expected))
    zero = torch.zeros(2, 4, 4)
    out = Adcc().compute(_batch(x, {"z": zero}, reexplain={"z": lambda i, c: zero}), _scorer())["z"]
    assert torch.equal(out["adcc"], torch.zeros(2))  # an all-zero map: undefined coherency counts as 0


def test_energy_pointing_game() -> None:
    heat = torch.zeros(1, 10, 10)
    heat[0, 0, 0] = 3.0  # corner pixel, at the border
    heat[0, 5, 5] = 1.0
    corner = [torch.tensor([[0.0, 0.0, 1.0, 1.0]])]
    one_pixel = [torch.tensor([[5.2, 5.2, 5.4, 5.4]])]  # thinner than a pixel: covers the pixel it lies in
    scorer = _scorer()
    x = torch.zeros(1, 1, 10, 10)
    epg = EnergyPointingGame()
    assert float(epg.compute(_batch(x, {"m": heat}, boxes=corner), scorer)["m"]["energy_pointing_game"][0]) == 75.0
    assert float(epg.compute(_batch(x, {"m": heat}, boxes=one_pixel), scorer)["m"]["energy_pointing_game"][0]) == 25.0
    none = epg.compute(_batch(x, {"m": heat}, boxes=[None]), scorer)["m"]["energy_pointing_game"]
    assert math.isnan(float(none[0]))
    zero = epg.compute(_batch(x, {"m": torch.zeros(1, 10, 10)}, boxes=corner), scorer)["m"]["energy_pointing_game"]
    assert float(zero[0]) == 0.0


@pytest.mark.parametrize(("column", "hit"), [(20, True), (21, False)])
def test_pointing_game_tolerance(column: int, hit: bool) -> None:
    heat = torch.zeros(1, 40, 40)
    heat[0, 3, column] = 1.0  # centre at x = column + 0.5; the box ends at x = 5.5: distance 15 or 16
    boxes = [torch.tensor([[0.0, 0.0, 5.5, 10.0]])]
    out = PointingGame(tolerance=15).compute(_batch(torch.zeros(1, 1, 40, 40), {"m": heat}, boxes=boxes), _scorer())
    assert float(out["m"]["pointing_game"][0]) == (100.0 if hit else 0.0)


def test_pointing_game_all_zero_map_misses() -> None:
    boxes = [torch.tensor([[0.0, 0.0, 40.0, 40.0]])]
    out = PointingGame().compute(
        _batch(torch.zeros(1, 1, 40, 40), {"m": torch.zeros(1, 40, 40)}, boxes=boxes), _scorer()
    )
    assert float(out["m"]["pointing_game"][0]) == 0.0


@pytest.mark.parametrize("compare", ["maps", "raw"])
def test_randomisation_metric_equals_the_function_for_every_method(compare: str) -> None:
    """The metric explains every method at each step in one pass; per method it gives the function's values."""
    import liftcam
    from liftcam.metrics import ModelParameterRandomisation
    from liftcam.metrics.randomisation import model_parameter_randomisation

    model = randomisation_model()
    x = torch.randn(2, 3, 12, 12, generator=torch.Generator().manual_seed(1))
    methods = ["grad-cam", "lift-cam"]
    explained = liftcam.explain(model, x, "4", methods)
    classes = explained["grad-cam"].targets

    def explainer_for(other: nn.Module):  # type: ignore[no-untyped-def]
        explainer = liftcam.Explainer(other, "4")
        return lambda inputs, cls: explainer(inputs, methods, targets=cls)

    batch = MetricBatch(x, classes, {m: e.maps for m, e in explained.items()}, explainer_for=explainer_for)
    before = [p.clone() for p in model.parameters()]
    values = ModelParameterRandomisation(compare=compare, similarity="spearman").compute(batch, Scorer(model))  # type: ignore[arg-type]
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))  # the model is untouched
    for method in methods:
        expected = model_parameter_randomisation(model, x, "4", method, order="top_down", compare=compare)  # type: ignore[arg-type]
        curve = torch.stack([expected[name] for name in list(expected)[1:]], dim=1).float()
        torch.testing.assert_close(values[method]["mprt_curve"], curve)
        torch.testing.assert_close(values[method]["mprt"], curve.mean(dim=1))
        torch.testing.assert_close(values[method]["mprt_last"], curve[:, -1])
        assert curve.shape == (2, 4) and float(values[method]["mprt_last"].max()) < 0.95


class CountingRegionMean(RegionMean):
    """RegionMean that records the batch size of every forward pass."""

    def __init__(self) -> None:
        super().__init__()
        self.batches: list[int] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.batches.append(x.shape[0])
        return super().forward(x)


def test_scorer_chunks_of_16_on_cpu_and_generate_equals_scoring_all() -> None:
    """Without batch_size, 16 inputs per forward on CPU, whether scored at once or built chunk by chunk."""
    x = torch.randn(40, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    classes = torch.zeros(40, dtype=torch.long)
    model = CountingRegionMean()
    whole = Scorer(model, kind="logit")(x, classes)
    assert model.batches == [16, 16, 8]
    model.batches.clear()
    made: list[tuple[int, int]] = []

    def make(i: int, j: int) -> torch.Tensor:
        made.append((i, j))
        return x[i:j]

    built = Scorer(model, kind="logit").generate(make, 40, classes)
    assert made == [(0, 16), (16, 32), (32, 40)] and model.batches == [16, 16, 8]
    assert torch.equal(built, whole) and torch.equal(whole, x[:, 0, :2].mean(dim=(1, 2)))
    assert Scorer(model).generate(make, 0, classes).shape == (0,)


def test_cuda_chunks_fill_the_memory_budget_up_to_128() -> None:
    from liftcam.capture import CUDA_CHUNK_BYTES, chunk_size, cuda_chunk

    assert chunk_size(torch.zeros(2, 3, 8, 8), cpu=16) == 16  # CPU: the caller's rule
    assert cuda_chunk(3 * 224 * 224 * 4) == 128
    assert cuda_chunk(3 * 800 * 1333 * 4) == CUDA_CHUNK_BYTES // (16 * 3 * 800 * 1333 * 4) == 20
    assert cuda_chunk(CUDA_CHUNK_BYTES) == 1
