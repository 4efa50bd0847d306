"""Every tensor a method or metric creates goes on the input's device.

On CPU, the check runs under ``torch.device("meta")`` as the default device: a tensor created without
an explicit device becomes a meta tensor (no data), and mixing it with the real ones fails. So a
missing ``device=`` is caught on a machine without a GPU. With CUDA present, every method, metric
and run is compared with CPU.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

import liftcam
from helpers import null_player_marginals, random_factored_game
from liftcam.data import Preprocessing
from liftcam.methods import CamMethod, LimeCam, Shap
from liftcam.metrics import METRICS, MetricBatch, Scorer, get_metric
from liftcam.models import LoadedModel
from liftcam.shapley import permutation_shapley


def CUDA(test: Any) -> Any:
    """Runs only with a CUDA device, in float32 arithmetic (no TF32) so CUDA and CPU compare the same math."""
    test = pytest.mark.usefixtures("full_precision_cuda")(test)
    return pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")(test)


class NonlinearHead(nn.Module):
    """K = 6 maps through a nonlinear head (1x1 conv, ReLU, GAP, Linear): no shortcut applies."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 6, 3, stride=2, padding=1))
        self.head = nn.Sequential(
            nn.ReLU(), nn.Conv2d(6, 5, 1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(5, 3)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


def _methods() -> list[str | CamMethod]:
    names: list[str | CamMethod] = [m for m in liftcam.METHODS if m not in ("cam", "shap")]
    return [
        *names,
        Shap(estimator="exact"),
        Shap(estimator="permutation", n_samples=10),
        Shap(estimator="kernel", n_samples=64),
        LimeCam(n_samples=32),
    ]


def _model() -> NonlinearHead:
    torch.manual_seed(0)
    return NonlinearHead().eval()


def _inputs() -> torch.Tensor:
    return torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("method", _methods(), ids=repr)
def test_methods_create_nothing_off_the_input_device(method: str | CamMethod) -> None:
    explainer = liftcam.Explainer(_model(), "body")
    x = _inputs()
    reference = explainer(x, method)
    with torch.device("meta"):
        again = explainer(x, method)
    assert again.maps.device.type == "cpu"
    torch.testing.assert_close(again.maps, reference.maps)


def _metric_batch(device: str) -> MetricBatch:
    x = _inputs().to(device)
    names = ("grad-cam", "lift-cam")  # the randomisation test explains them again
    maps = {
        m: torch.rand(2, 16, 16, generator=torch.Generator().manual_seed(i)).to(device) for i, m in enumerate(names)
    }

    def reexplain(inputs: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
        return inputs.abs().mean(dim=1)

    def explainer_for(model: nn.Module) -> Any:  # the randomisation test: every method with a re-initialised model
        explainer = liftcam.Explainer(model, "body")
        return lambda inputs, classes: explainer(inputs, ["grad-cam", "lift-cam"], targets=classes)

    boxes = [torch.tensor([[2.0, 2.0, 9.0, 11.0]]), None]
    classes = torch.tensor([0, 2], device=device)
    return MetricBatch(x, classes, maps, boxes, {m: reexplain for m in maps}, explainer_for)


def _metric(name: str) -> Any:
    parameters: dict[str, Any] = {"step": 0.1} if name in ("deletion", "insertion") else {}
    if name == "insertion":
        parameters["blur_kernel"] = 3
    return get_metric(name, **parameters)


@pytest.mark.parametrize("name", METRICS)
def test_metrics_create_nothing_off_the_input_device(name: str) -> None:
    model = _model()
    expected = _metric(name).compute(_metric_batch("cpu"), Scorer(model))
    batch, metric = _metric_batch("cpu"), _metric(name)
    with torch.device("meta"):
        values = metric.compute(batch, Scorer(model))
    for method, result in expected.items():
        for key, tensor in result.items():
            torch.testing.assert_close(values[method][key], tensor, equal_nan=True)


@CUDA
@pytest.mark.parametrize("method", _methods(), ids=repr)
def test_cuda_methods_equal_cpu(method: str | CamMethod) -> None:
    model = _model()
    cpu = liftcam.Explainer(model, "body")(_inputs(), method, reference="mean")
    gpu = liftcam.Explainer(model.cuda(), "body")(_inputs().cuda(), method, reference="mean")
    assert gpu.maps.is_cuda and gpu.raw.is_cuda
    torch.testing.assert_close(gpu.raw.cpu(), cpu.raw, atol=1e-4, rtol=1e-3)
    if cpu.weights is not None:
        assert gpu.weights is not None and gpu.weights.is_cuda
    for key, value in gpu.extras.items():
        assert value.is_cuda, key


@CUDA
def test_cuda_scorer_takes_larger_chunks() -> None:
    """On CUDA the scorer runs up to 128 inputs per forward (16 on CPU), with the same scores."""
    model = _model().cuda()
    sizes: list[int] = []
    handle = model.register_forward_pre_hook(lambda _, args: sizes.append(args[0].shape[0]))
    try:
        x = torch.randn(40, 3, 16, 16, generator=torch.Generator().manual_seed(2))
        classes = torch.zeros(40, dtype=torch.long)
        gpu = Scorer(model)(x.cuda(), classes.cuda())
        assert sizes == [40]
    finally:
        handle.remove()
    torch.testing.assert_close(gpu.cpu(), Scorer(model.cpu())(x, classes), atol=1e-5, rtol=1e-4)


@CUDA
@pytest.mark.parametrize("name", METRICS)
def test_cuda_metrics_equal_cpu(name: str) -> None:
    model = _model()
    cpu = _metric(name).compute(_metric_batch("cpu"), Scorer(model))
    gpu = _metric(name).compute(_metric_batch("cuda"), Scorer(model.cuda()))
    for method, result in cpu.items():
        for key, tensor in result.items():
            assert gpu[method][key].is_cuda
            torch.testing.assert_close(gpu[method][key].cpu(), tensor, atol=1e-4, rtol=1e-3, equal_nan=True)


RUN_METHODS = ("lift-cam", "grad-cam", "ablation-cam", "lime-cam", "shapley-cam", "lrp-cam", "score-cam", "shap")


def _files(folder: Path) -> list[Path]:
    from PIL import Image

    folder.mkdir()
    generator = torch.Generator().manual_seed(2)
    for i in range(3):
        pixels = (torch.rand(20, 20, 3, generator=generator) * 255).to(torch.uint8).numpy()
        Image.fromarray(pixels).save(folder / f"{i}.png")
    return sorted(folder.glob("*.png"))


def _runs(files: list[Path], model: nn.Module, out: Path) -> list[dict[str, Any]]:
    """Records of a fidelity and an evaluation run (every metric, mean reference) of the images."""
    from liftcam.data.datasets import Sample
    from liftcam.runs.evaluate import EvaluateSettings, run_evaluate
    from liftcam.runs.fidelity import run_fidelity

    loaded = LoadedModel("nonlinear", model, "body", Preprocessing(resize=18, crop=16), ["a", "b", "c"], "random")
    run_fidelity(loaded, files, out / "fidelity", methods=RUN_METHODS, reference="mean", progress=False)
    settings = EvaluateSettings(
        data=str(files[0].parent), model="nonlinear", weights="random", layer="body", methods=RUN_METHODS,
        metrics=tuple(METRICS), metric_parameters=(("step", 0.1), ("blur_kernel", 3)), score="softmax",
        target="label", reference="mean", limit=None, seed=0, images=3, batch_size=2,
    )  # fmt: skip
    samples = [Sample(f, i, [(2.0, 2.0, 9.0, 11.0)]) for i, f in enumerate(files)]
    run_evaluate(loaded, samples, out / "evaluate", settings, progress=False)
    return [
        json.loads(line)
        for name in ("fidelity/records.jsonl", "evaluate/records.jsonl")
        for line in (out / name).read_text().splitlines()
    ]


def _same_records(a: list[dict[str, Any]], b: list[dict[str, Any]], tolerance: float) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        assert (x["image"], x["method"]) == (y["image"], y["method"])
        for key, value in x.items():
            if key not in ("ms", "body_ms") and isinstance(value, float):
                assert y[key] == pytest.approx(value, rel=tolerance, abs=tolerance, nan_ok=True), (x["method"], key)


def test_runs_create_nothing_off_the_input_device(tmp_path: Path) -> None:
    """``liftcam fidelity`` and ``liftcam evaluate``, data loading and boxes included."""
    files, model = _files(tmp_path / "in"), _model()
    expected = _runs(files, model, tmp_path / "cpu")
    with torch.device("meta"):
        records = _runs(files, model, tmp_path / "meta")
    _same_records(records, expected, 0.0)


@CUDA
def test_cuda_runs_equal_cpu(tmp_path: Path) -> None:
    """``liftcam fidelity`` and ``liftcam evaluate`` on CUDA give the CPU's records (to float tolerance)."""
    files = _files(tmp_path / "in")
    _same_records(_runs(files, _model().cuda(), tmp_path / "cuda"), _runs(files, _model(), tmp_path / "cpu"), 1e-3)


@CUDA
def test_cuda_running_sums_by_one_scan_equal_the_row_by_row_sums() -> None:
    """CUDA's permutation chains take one cumsum kernel: the loop's float additions in its order, bit for bit,
    so a null player's marginal contributions in the chains stay exactly 0. (The estimate puts the exact
    ``v(empty)`` and ``v(N)`` at the chains' ends for exact efficiency, and these round differently from
    the chains' own ends, so a null player drawn first or last gets that rounding: ~1e-7, not 0.)"""
    game = random_factored_game("cuda")
    generator = torch.Generator().manual_seed(1)
    orders = torch.stack([torch.randperm(40, generator=generator) for _ in range(4)]).cuda()
    by_rows, by_scan = (torch.empty(4, 41, 300, device="cuda") for _ in range(2))
    game._running_sums(by_rows, orders, scan=False)
    game._running_sums(by_scan, orders, scan=True)
    assert torch.equal(by_scan, by_rows)
    assert torch.equal(null_player_marginals(game), torch.zeros(20, dtype=torch.float64, device="cuda"))
    result = permutation_shapley(game, 20, seed=0)
    assert result.values.is_cuda and abs(float(result.values[3])) < 1e-5
