"""Speed of LIFT-CAM on vision transformers: against a plain forward and pytorch-grad-cam, in one process.

    .venv/bin/python benchmarks/bench_transformers.py [--batch 8] [--threads 2] [--repeats 5] [--check]

torchvision's ViT-B/16 and Swin-T (random weights: speed does not depend on them), at liftcam's default
layer (ViT: the residual stream after the last-but-one block, tokens seen as maps; Swin: the last stage,
channels-last). Timed, interleaved round by round: a plain ``torch.inference_mode()`` forward, LIFT-CAM
and Grad-CAM from an ``Explainer`` built once, and pytorch-grad-cam's ``GradCAM`` on the same layer with the
``reshape_transform`` its documentation gives for these models.
Targets (issue 9): LIFT-CAM <= 1.3x the plain forward; >= 1.5x faster than pytorch-grad-cam's GradCAM.
"""

from __future__ import annotations

import argparse
import sys
import warnings

import torch
import torchvision
from torch import Tensor, nn

import liftcam
from bench_core import _median_times
from liftcam.models import default_layer

warnings.filterwarnings("ignore")


def _vit_reshape(tokens: Tensor) -> Tensor:
    side = int((tokens.shape[1] - 1) ** 0.5)
    return tokens[:, 1:].reshape(tokens.shape[0], side, side, tokens.shape[2]).permute(0, 3, 1, 2)


def _swin_reshape(t: Tensor) -> Tensor:
    return t.permute(0, 3, 1, 2)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--models", nargs="+", default=["vit_b_16", "swin_t"])
    parser.add_argument("--check", action="store_true", help="exit 1 if a target is missed")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from pytorch_grad_cam import GradCAM

    print(f"torch {torch.__version__}, {args.threads} threads, batch {args.batch} x 3 x 224 x 224, CPU")
    print(f"median of {args.repeats} interleaved runs after 2 warm-up runs\n")
    x = torch.randn(args.batch, 3, 224, 224)
    ok = True
    for name in args.models:
        torch.manual_seed(0)
        model = torchvision.models.get_model(name, weights=None).eval()
        for module in model.modules():  # ViT's head starts at zero: scores would all be 0
            if isinstance(module, nn.Linear) and not bool(module.weight.any()):
                nn.init.normal_(module.weight, std=0.02)
        layer = default_layer(name, model)
        explainer = liftcam.Explainer(model, layer)
        target = dict(model.named_modules())[layer]
        reshape = _vit_reshape if name.startswith("vit") else _swin_reshape
        peer = GradCAM(model=model, target_layers=[target], reshape_transform=reshape)

        def forward(model: nn.Module = model) -> object:
            with torch.inference_mode():
                return model(x)

        t = _median_times(
            {
                "forward": forward,
                "lift-cam": lambda e=explainer: e(x, "lift-cam"),
                "grad-cam": lambda e=explainer: e(x, "grad-cam"),
                "pytorch-grad-cam GradCAM": lambda p=peer: p(input_tensor=x, targets=None),
            },
            args.repeats,
        )
        ratio = t["lift-cam"] / t["forward"]
        speedup = t["pytorch-grad-cam GradCAM"] / t["lift-cam"]
        ok &= ratio <= 1.3 and speedup >= 1.5
        print(f"{name} at {layer}:")
        for label, seconds in t.items():
            print(f"  {label:28s} {seconds * 1e3:9.1f} ms")
        print(f"  lift-cam / forward {ratio:.3f} (target <= 1.3); GradCAM / lift-cam x{speedup:.2f} (target >= 1.5)\n")
        peer.activations_and_grads.release()
    print("result: " + ("all met" if ok else "MISSED"))
    return 0 if ok or not args.check else 1


if __name__ == "__main__":
    sys.exit(main())
