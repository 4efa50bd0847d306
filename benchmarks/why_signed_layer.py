"""Why do the Shapley-faithful methods lose on Average Drop and ADD at EfficientNet-Lite0's signed last-block output?

    .venv/bin/python benchmarks/why_signed_layer.py [--layers features.16 features.17] [--step 0.02]

At ``features.16`` (the last MBConv block's output: batch norm, no activation, so maps are signed) LIFT-CAM's
coefficients are the Shapley values of the maps (fidelity r 0.98), yet its maps have the worst Average Drop.
The hypothesis tested here: the coefficients are right, the CAM form is not. DeepLIFT splits the score's
change into per-position contributions ``C_k(x, y) = m_k(x, y) (A_k(x, y) - R_k(x, y))`` with
``alpha_k = sum_xy C_k(x, y)``; the CAM map draws ``alpha_k A_k(x, y)`` instead, which has the sign of
``C_k(x, y)`` only where ``A_k(x, y)`` has the sign of the channel's total. Where a channel's contribution
comes from negative activations (``m < 0``, ``A < 0``: "this feature is absent"), ``alpha_k > 0`` and the CAM
form lights up the places where the channel is *positive*, the wrong places. Gradient-CAMs escape this:
Grad-CAM's ``w_k`` is the mean gradient, whose sign follows ``m``, not the product.

Printed per layer, over the sample photos (mean over images):

- ``|C| on A<0``: the share of DeepLIFT's contribution mass carried by negative activations;
- ``CAM sign ok``: the share of the contribution mass where ``alpha_k A_k(x, y)`` has the sign of ``C_k(x, y)``;
- AD, IC, ADD, deletion and insertion AUC of LIFT-CAM, of DeepLIFT's own map ``sum_k C_k`` (``lift-contrib``),
  of Grad-CAM and of HiResCAM (``sum_k g_k A_k``, the gradient analogue of ``lift-contrib``).
"""

from __future__ import annotations

import argparse
from typing import Any

import torch
from torch import Tensor

import liftcam
from liftcam.data import load_image, sample_photos
from liftcam.methods.base import MapMethod, MethodInputs, MethodResult, Need
from liftcam.metrics import MetricBatch, Scorer, get_metric
from liftcam.models import load_model
from liftcam.runs.explain import crops_to_batch


class LiftContribution(MapMethod):
    """DeepLIFT's per-position contributions summed over channels: ``sum_k m_k (A_k - R_k)``."""

    name = "lift-contrib"
    needs = frozenset({Need.DEEPLIFT})
    single_pass = True
    uses_reference = True
    seen: list[tuple[Tensor, Tensor]] = []  # noqa: RUF012 - (contributions, activations) for the statistics

    def compute(self, inputs: MethodInputs) -> MethodResult:
        contributions = inputs.require("multipliers") * (inputs.activations - inputs.require("reference"))
        LiftContribution.seen.append((contributions.detach(), inputs.activations.detach()))
        return MethodResult.of_terms(contributions)


def sign_statistics(contributions: Tensor, activations: Tensor) -> tuple[Tensor, Tensor]:
    """Per image: the share of |C| on negative activations, and of |C| where sign(alpha_k A_k) = sign(C)."""
    mass = contributions.abs()
    total = mass.flatten(1).sum(dim=1)
    negative = (mass * (activations < 0)).flatten(1).sum(dim=1) / total
    alpha = contributions.flatten(2).sum(dim=2)[:, :, None, None]
    agree = torch.sign(alpha * activations) == torch.sign(contributions)
    return negative, (mass * agree).flatten(1).sum(dim=1) / total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", nargs="+", default=["features.16", "features.17"])
    parser.add_argument("--step", type=float, default=0.02, help="deletion/insertion step (fraction of pixels)")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    loaded = load_model("efficientnet-lite0")
    photos = sample_photos()
    _, x = crops_to_batch(loaded, [load_image(p) for p in photos.values()])
    scorer = Scorer(loaded.model)
    metrics = [get_metric(m) for m in ("average_drop", "increase_in_confidence", "average_drop_in_deletion")]
    metrics += [get_metric("deletion", step=args.step), get_metric("insertion", step=args.step)]
    methods: list[Any] = ["lift-cam", LiftContribution(), "grad-cam", "hires-cam"]
    print(f"EfficientNet-Lite0, {len(photos)} sample photos, reference zeros; mean over images\n")
    for layer in args.layers:
        LiftContribution.seen.clear()
        explained = liftcam.Explainer(loaded.model, layer)(x, methods)
        contributions, activations = LiftContribution.seen[0]
        negative, agree = sign_statistics(contributions, activations)
        classes = explained["lift-cam"].targets
        batch = MetricBatch(x, classes, {name: e.maps for name, e in explained.items()})
        values: dict[str, dict[str, float]] = {name: {} for name in explained}
        for metric in metrics:
            for method, result in metric.compute(batch, scorer).items():
                values[method][metric.name] = float(result[metric.name].float().mean())
        print(f"## `{layer}` (activations {tuple(activations.shape[1:])})\n")
        print(f"|C| on A<0: {100 * float(negative.mean()):.1f} %   CAM sign ok: {100 * float(agree.mean()):.1f} %\n")
        print("| map | AD ↓ | IC ↑ | ADD ↑ | deletion ↓ | insertion ↑ |")
        print("|---|---|---|---|---|---|")
        for method, v in values.items():
            row = [v["average_drop"], v["increase_in_confidence"], v["average_drop_in_deletion"]]
            print(
                f"| {method} | "
                + " | ".join(f"{r:.1f}" for r in row)
                + f" | {v['deletion']:.3f} | {v['insertion']:.3f} |"
            )
        print()


if __name__ == "__main__":
    main()
