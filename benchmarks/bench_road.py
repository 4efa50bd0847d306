"""Speed of ROAD (MoRF, LeRF and combined, 9 percentiles) for six methods, against pytorch-grad-cam's.

    .venv/bin/python benchmarks/bench_road.py [--threads 2] [--images 64] [--batch 32] [--check]

The images are bench_metrics.py's (the 8 sample photos in 8 variants each; ``--images`` takes the first
N), preprocessed for the pretrained EfficientNet-Lite0; the maps of six gradient-family methods at its
default layer are computed once. Timed, one after the other:

* liftcam's :class:`~liftcam.metrics.Road`: MoRF, LeRF and the combined value in one pass, every masked
  and imputed input of a batch scored in shared batches;
* pytorch-grad-cam's ``ROADCombined`` per method, as documented (it runs ``ROADMostRelevantFirstAverage``
  and ``ROADLeastRelevantFirstAverage``), with the softmax probability as target.

Both impute with noise (0.01), so the values agree only on average; the noise-free values are equal
(tests/test_road.py). Target (issue 11): liftcam at least 2x faster.
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings

import numpy as np
import torch

from bench_metrics import METHODS, sample_maps
from liftcam.metrics import MetricBatch, Road, Scorer

warnings.filterwarnings("ignore")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--check", action="store_true", help="exit 1 if the target is missed")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from pytorch_grad_cam.metrics.road import ROADCombined
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputSoftmaxTarget

    model, x, maps, classes = sample_maps(args.batch, args.threads, args.images)

    start = time.perf_counter()
    scorer = Scorer(model, "softmax")
    ours: dict[str, list[np.ndarray]] = {m: [] for m in METHODS}
    for first in range(0, x.shape[0], args.batch):
        part = slice(first, first + args.batch)
        batch = MetricBatch(x[part], classes[part], {m: v[part] for m, v in maps.items()})
        for m, values in Road().compute(batch, scorer).items():
            ours[m].append(values["road"].numpy())
    ours_s = time.perf_counter() - start

    start = time.perf_counter()
    theirs: dict[str, list[np.ndarray]] = {m: [] for m in METHODS}
    for first in range(0, x.shape[0], args.batch):
        part = slice(first, first + args.batch)
        targets = [ClassifierOutputSoftmaxTarget(int(c)) for c in classes[part]]
        for m in METHODS:
            theirs[m].append(ROADCombined()(x[part], maps[m][part].numpy(), targets, model))
    theirs_s = time.perf_counter() - start

    print("\n| method | liftcam road (mean) | pytorch-grad-cam road (mean) |")
    print("|---|---|---|")
    for m in METHODS:
        print(f"| {m} | {np.concatenate(ours[m]).mean():.4f} | {np.concatenate(theirs[m]).mean():.4f} |")
    speedup = theirs_s / ours_s
    print(f"\nliftcam {ours_s:.1f} s, pytorch-grad-cam {theirs_s:.1f} s: {speedup:.2f}x faster (target >= 2x)")
    return 0 if speedup >= 2 or not args.check else 1


if __name__ == "__main__":
    sys.exit(main())
