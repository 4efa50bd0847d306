"""Speed of the methods that came from pytorch-grad-cam 1.5, against its own implementations, in one process.

    .venv/bin/python benchmarks/bench_methods.py [--threads 2] [--repeats 5] [--batch 8] [--check]

ResNet50 (random weights: speed does not depend on them), ``layer4``, a batch of 224 x 224 inputs, the
arg-max class of each image. Both sides timed from the input tensor, interleaved round by round: liftcam
through a reused ``Explainer`` (the body once without autograd, the head as the method needs), and
pytorch-grad-cam's class (a forward and backward of the whole model with hooks, numpy for the maps).
``eigen_smooth`` and ``aug_smooth`` are timed on Grad-CAM.

Target (issue 11): each at least as fast as the peer's; those computed on the head alone (FEM, Finer-CAM,
EigenCAM, EigenGradCAM) far faster.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import sys
import warnings
from collections.abc import Callable
from typing import Any

import torch
import torchvision

from bench_core import _median_times
from liftcam import Explainer

warnings.filterwarnings("ignore")

#: liftcam's method, pytorch-grad-cam's class, and the options of each call.
CASES: dict[str, tuple[str, str, dict[str, Any]]] = {
    "grad-cam-elementwise": ("grad-cam-elementwise", "GradCAMElementWise", {}),
    "eigen-cam": ("eigen-cam", "EigenCAM", {}),
    "eigen-grad-cam": ("eigen-grad-cam", "EigenGradCAM", {}),
    "kpca-cam": ("kpca-cam", "KPCA_CAM", {}),
    "fem": ("fem", "FEM", {}),
    "finer-cam": ("finer-cam", "FinerCAM", {}),
    "full-grad": ("full-grad", "FullGrad", {}),
    "random-cam": ("random-cam", "RandomCAM", {}),
    "grad-cam, eigen_smooth": ("grad-cam", "GradCAM", {"eigen_smooth": True}),
    "grad-cam, aug_smooth": ("grad-cam", "GradCAM", {"aug_smooth": True}),
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--cases", nargs="+", default=list(CASES))
    parser.add_argument("--check", action="store_true", help="exit 1 if a target is missed")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    import pytorch_grad_cam
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    torch.manual_seed(0)
    model = torchvision.models.resnet50().eval()
    x = torch.randn(args.batch, 3, 224, 224)
    with torch.no_grad():
        classes = model(x).argmax(dim=1).tolist()
    targets = [ClassifierOutputTarget(c) for c in classes]
    explainer = Explainer(model, "layer4")
    print(
        f"torch {torch.__version__}, {args.threads} threads, ResNet50 layer4, batch {args.batch} x 3 x 224 x 224, CPU"
    )
    print(f"median of {args.repeats} interleaved runs after 2 warm-up runs\n")
    print("| method | liftcam (s) | pytorch-grad-cam (s) | speed-up |")
    print("|---|---|---|---|")
    ok = True
    for case in args.cases:
        method, peer_name, options = CASES[case]
        peer_class = getattr(pytorch_grad_cam, peer_name)

        def ours(method: str = method, options: dict[str, Any] = options) -> None:
            explainer(x, method, **options)

        def peer(peer_class: Any = peer_class, options: dict[str, Any] = options) -> None:
            layers = [] if peer_class.__name__ == "FullGrad" else [model.layer4]
            with contextlib.redirect_stdout(io.StringIO()), peer_class(model=model, target_layers=layers) as cam:
                chosen = None if peer_class.__name__ == "FinerCAM" else targets  # its arg-max comparison
                cam(input_tensor=x, targets=chosen, **options)

        fns: dict[str, Callable[[], object]] = {"ours": ours, "peer": peer}
        times = _median_times(fns, args.repeats)
        speedup = times["peer"] / times["ours"]
        ok &= speedup >= 1.0
        print(f"| {case} | {times['ours']:.3f} | {times['peer']:.3f} | {speedup:.1f}x |")
        sys.stdout.flush()
    return 0 if ok or not args.check else 1


if __name__ == "__main__":
    sys.exit(main())
