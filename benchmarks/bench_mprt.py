"""Speed of the model parameter randomisation test (cascading, top-down) for Grad-CAM, against Quantus's MPRT.

    .venv/bin/python benchmarks/bench_mprt.py [--threads 2] [--batch 8] [--model resnet18] [--check]

A torchvision model with random weights (speed does not depend on them) at its last stage, a batch of
224 x 224 inputs, every module with parameters re-initialised in turn (41 steps for ResNet18). Timed one
after the other:

* liftcam's ``model_parameter_randomisation``: the model copied once, its split made once and reused at every
  step (the copy's parameters change in place), Grad-CAM from the head alone;
* Quantus's ``MPRT`` with pytorch-grad-cam's ``GradCAM`` as its explain function (a Quantus user brings
  their own), on the same layer and classes.

Both give the same correlations where the maps agree (tests/test_quantus_oracle.py checks the equality with
liftcam's Grad-CAM as Quantus's explain function). Target (issue 11): liftcam at least 2x faster.
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings

import numpy as np
import torch
import torchvision

import liftcam
from liftcam.metrics import model_parameter_randomisation

warnings.filterwarnings("ignore")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--model", default="resnet18")
    parser.add_argument("--check", action="store_true", help="exit 1 if the target is missed")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    import quantus
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    torch.manual_seed(0)
    model = torchvision.models.get_model(args.model).eval()
    layer = "layer4"
    x = torch.randn(args.batch, 3, 224, 224)
    first = liftcam.explain(model, x, layer, "grad-cam")
    print(f"torch {torch.__version__}, {args.threads} threads, CPU; {args.model} {layer}, batch {args.batch}, "
          f"{len(liftcam.metrics.randomisation.randomised_layers(model))} steps")  # fmt: skip

    start = time.perf_counter()
    ours = model_parameter_randomisation(model, x, layer, "grad-cam", order="top_down", seed=42)
    ours_s = time.perf_counter() - start

    def explain(model: torch.nn.Module, inputs: np.ndarray, targets: np.ndarray, **kwargs: object) -> np.ndarray:
        with GradCAM(model=model, target_layers=[dict(model.named_modules())[layer]]) as cam:
            maps = cam(input_tensor=torch.from_numpy(np.asarray(inputs)),
                       targets=[ClassifierOutputTarget(int(t)) for t in targets])  # fmt: skip
        return maps[:, None]

    start = time.perf_counter()
    metric = quantus.MPRT(layer_order="top_down", seed=42, disable_warnings=True, display_progressbar=False)
    theirs = metric(model=model, x_batch=x.numpy(), y_batch=first.targets.numpy(), a_batch=first.maps[:, None].numpy(),
                    explain_func=explain, device="cpu", batch_size=args.batch)  # fmt: skip
    theirs_s = time.perf_counter() - start

    last = list(ours)[-1]
    print(f"mean correlation after the last step ({last}): liftcam {float(ours[last].mean()):.3f}, "
          f"Quantus {float(np.mean(theirs[last])):.3f}")  # fmt: skip
    speedup = theirs_s / ours_s
    print(f"liftcam {ours_s:.1f} s, Quantus {theirs_s:.1f} s: {speedup:.2f}x faster (target >= 2x)")
    return 0 if speedup >= 2 or not args.check else 1


if __name__ == "__main__":
    sys.exit(main())
