"""Speed of LIFT-CAM on a detection: against the detector's plain forward and pytorch-grad-cam, in one process.

    .venv/bin/python benchmarks/bench_detection.py [--threads 2] [--repeats 5] [--models ...] [--check]

torchvision's Faster R-CNN detectors with random weights (speed does not depend on them; score threshold 0
so that they return detections) on one sample photo at the detectors' own input size. Timed, interleaved
round by round:

* ``forward``: the detector's plain ``torch.inference_mode()`` forward;
* ``lift-cam``: everything liftcam does to explain the first detection, from the image: the detector's
  pass (with the hooks that find the detection's proposal) and LIFT-CAM at the default layer;
* ``grad-cam (pytorch-grad-cam)``: its ``GradCAM`` on the same layer with a target returning that
  detection's score (its recipe's ``FasterRCNNBoxScoreTarget`` adds the box IoU; the score alone is the
  same cost).

Targets (issue 10): LIFT-CAM at most 1.5x the plain forward, and faster than pytorch-grad-cam's GradCAM.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from typing import Any

import torch
import torchvision
import torchvision.transforms.functional as TF
from PIL import Image

from bench_core import _median_times
from liftcam.data import sample_photos
from liftcam.detection import DetectionExplainer

warnings.filterwarnings("ignore")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument(
        "--models",
        nargs="+",
        default=[
            "fasterrcnn_mobilenet_v3_large_320_fpn",
            "fasterrcnn_mobilenet_v3_large_fpn",
            "fasterrcnn_resnet50_fpn",
        ],
    )
    parser.add_argument("--check", action="store_true", help="exit 1 if a target is missed")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from pytorch_grad_cam import GradCAM

    photo = sample_photos()["astronaut"]
    image = TF.to_tensor(Image.open(photo).convert("RGB"))
    print(f"torch {torch.__version__}, {args.threads} threads, one {image.shape[2]} x {image.shape[1]} photo, CPU")
    print(f"median of {args.repeats} interleaved runs after 2 warm-up runs\n")
    print("| model | input | forward (s) | lift-cam (s) | lift-cam / forward | pytorch-grad-cam (s) | speed-up |")
    print("|---|---|---|---|---|---|---|")
    ok = True
    for name in args.models:
        torch.manual_seed(0)
        model: Any = torchvision.models.get_model(name, weights=None, weights_backbone=None, box_score_thresh=0.0)
        model.eval()
        explainer = DetectionExplainer(model)
        layer = dict(model.named_modules())[explainer.layer]
        _, resized = explainer.detect(image)

        def forward(model: Any = model) -> None:
            with torch.inference_mode():
                model([image])

        def lift(explainer: DetectionExplainer = explainer) -> None:
            explainer(image, "lift-cam", detections=[0])

        def peer(model: Any = model, layer: torch.nn.Module = layer) -> None:
            with GradCAM(model=model, target_layers=[layer]) as cam:
                cam(input_tensor=image[None], targets=[lambda out: out["scores"][0]])

        times = _median_times({"forward": forward, "lift": lift, "peer": peer}, args.repeats)
        ratio, speedup = times["lift"] / times["forward"], times["peer"] / times["lift"]
        size = f"{resized.shape[-1]} x {resized.shape[-2]}"
        print(
            f"| {name} | {size} | {times['forward']:.3f} | {times['lift']:.3f} | {ratio:.2f} | "
            f"{times['peer']:.3f} | {speedup:.2f}x |"
        )
        ok = ok and ratio <= 1.5 and speedup > 1.0
    return 0 if ok or not args.check else 1


if __name__ == "__main__":
    sys.exit(main())
