"""Coverage of the model zoo: every torchvision classifier and a list of timm architectures, random weights.

    .venv/bin/python benchmarks/zoo.py [--source torchvision|timm|both] [--methods fast|all|NAME ...]
                                       [--only NAME ...] [--batch 2] [--size 224] [--markdown FILE]

For each model, at its default layer (``liftcam.models.default_layer`` for torchvision names,
``guess_layer`` for timm): every method on a batch of random images, ``ok`` or the first line of the
error, LIFT-CAM's relative summation-to-delta residual ``max |delta| / max(1, |s|)`` and the time of one
explanation. Random weights: classifier layers that are initialised to zero (torchvision's ViT head)
are re-initialised so that scores are not all zero. Nothing is downloaded.
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings

import torch
import torchvision
from torch import nn

import liftcam
from liftcam.models import available_models, default_layer, guess_layer

warnings.filterwarnings("ignore")

TIMM = [
    "vit_tiny_patch16_224", "deit_tiny_patch16_224", "deit_tiny_distilled_patch16_224", "beit_base_patch16_224",
    "eva02_tiny_patch14_224", "vit_small_patch16_224.augreg_in21k", "vit_base_patch16_reg4_gap_256",
    "swin_tiny_patch4_window7_224", "swinv2_tiny_window8_256", "maxvit_tiny_tf_224", "coatnet_0_rw_224",
    "convnext_atto", "convnextv2_atto", "mobilevit_xxs", "efficientvit_b0", "fastvit_t8", "levit_128s",
    "pvt_v2_b0", "poolformer_s12", "caformer_s18", "edgenext_xx_small", "efficientformer_l1", "repvit_m0_9",
    "mobilenetv4_conv_small", "ghostnet_100", "regnetx_002", "resnet18", "efficientnet_b0", "hrnet_w18_small",
    "inception_v3", "xception41", "dla34", "densenet121", "mixer_b16_224", "resmlp_12_224", "cait_xxs24_224",
    "xcit_nano_12_p16_224", "crossvit_tiny_240", "tnt_s_patch16_224", "gcvit_xxtiny", "nextvit_small",
    "tiny_vit_5m_224", "hgnetv2_b0", "rexnet_100", "mobilenetv3_small_100", "vgg11", "cspresnet50", "dpn68",
    "sequencer2d_s", "twins_svt_small",
]  # fmt: skip


def _randomise_zero_heads(model: nn.Module) -> None:
    for module in model.modules():
        if isinstance(module, nn.Linear) and not bool(module.weight.any()):
            nn.init.normal_(module.weight, std=0.02)


def _models(source: str, only: list[str]) -> list[tuple[str, str]]:
    names: list[tuple[str, str]] = []
    if source in ("torchvision", "both"):
        names += [("torchvision", n) for n in available_models() if n != "efficientnet-lite0"]
    if source in ("timm", "both"):
        names += [("timm", n) for n in TIMM]
    return [(s, n) for s, n in names if not only or n in only]


def _build(source: str, name: str, size: int) -> tuple[nn.Module, str, int]:
    if source == "torchvision":
        model = torchvision.models.get_model(name, weights=None)
        size = 299 if name == "inception_v3" else int(getattr(model, "image_size", size))
        layer = default_layer(name, model)
    else:
        import timm

        model = timm.create_model(name, pretrained=False).eval()
        size = int(model.default_cfg.get("input_size", (3, size, size))[-1])
        layer = guess_layer(model, name, size)
    _randomise_zero_heads(model)
    return model.eval(), layer, size


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", default="both", choices=["torchvision", "timm", "both"])
    parser.add_argument("--methods", nargs="+", default=["fast"])
    parser.add_argument("--only", nargs="*", default=[])
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--markdown", default=None, help="also write the table to this file")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    groups = {"fast": list(liftcam.methods.GRADIENT_FAMILY), "all": list(liftcam.METHODS)}
    methods = groups.get(args.methods[0], args.methods) if len(args.methods) == 1 else args.methods
    rows = ["| source | model | layer | layout | " + " | ".join(methods) + " | lift-cam residual | ms |"]
    rows.append("|---" * (len(methods) + 6) + "|")
    totals = {m: 0 for m in methods}
    count = 0
    for source, name in _models(args.source, args.only):
        torch.manual_seed(0)
        try:
            model, layer, size = _build(source, name, args.size)
            explainer = liftcam.Explainer(model, layer)
        except Exception as exc:  # a model that cannot be built or split: one row, the first line
            rows.append(f"| {source} | {name} | - | - | " + " | ".join(["-"] * len(methods)) + f" | {_first(exc)} | |")
            print(rows[-1], flush=True)
            continue
        count += 1
        x = torch.randn(args.batch, 3, size, size)
        cells, residual, ms = [], "-", 0.0
        for method in methods:
            start = time.perf_counter()
            try:
                exp = explainer(x, method)
            except Exception as exc:
                # cam is defined for a GAP + Linear head only: not a failure elsewhere
                not_gap = method == "cam" and "global average pooling then one Linear" in str(exc)
                cells.append("n/a: not GAP + Linear" if not_gap else _first(exc))
                continue
            if method == "lift-cam":
                ms = (time.perf_counter() - start) * 1e3
                assert exp.delta is not None
                residual = f"{float(exp.delta.abs().max()) / max(1.0, float(exp.scores.abs().max())):.1e}"
            cells.append("ok")
            totals[method] += 1
        view = explainer.split.view
        layout = "maps" if view is None else view.description
        rows.append(
            f"| {source} | {name} | `{layer}` | {layout} | " + " | ".join(cells) + f" | {residual} | {ms:.0f} |"
        )
        print(rows[-1], flush=True)
    summary = ", ".join(f"{m} {totals[m]}/{count}" for m in methods)
    rows.append("")
    rows.append(f"Explained: {summary}.")
    print(rows[-1])
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write("\n".join(rows) + "\n")
    return 0


def _first(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}".splitlines()[0]
    return text[:140].replace("|", "/")


if __name__ == "__main__":
    sys.exit(main())
