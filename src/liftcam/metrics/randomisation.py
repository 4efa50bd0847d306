"""Model parameter randomisation (Adebayo et al., NeurIPS 2018), Quantus's ``MPRT``: a map that depends on
what the model learned must change when the model's parameters are re-initialised.

The layers with parameters (every module with ``reset_parameters``) are re-initialised one by one, from the
output back (``"top_down"``: cascading, each step keeping the earlier ones) or each alone, in the model's
order (``"independent"``),
each with the generator seeded ``seed + 1`` as Quantus does; after each step the method explains the same
inputs and classes again, and the Spearman rank correlation (average ranks for ties) between the original map
and the new one is recorded per image. Lower is better: a map that stays the same ignores the parameters.

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
from typing import Literal

import torch
from torch import Tensor, nn

from ..errors import LiftCamError
from ..explain import Explainer, Explanation
from ..maps import upsample
from ..methods import CamMethod
from ..targets import Targets
from .similarity import Similarity, get_similarity

Order = Literal["top_down", "independent"]
Compared = Literal["maps", "raw", "abs"]


def compared_maps(explanation: Explanation, compare: Compared) -> Tensor:
    """The maps (B, H, W) that the test compares: the user's maps, the signed raw map or its absolute value."""
    if compare == "maps":
        return explanation.maps
    if compare not in ("raw", "abs"):
        raise LiftCamError(f"compare must be 'maps', 'raw' or 'abs', not {compare!r}")
    raw = upsample(explanation.raw, explanation.maps.shape[1:])
    return raw.abs() if compare == "abs" else raw


def randomised_layers(model: nn.Module) -> list[str]:
    """The modules re-initialised, in the model's order (``named_modules`` with ``reset_parameters``)."""
    return [name for name, module in model.named_modules() if hasattr(module, "reset_parameters")]


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
    trained = copy.deepcopy(randomised.state_dict()) if order == "independent" else None
    modules = [(name, module) for name, module in randomised.named_modules() if hasattr(module, "reset_parameters")]
    if order == "top_down":
        modules = modules[::-1]

    def similarities(again: Explanation) -> Tensor:
        maps = compared_maps(again, compare)
        return torch.tensor([measure(a, b) for a, b in zip(reference, maps, strict=True)], dtype=torch.float64)

    scores = {"original": similarities(original)}
    with torch.random.fork_rng(devices=[]):  # the global generator, seeded per step, is restored afterwards
        for name, module in modules:
            if trained is not None:
                randomised.load_state_dict(trained)
            torch.manual_seed(seed + 1)
            with torch.no_grad():
                module.reset_parameters()
            again = explainer(x, method, targets if callable(targets) else classes)
            scores[name] = similarities(again)
    return scores
