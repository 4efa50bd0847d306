"""Metrics equal to Quantus's on the same arrays: Sparseness, Complexity (ours: entropy_complexity) and
Relevance Mass Accuracy."""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import pytest
import torch

from helpers import randomisation_model
from liftcam.maps import minmax
from liftcam.metrics import EntropyComplexity, MetricBatch, RelevanceMassAccuracy, Scorer, Sparseness
from liftcam.metrics.energy_pointing_game import EnergyPointingGame, box_mask

quantus = pytest.importorskip("quantus")


def _batch() -> MetricBatch:
    g = torch.Generator().manual_seed(3)
    x = torch.rand(4, 3, 20, 24, generator=g)
    blobs = torch.nn.functional.interpolate(torch.rand(4, 1, 4, 4, generator=g), size=(20, 24), mode="bilinear")
    maps = {"smooth": minmax(blobs[:, 0] ** 4), "noise": minmax(torch.rand(4, 20, 24, generator=g))}
    boxes = [torch.tensor([[2.0, 3.0, 11.0, 14.0]]), torch.tensor([[0.0, 0.0, 5.5, 7.2], [15.0, 9.0, 24.0, 20.0]]),
             torch.tensor([[8.0, 1.0, 20.0, 6.0]]), None]  # fmt: skip
    return MetricBatch(x, torch.tensor([0, 1, 2, 3]), maps, boxes)


def _quantus(metric: object, batch: MetricBatch, heat: torch.Tensor, masks: np.ndarray | None = None) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        values = metric(  # type: ignore[operator]
            model=None,
            x_batch=batch.inputs.numpy(),
            y_batch=batch.classes.numpy(),
            a_batch=heat[:, None].numpy().copy(),
            s_batch=masks,
        )
    return np.asarray(values, dtype=np.float64)


def test_sparseness_and_complexity_equal_quantus() -> None:
    batch = _batch()
    scorer = Scorer(torch.nn.Identity())  # not used: properties of the map alone
    ours_sparse = Sparseness().compute(batch, scorer)
    ours_entropy = EntropyComplexity().compute(batch, scorer)
    for method, heat in batch.maps.items():
        sparse = _quantus(quantus.Sparseness(disable_warnings=True, display_progressbar=False), batch, heat)
        entropy = _quantus(quantus.Complexity(disable_warnings=True, display_progressbar=False), batch, heat)
        np.testing.assert_allclose(ours_sparse[method]["sparseness"].numpy(), sparse, rtol=1e-5)
        np.testing.assert_allclose(ours_entropy[method]["entropy_complexity"].numpy(), entropy, rtol=1e-5)
    # a concentrated map is sparser and simpler than a noisy one
    assert bool((ours_sparse["smooth"]["sparseness"] > ours_sparse["noise"]["sparseness"]).all())
    assert bool((ours_entropy["smooth"]["entropy_complexity"] < ours_entropy["noise"]["entropy_complexity"]).all())


def test_relevance_mass_accuracy_equals_quantus_and_is_the_energy_pointing_game() -> None:
    batch = _batch()
    assert batch.boxes is not None
    masks = np.stack([
        box_mask(b, 20, 24).numpy() if b is not None else np.zeros((20, 24), dtype=bool) for b in batch.boxes
    ])[:, None].astype(np.float32)  # fmt: skip
    scorer = Scorer(torch.nn.Identity())
    ours = RelevanceMassAccuracy().compute(batch, scorer)
    energy = EnergyPointingGame().compute(batch, scorer)
    for method, heat in batch.maps.items():
        theirs = _quantus(
            quantus.RelevanceMassAccuracy(disable_warnings=True, display_progressbar=False), batch, heat, masks
        )
        values = ours[method]["relevance_mass_accuracy"].numpy()
        np.testing.assert_allclose(values[:3], theirs[:3], rtol=1e-5)
        assert np.isnan(values[3]) and np.isnan(theirs[3])  # no box
        np.testing.assert_allclose(100 * values[:3], energy[method]["energy_pointing_game"].numpy()[:3], rtol=1e-5)


def _grad_cam_batch(model: torch.nn.Module, layer: str, x: torch.Tensor) -> tuple[Any, Any, MetricBatch]:
    """Grad-CAM's explanation of ``x``, the function explaining other inputs or classes again, and the batch."""
    import liftcam

    explainer = liftcam.Explainer(model, layer)
    first = explainer(x, "grad-cam")

    def again(inputs: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
        return explainer(inputs, "grad-cam", targets=classes).maps

    return first, again, MetricBatch(x, first.targets, {"grad-cam": first.maps}, reexplain={"grad-cam": again})


def test_max_sensitivity_equals_quantus() -> None:
    """One image (Quantus draws a batch's noise at once from NumPy's global generator, seeded as ours)."""
    import torchvision

    from liftcam.metrics import MaxSensitivity

    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=10).eval()
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    first, again, batch = _grad_cam_batch(model, "layer4", x)
    ours = MaxSensitivity(samples=3, radius=0.2, seed=7).compute(batch, Scorer(model))["grad-cam"]["max_sensitivity"]

    def explain(model: object, inputs: np.ndarray, targets: np.ndarray, **kwargs: object) -> np.ndarray:
        return again(torch.from_numpy(np.asarray(inputs, dtype=np.float32)), torch.from_numpy(targets))[:, None].numpy()

    np.random.seed(7)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        metric = quantus.MaxSensitivity(nr_samples=3, lower_bound=0.2, disable_warnings=True, display_progressbar=False)
        theirs = metric(model=model, x_batch=x.numpy(), y_batch=first.targets.numpy(),
                        a_batch=first.maps[:, None].numpy(), explain_func=explain, device="cpu")  # fmt: skip
    np.testing.assert_allclose(ours.numpy(), np.asarray(theirs, dtype=np.float64), rtol=1e-4)
    assert float(ours[0]) > 0.01  # the perturbation changes the map


@pytest.mark.parametrize(
    ("order", "compare"), [("top_down", "maps"), ("independent", "maps"), ("top_down", "raw"), ("top_down", "abs")]
)
def test_model_parameter_randomisation_equals_quantus(order: str, compare: str) -> None:
    """Quantus's MPRT: the same layers re-initialised with the same seeds, the same Spearman correlations
    (of the maps users see, of the signed raw maps or of their absolute values: Adebayo et al.'s Spearman
    without and with absolute value)."""
    from torch import nn

    import liftcam
    from liftcam.metrics.randomisation import compared_maps, model_parameter_randomisation

    model = randomisation_model()
    x = torch.randn(3, 3, 12, 12, generator=torch.Generator().manual_seed(1))
    rng = torch.get_rng_state()
    ours = model_parameter_randomisation(model, x, "4", "grad-cam", order=order, seed=42, compare=compare)  # type: ignore[arg-type]
    assert torch.equal(torch.get_rng_state(), rng)  # the global generator is left as found
    explainer = liftcam.Explainer(model, "4")
    first = explainer(x, "grad-cam")

    def explain(model: nn.Module, inputs: np.ndarray, targets: np.ndarray, **kwargs: object) -> np.ndarray:
        again = liftcam.explain(model, torch.from_numpy(np.asarray(inputs)), "4", "grad-cam", torch.from_numpy(targets))
        return compared_maps(again, compare)[:, None].numpy()  # type: ignore[arg-type]

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        metric = quantus.MPRT(
            layer_order=order, seed=42, abs=compare != "raw", disable_warnings=True, display_progressbar=False
        )
        a_batch = compared_maps(first, compare)[:, None].numpy()  # type: ignore[arg-type]
        theirs = metric(model=model, x_batch=x.numpy(), y_batch=first.targets.numpy(),
                        a_batch=a_batch, explain_func=explain, device="cpu")  # fmt: skip
    assert list(ours) == list(theirs)
    for layer, values in theirs.items():
        np.testing.assert_allclose(ours[layer].numpy(), np.asarray(values, dtype=np.float64), rtol=1e-6, atol=1e-9)
    if order == "top_down":  # randomising the whole model decorrelates the maps
        assert float(ours["0"].mean()) < 0.9 and float(ours["original"].min()) > 0.999


def _small_classifier() -> torch.nn.Module:
    from torch import nn

    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.Conv2d(6, 8, 3, stride=2, padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 5),
    ).eval()  # fmt: skip


def test_faithfulness_correlation_equals_quantus() -> None:
    """Image by image (Quantus draws a batch's subsets from NumPy's global generator, seeded as ours for one
    image); logits as Quantus's default score; several methods share the perturbed inputs' scores."""
    import liftcam
    from liftcam.metrics import FaithfulnessCorrelation

    model = _small_classifier()
    x = torch.randn(3, 3, 20, 20, generator=torch.Generator().manual_seed(3))
    explained = liftcam.explain(model, x, "3", ["grad-cam", "lift-cam"])
    classes = explained["grad-cam"].targets
    batch = MetricBatch(x, classes, {m: e.maps for m, e in explained.items()})
    metric = FaithfulnessCorrelation(runs=20, subset_size=64, seed=5)
    ours = metric.compute(batch, Scorer(model, kind="logit", channels_last=False))
    for method, e in explained.items():
        theirs = []
        for i in range(x.shape[0]):
            np.random.seed(5)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                quantus_metric = quantus.FaithfulnessCorrelation(
                    nr_runs=20, subset_size=64, normalise=False, disable_warnings=True, display_progressbar=False
                )
                theirs += quantus_metric(model=model, x_batch=x[i : i + 1].numpy(), y_batch=classes[i : i + 1].numpy(),
                                         a_batch=e.maps[i : i + 1, None].numpy(), device="cpu")  # fmt: skip
        values = ours[method]["faithfulness_correlation"]
        np.testing.assert_allclose(values.numpy(), np.asarray(theirs, dtype=np.float64), rtol=1e-4, atol=1e-5)
        assert bool(torch.isfinite(values).all()) and float(values.abs().max()) > 0.05


def test_random_logit_equals_quantus_and_ssim_equals_scikit_image() -> None:
    """The same other class (one image at a time, Quantus's draw) and the same similarity (Pearson: Quantus's
    SSIM runs on flattened maps, a named difference); our SSIM is scikit-image's on the 2-D maps."""
    from skimage.metrics import structural_similarity

    from liftcam.metrics import RandomLogit
    from liftcam.metrics.similarity import ssim

    model = _small_classifier()
    x = torch.randn(2, 3, 20, 20, generator=torch.Generator().manual_seed(4))
    first, again, batch = _grad_cam_batch(model, "3", x)
    ours = RandomLogit(similarity="pearson", seed=42).compute(batch, Scorer(model))["grad-cam"]["random_logit"]
    others = RandomLogit(seed=42).other_classes(first.targets, 5)
    assert bool((others != first.targets).all())

    def explain(model: object, inputs: np.ndarray, targets: np.ndarray, **kwargs: object) -> np.ndarray:
        return again(torch.from_numpy(np.asarray(inputs, dtype=np.float32)), torch.from_numpy(targets))[:, None].numpy()

    theirs = []
    for i in range(x.shape[0]):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            metric = quantus.RandomLogit(
                num_classes=5, seed=42, similarity_func=quantus.similarity_func.correlation_pearson,
                normalise=False, disable_warnings=True, display_progressbar=False,
            )  # fmt: skip
            one = slice(i, i + 1)
            theirs += metric(model=model, x_batch=x[one].numpy(), y_batch=first.targets[one].numpy(),
                             a_batch=first.maps[one, None].numpy(), explain_func=explain, device="cpu")  # fmt: skip
    np.testing.assert_allclose(ours.numpy(), np.asarray(theirs, dtype=np.float64), rtol=1e-5, atol=1e-6)
    for a, b in zip(first.maps, again(x, others), strict=True):
        both = torch.stack([a, b]).double().numpy()
        expected = structural_similarity(both[0], both[1], data_range=float(both.max() - both.min()))
        assert ssim(a, b) == pytest.approx(expected, rel=1e-9, abs=1e-12)


def test_hog_similarity_is_the_correlation_of_scikit_image_hogs() -> None:
    from skimage.feature import hog as skimage_hog

    from liftcam.metrics.similarity import hog, ssim

    generator = torch.Generator().manual_seed(0)
    a, b = torch.rand(32, 32, generator=generator), torch.rand(32, 32, generator=generator)
    first, second = skimage_hog(a.double().numpy()), skimage_hog(b.double().numpy())
    assert hog(a, b) == pytest.approx(float(np.corrcoef(first, second)[0, 1]), rel=1e-9)
    assert hog(a, a) == pytest.approx(1.0) and ssim(a, a) == pytest.approx(1.0)
    assert abs(hog(a, b)) < 0.5 and abs(ssim(a, b)) < 0.5  # unrelated noise
