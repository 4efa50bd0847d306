"""Speed of LIFT-CAM against a plain forward pass and against pytorch-grad-cam, in one process.

    .venv/bin/python benchmarks/bench_core.py [--batch 8] [--threads 2] [--repeats 7] [--check]

For ResNet50, VGG16 (random weights: speed does not depend on them) and the pretrained
EfficientNet-Lite0, at each model's default layer: the median wall time of a plain
``torch.inference_mode()`` forward, of LIFT-CAM (an ``Explainer`` built once, as one builds a
pytorch-grad-cam object once) and of one-shot ``liftcam.explain`` (which also traces the model);
on ResNet50 also pytorch-grad-cam's ``GradCAM`` and our ``grad-cam``. Measurements of the compared
callables are interleaved round by round so that machine drift hits all of them alike.
Targets (issue 2): LIFT-CAM <= 1.15x the plain forward; >= 2x faster than pytorch-grad-cam's GradCAM.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import warnings
from collections.abc import Callable

import torch
import torchvision

import liftcam
from liftcam.models import load_model

warnings.filterwarnings("ignore")


def _median_times(fns: dict[str, Callable[[], object]], repeats: int, warmup: int = 2) -> dict[str, float]:
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--models", nargs="+", default=["resnet50", "vgg16", "efficientnet-lite0"])
    parser.add_argument("--check", action="store_true", help="exit 1 if a target is missed")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, {args.threads} threads, batch {args.batch} x 3 x 224 x 224, CPU")
    print(f"median of {args.repeats} interleaved runs after 2 warm-up runs\n")
    x = torch.randn(args.batch, 3, 224, 224)
    ok = True
    header = f"{'model':20s} {'layer':13s} {'forward ms':>10s} {'lift-cam ms':>11s} {'ratio':>6s} {'one-shot':>9s}"
    print(header)
    rows = []
    for name in args.models:
        loaded = load_model(name)
        model, layer = loaded.model, loaded.default_layer
        explainer = liftcam.Explainer(model, layer)

        def forward(model: torch.nn.Module = model) -> object:
            with torch.inference_mode():
                return model(x)

        t = _median_times(
            {
                "forward": forward,
                "lift-cam": lambda e=explainer: e(x, "lift-cam"),
                "one-shot": lambda m=model, lay=layer: liftcam.explain(m, x, lay, "lift-cam"),
            },
            args.repeats,
        )
        ratio = t["lift-cam"] / t["forward"]
        ok &= ratio <= 1.15
        rows.append((name, ratio))
        print(
            f"{name:20s} {layer:13s} {t['forward'] * 1e3:10.1f} {t['lift-cam'] * 1e3:11.1f} "
            f"{ratio:6.3f} {t['one-shot'] * 1e3:9.1f}"
        )

    try:
        from pytorch_grad_cam import GradCAM
    except ImportError:
        print("\npytorch-grad-cam not installed: skipping the peer comparison")
        return 0 if ok or not args.check else 1
    model = torchvision.models.resnet50().eval()
    explainer = liftcam.Explainer(model, "layer4")
    peer = GradCAM(model=model, target_layers=[model.layer4])
    t = _median_times(
        {
            "pytorch-grad-cam GradCAM": lambda: peer(input_tensor=x, targets=None),
            "liftcam lift-cam": lambda: explainer(x, "lift-cam"),
            "liftcam grad-cam": lambda: explainer(x, "grad-cam"),
        },
        args.repeats,
    )
    base = t["pytorch-grad-cam GradCAM"]
    print(f"\nResNet50 layer4, batch {args.batch}: time and speed-up over pytorch-grad-cam's GradCAM")
    for label, seconds in t.items():
        print(f"  {label:28s} {seconds * 1e3:9.1f} ms   x{base / seconds:5.2f}")
    speedup = base / t["liftcam lift-cam"]
    ok &= speedup >= 2.0
    print("\ntargets: lift-cam/forward <= 1.15 on every model; lift-cam >= 2x faster than GradCAM")
    print("result: " + ("all met" if ok else "MISSED"))
    return 0 if ok or not args.check else 1


if __name__ == "__main__":
    sys.exit(main())
