"""Model parameter randomisation (Adebayo et al., NeurIPS 2018), Quantus's ``MPRT``: a map that depends on
what the model learned must change when the model's parameters are re-initialised.

The layers with parameters (every module with ``reset_parameters``) are re-initialised one by one, from the
output back (``"top_down"``: cascading, each step keeping the earlier ones) or each alone, in the model's
order (``"independent"``), each with the generator seeded ``seed + 1`` as Quantus does (the CPU's generator,
whatever the model's device); after each step the method explains the same inputs and classes again, and the
Spearman rank correlation (average ranks for ties) between the original map and the new one is recorded per
image. Lower is better: a map that stays the same ignores the parameters.

``similarity``: ``"spearman"`` (default, as Quantus), ``"pearson"``, ``"ssim"`` or ``"hog"`` (Adebayo et al.'s
three, :mod:`.similarity`) or a function of two maps. ``compare``: which map is compared: ``"maps"`` (the
maps users see, ``minmax(upsample(ReLU(raw)))``), ``"raw"`` (the signed map ``sum_k alpha_k A^k`` upsampled
to the input: Adebayo et al.'s "without absolute value") or ``"abs"`` (its absolute value: "with absolute
value").

The model is copied once; the copy's parameters are re-initialised in place, so the method's split of the copy
is made once and serves every step.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any, Literal

import torch
from torch import Tensor, nn

from ..errors import LiftCamError
from ..explain import Explainer, Explanation
from ..maps import upsample
from ..methods import CamMethod
from ..targets import Targets
from .base import Metric, MetricBatch, Scorer
from .similarity import Similarity, get_similarity

Order = Literal["top_down", "independent"]
Compared = Literal["maps", "raw", "abs"]


def _checked(value: str, allowed: tuple[str, ...], what: str) -> None:
    if value not in allowed:
        raise LiftCamError(f"{what} must be {' or '.join(repr(a) for a in allowed)}, not {value!r}")


def compared_maps(explanation: Explanation, compare: Compared) -> Tensor:
    """The maps (B, H, W) that the test compares: the user's maps, the signed raw map or its absolute value."""
    if compare == "maps":
        return explanation.maps
    _checked(compare, ("maps", "raw", "abs"), "compare")
    raw = upsample(explanation.raw, explanation.maps.shape[1:])
    return raw.abs() if compare == "abs" else raw


def randomised_layers(model: nn.Module) -> list[str]:
    """The modules re-initialised, in the model's order (``named_modules`` with ``reset_parameters``)."""
    return [name for name, module in model.named_modules() if hasattr(module, "reset_parameters")]


def randomisation_steps(randomised: nn.Module, order: Order = "top_down", seed: int = 42) -> Iterator[str]:
    """Re-initialise ``randomised``'s layers in place, one step at a time, and yield each layer's name.

    ``"top_down"``: from the output back, cascading; ``"independent"``: each layer alone, in the model's order,
    the others restored to their trained values. Each step seeds the CPU generator with ``seed + 1`` (Quantus)
    and draws the new values there, whatever the model's device; the generator is restored afterwards.
    """
    _checked(order, ("top_down", "independent"), "order")
    trained = copy.deepcopy(randomised.state_dict()) if order == "independent" else None
    modules = [(name, module) for name, module in randomised.named_modules() if hasattr(module, "reset_parameters")]
    if order == "top_down":
        modules = modules[::-1]
    with torch.random.fork_rng(devices=[]):
        for name, module in modules:
            if trained is not None:
                randomised.load_state_dict(trained)
            torch.manual_seed(seed + 1)
            _reset_on_cpu(module)
            yield name


def _reset_on_cpu(module: nn.Module) -> None:
    """``module.reset_parameters()`` drawn by the CPU generator on a CPU copy, then copied in: the same values
    whatever the model's device (a CUDA generator seeded alike draws other numbers). One path for every
    device, so the CPU tests against Quantus check the code a CUDA run takes."""
    with torch.no_grad():
        fresh = copy.deepcopy(module).cpu()
        fresh.reset_parameters()  # type: ignore[operator]
        module.load_state_dict(fresh.state_dict())


def _similarities(measure: Similarity, first: Tensor, second: Tensor) -> Tensor:
    values = [measure(a, b) for a, b in zip(first, second, strict=True)]
    return torch.tensor(values, dtype=torch.float64, device=first.device)


def model_parameter_randomisation(
    model: nn.Module,
    x: Tensor,
    layer: str | None,
    method: str | CamMethod,
    targets: Targets = None,
    order: Order = "top_down",
    seed: int = 42,
    similarity: str | Similarity = "spearman",
    compare: Compared = "maps",
) -> dict[str, Tensor]:
    """``{"original": ..., <module>: ...}``: per image (B,), the similarity of the method's map after each
    re-initialisation step with its map on the trained model (``"original"``: with itself, 1)."""
    measure = get_similarity(similarity)
    original = Explainer(model, layer)(x, method, targets)
    reference = compared_maps(original, compare)
    classes = original.targets
    randomised = copy.deepcopy(model)
    explainer = Explainer(randomised, layer)
    scores = {"original": _similarities(measure, reference, reference)}
    for name in randomisation_steps(randomised, order, seed):
        again = explainer(x, method, targets if callable(targets) else classes)
        scores[name] = _similarities(measure, reference, compared_maps(again, compare))
    return scores


class ModelParameterRandomisation(Metric):
    """The randomisation test as an evaluation metric: every method of a batch at each step (one shared
    explanation pass per step). Values per image: ``mprt``, the mean similarity over the steps (Quantus's
    average correlation), ``mprt_last`` (the last step: the whole model re-initialised, for ``"top_down"``),
    and ``mprt_curve``, the similarity after each step. Lower is better."""

    name = "mprt"
    higher_is_better = False

    def __init__(
        self, order: Order = "top_down", similarity: str = "spearman", compare: Compared = "maps", seed: int = 42
    ) -> None:
        _checked(compare, ("maps", "raw", "abs"), "compare")  # before any work starts
        _checked(order, ("top_down", "independent"), "order")
        self.order: Order = order
        self.similarity = similarity
        self.measure = get_similarity(similarity)
        self.compare: Compared = compare
        self.seed = seed

    @property
    def values(self) -> tuple[str, ...]:
        return ("mprt", "mprt_last", "mprt_curve")

    def parameters(self) -> dict[str, Any]:
        return {"order": self.order, "similarity": self.similarity, "compare": self.compare, "seed": self.seed}

    def compute(self, batch: MetricBatch, scorer: Scorer) -> dict[str, dict[str, Tensor]]:
        if batch.explainer_for is None:
            raise ValueError("the randomisation test needs to explain with a re-initialised model (explainer_for)")
        if self.compare == "maps":
            reference = dict(batch.maps)
        else:
            originals = batch.explainer_for(scorer.model)(batch.inputs, batch.classes)
            reference = {m: compared_maps(e, self.compare) for m, e in originals.items()}
        randomised = copy.deepcopy(scorer.model)
        explain = batch.explainer_for(randomised)
        steps: dict[str, list[Tensor]] = {m: [] for m in reference}
        for _ in randomisation_steps(randomised, self.order, self.seed):
            for method, again in explain(batch.inputs, batch.classes).items():
                steps[method].append(_similarities(self.measure, reference[method], compared_maps(again, self.compare)))
        result = {}
        device = batch.inputs.device
        for method, values in steps.items():
            curve = torch.stack(values, dim=1)  # (B, steps)
            result[method] = {
                "mprt": curve.nanmean(dim=1).float().to(device),
                "mprt_last": curve[:, -1].float().to(device),
                "mprt_curve": curve.float().to(device),
            }
        return result
