"""ROAD: equal to pytorch-grad-cam's ROADMostRelevantFirst / LeastRelevantFirst / Combined on the same maps."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torchvision
from torch import nn

from liftcam.metrics import MetricBatch, Road, Scorer
from liftcam.metrics.imputation import linear_imputation, noisy_linear_imputation

pytorch_grad_cam = pytest.importorskip("pytorch_grad_cam")


@pytest.fixture(scope="module")
def model() -> nn.Module:
    torch.manual_seed(0)
    return torchvision.models.resnet18(num_classes=10).eval()


def _batch() -> MetricBatch:
    g = torch.Generator().manual_seed(2)
    x = torch.randn(2, 3, 48, 48, generator=g)
    smooth = torch.nn.functional.interpolate(torch.rand(2, 1, 6, 6, generator=g), size=(48, 48), mode="bilinear")[:, 0]
    maps = {"smooth": smooth, "noise": torch.rand(2, 48, 48, generator=g)}
    return MetricBatch(x, torch.tensor([3, 7]), maps)


def test_road_equals_pytorch_grad_cams(model: nn.Module) -> None:
    from pytorch_grad_cam.metrics.perturbation_confidence import (
        PerturbationConfidenceMetric,
        RemoveLeastRelevantFirst,
        RemoveMostRelevantFirst,
    )
    from pytorch_grad_cam.metrics.road import NoisyLinearImputer
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputSoftmaxTarget

    batch = _batch()
    percentiles = (20, 50, 80)
    ours = Road(percentiles, noise=0.0).compute(batch, Scorer(model, "softmax"))
    targets = [ClassifierOutputSoftmaxTarget(int(c)) for c in batch.classes]
    for method, heat in batch.maps.items():
        cams = heat.numpy()
        morf = np.mean([PerturbationConfidenceMetric(RemoveMostRelevantFirst(p, NoisyLinearImputer(noise=0)))(
            batch.inputs, cams, targets, model) for p in percentiles], axis=0)  # fmt: skip
        lerf = np.mean([PerturbationConfidenceMetric(RemoveLeastRelevantFirst(p, NoisyLinearImputer(noise=0)))(
            batch.inputs, cams, targets, model) for p in percentiles], axis=0)  # fmt: skip
        torch.testing.assert_close(ours[method]["road_morf"], torch.from_numpy(morf), rtol=1e-4, atol=1e-6)
        torch.testing.assert_close(ours[method]["road_lerf"], torch.from_numpy(lerf), rtol=1e-4, atol=1e-6)
        torch.testing.assert_close(ours[method]["road"], torch.from_numpy((lerf - morf) / 2), rtol=1e-4, atol=1e-6)
    assert float(ours["smooth"]["road_morf"].abs().max()) > 1e-4  # the removal changes the scores


def test_imputation_solves_the_neighbour_equations_and_keeps_known_pixels() -> None:
    g = torch.Generator().manual_seed(0)
    image = torch.rand(3, 9, 11, generator=g, dtype=torch.float64)
    removed = torch.rand(9, 11, generator=g) < 0.6
    filled = linear_imputation(image, removed)
    torch.testing.assert_close(filled[:, ~removed], image[:, ~removed], rtol=0, atol=0)
    # every removed pixel is the weighted mean of its neighbours inside the image
    for y, x in removed.nonzero().tolist():
        total, weight = torch.zeros(3, dtype=torch.float64), 0.0
        for (dy, dx), w in [((a, b), 1 / 12 if a and b else 1 / 6) for a in (-1, 0, 1) for b in (-1, 0, 1) if a or b]:
            if 0 <= y + dy < 9 and 0 <= x + dx < 11:
                total, weight = total + w * filled[:, y + dy, x + dx], weight + w
        torch.testing.assert_close(filled[:, y, x], total / weight, rtol=1e-9, atol=1e-12)
    # the noise: seeded, only on the removed pixels, of the asked size
    noisy = noisy_linear_imputation(image, removed, 0.01, torch.Generator().manual_seed(4))
    again = noisy_linear_imputation(image, removed, 0.01, torch.Generator().manual_seed(4))
    torch.testing.assert_close(noisy, again, rtol=0, atol=0)
    difference = (noisy - filled)[:, removed]
    assert 0.005 < float(difference.std()) < 0.02 and torch.equal(noisy[:, ~removed], image[:, ~removed])


def test_an_images_value_does_not_depend_on_its_batch(model: nn.Module) -> None:
    batch = _batch()
    both = Road((30, 70)).compute(batch, Scorer(model))
    first = MetricBatch(batch.inputs[:1], batch.classes[:1], {m: v[:1] for m, v in batch.maps.items()})
    alone = Road((30, 70)).compute(first, Scorer(model))
    for method in batch.maps:
        torch.testing.assert_close(alone[method]["road"], both[method]["road"][:1], rtol=1e-5, atol=1e-7)


def test_arcc_equals_pytorch_grad_cams(model: nn.Module, monkeypatch: pytest.MonkeyPatch) -> None:
    """ADCC with ROAD for faithfulness; the imputation's noise off on both sides."""
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.metrics.arcc import ARCC
    from pytorch_grad_cam.metrics.road import NoisyLinearImputer
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputSoftmaxTarget

    import liftcam
    from liftcam.metrics import Arcc

    batch = _batch()
    explainer = liftcam.Explainer(model, "layer4")
    heat = explainer(batch.inputs, "grad-cam", targets=batch.classes).maps
    batch = MetricBatch(batch.inputs, batch.classes, {"grad-cam": heat},
                        reexplain={"grad-cam": lambda x, c: explainer(x, "grad-cam", targets=c).maps})  # fmt: skip
    ours = Arcc(noise=0.0).compute(batch, Scorer(model, "softmax"))["grad-cam"]
    original = NoisyLinearImputer.__init__
    monkeypatch.setattr(NoisyLinearImputer, "__init__", lambda self, noise=0.0, **kw: original(self, noise=0.0))
    targets = [ClassifierOutputSoftmaxTarget(int(c)) for c in batch.classes]
    with GradCAM(model=model, target_layers=[model.layer4]) as cam:
        theirs = ARCC(cam)(batch.inputs, heat.numpy(), targets, model)
    torch.testing.assert_close(
        ours["arcc"], torch.from_numpy(np.asarray(theirs, dtype=np.float32)), rtol=1e-3, atol=1e-4
    )
    assert float(ours["arcc"].min()) >= 0 and float(ours["arcc"].max()) <= 1
    assert float(ours["arcc"].max()) > 1e-3  # a positive ROAD term somewhere: not 0 = 0


def test_a_constant_map_has_no_road_value(model: nn.Module) -> None:
    batch = _batch()
    maps = {"zero": torch.zeros(2, 48, 48), "smooth": batch.maps["smooth"]}
    values = Road((50,)).compute(MetricBatch(batch.inputs, batch.classes, maps), Scorer(model))
    assert bool(values["zero"]["road"].isnan().all()) and bool(values["smooth"]["road"].isfinite().all())


def test_imputation_equals_quantus_noisy_linear_imputation() -> None:
    """Quantus's ``noisy_linear_imputation`` (noise 0: its noise comes from NumPy's global generator) fills the
    same pixels with the same values. Named difference: Quantus's ``ROAD`` metric reports, per percentage, the
    share of images whose predicted class is unchanged (MoRF only), ranking the map broadcast over the channels;
    ours reports pytorch-grad-cam's score changes (MoRF, LeRF and combined), removing the pixels at or above the
    map's percentile."""
    quantus = pytest.importorskip("quantus")

    generator = torch.Generator().manual_seed(0)
    image = torch.rand(3, 12, 10, generator=generator, dtype=torch.float64)
    removed = torch.rand(12, 10, generator=generator) < 0.4
    removed[0, 0] = removed[11, 9] = removed[5, 0] = True  # corners and an edge
    ours = linear_imputation(image.float(), removed).double()
    indices = np.flatnonzero(removed.numpy())
    theirs = quantus.functions.perturb_func.noisy_linear_imputation(arr=image.numpy(), indices=indices, noise=0.0)
    np.testing.assert_allclose(ours.numpy(), theirs, rtol=1e-5, atol=1e-6)
    assert not torch.equal(ours, image)
