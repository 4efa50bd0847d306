"""Speed of the methods that came from torchcam 0.5, against torchcam's own implementations, in one process.

    .venv/bin/python benchmarks/bench_torchcam.py [--threads 2] [--repeats 3] [--samples 4] [--check]

1. SmoothGrad-CAM++ (4 noisy copies, std 0.3, both sides' defaults): ResNet50 (random weights) ``layer4``,
   a batch of 8 inputs of 224 x 224, the arg-max class of each. torchcam runs the whole model forward and
   backward on every noisy copy; liftcam too (the noise is on the input), with the body's activations
   captured once more for the map.
2. SS-CAM and IS-CAM, per image: the pretrained EfficientNet-Lite0 ``features.16`` (K = 320) on a sample
   photo. Both are one forward pass of the whole model per map and sample (N K per image), so the batch-8
   ResNet50 set-up (2048 maps: 570,000 forward passes for SS-CAM's N = 35) is out of reach on a CPU; N is
   ``--samples`` on both sides (default 4; the cost is linear in N on both).

Both sides timed from the input tensor, interleaved round by round, after a warm-up run; the median shown.
Target (issue 11): each at least as fast as torchcam's.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from collections.abc import Callable
from typing import Any

import torch
import torchvision
from torch import Tensor, nn

from bench_core import _median_times
from liftcam import Explainer
from liftcam.data import load_image, sample_photos
from liftcam.methods import CamMethod, IsCam, SmoothGradCamPlusPlus, SsCam
from liftcam.models import load_model

warnings.filterwarnings("ignore")


def _torchcam(cls: Any, model: nn.Module, layer: str, x: Tensor, classes: list[int], **options: Any) -> None:
    """torchcam's documented use: the extractor's hooks, a forward pass, then the maps of the classes."""
    with cls(model, layer, input_shape=tuple(x.shape[1:]), **options) as extractor:
        extractor(classes, model(x))


def _compare(
    label: str, model: nn.Module, layer: str, x: Tensor, ours: CamMethod, theirs: Any, options: dict[str, Any],
    repeats: int,
) -> float:  # fmt: skip
    explainer = Explainer(model, layer)
    with torch.no_grad():
        classes = model(x).argmax(dim=1).tolist()
    fns: dict[str, Callable[[], object]] = {
        "ours": lambda: explainer(x, ours, targets=classes),
        "peer": lambda: _torchcam(theirs, model, layer, x, classes, **options),
    }
    times = _median_times(fns, repeats, warmup=1)
    speedup = times["peer"] / times["ours"]
    print(f"| {label} | {times['ours']:.2f} | {times['peer']:.2f} | {speedup:.2f}x |", flush=True)
    return speedup


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--samples", type=int, default=4, help="SS-CAM's and IS-CAM's N, on both sides")
    parser.add_argument("--methods", nargs="+", choices=["smoothgrad-cam++", "ss-cam", "is-cam"],
                        default=["smoothgrad-cam++", "ss-cam", "is-cam"])  # fmt: skip
    parser.add_argument("--check", action="store_true", help="exit 1 if a target is missed")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from torchcam.methods import ISCAM, SSCAM, SmoothGradCAMpp

    print(f"torch {torch.__version__}, {args.threads} threads, CPU; median of {args.repeats} interleaved runs\n")
    print("| method, set-up | liftcam (s) | torchcam (s) | speed-up |")
    print("|---|---|---|---|")
    speedups = []
    if "smoothgrad-cam++" in args.methods:
        torch.manual_seed(0)
        resnet = torchvision.models.resnet50().eval()
        x = torch.randn(8, 3, 224, 224)
        label = "smoothgrad-cam++, ResNet50 layer4, batch 8"
        speedups.append(
            _compare(label, resnet, "layer4", x, SmoothGradCamPlusPlus(), SmoothGradCAMpp, {}, args.repeats)
        )
    lite0 = load_model()
    photo = lite0.preprocessing(load_image(sample_photos()["coffee"]))[None]
    n = args.samples
    for name, ours, theirs in [("ss-cam", SsCam(n_samples=n), SSCAM), ("is-cam", IsCam(n_samples=n), ISCAM)]:
        if name in args.methods:
            label = f"{name} (N = {n}), Lite0 features.16, 1 photo"
            speedups.append(
                _compare(label, lite0.model, "features.16", photo, ours, theirs, {"num_samples": n}, args.repeats)
            )
    ok = all(s >= 1.0 for s in speedups)
    print("\ntarget: each at least as fast as torchcam's; result: " + ("met" if ok else "MISSED"))
    return 0 if ok or not args.check else 1


if __name__ == "__main__":
    sys.exit(main())
