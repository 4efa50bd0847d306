"""Does SS-CAM's noise swamp its masks? SS-CAM at several noise levels on EfficientNet-Lite0's block layer.

    .venv/bin/python benchmarks/ss_cam_noise.py [--photos 2] [--stds 2.0 0.5 0.1 0.0] [--seeds 0 1]

SS-CAM (torchcam's definition, ``src/liftcam/methods/ss_cam.py``) adds ``N(0, std^2)`` noise per pixel to each
mask ``M_k`` in [0, 1] and averages the target logit's change over ``n_samples`` (35) draws. With torchcam's
default ``std = 2.0`` the noise is twice the mask's whole range. If it swamps the masks, two seeds give
unrelated coefficients (low seed-to-seed r), the coefficients miss the Shapley values, and the maps score like
a random baseline. Printed per noise level, mean over the photos: the Pearson r of the coefficients between the
first two seeds, the Pearson r with the layer's reference Shapley values (the paper table's fidelity run,
matched by the photo's SHA-256), and Average Drop, ADD, deletion and insertion (20 steps, as in the paper
table) of the first seed's maps. ``std = 0`` needs one draw (the noise-free masks, Score-CAM's inputs with
SS-CAM's softmax over the logit changes). About 8 minutes per (photo, std > 0, seed) on two threads.
"""

from __future__ import annotations

import argparse
import hashlib
import statistics
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

import liftcam
from liftcam.data import load_image, sample_photos
from liftcam.methods.ss_cam import SsCam
from liftcam.metrics import MetricBatch, Scorer, get_metric
from liftcam.metrics.similarity import pearson
from liftcam.models import load_model
from liftcam.runs.explain import crops_to_batch

SHAPLEY = Path(__file__).parent / "results/paper-table/lite0/block/fidelity/shapley"
METRICS = ("average_drop", "average_drop_in_deletion", "deletion", "insertion")


def reference_shapley() -> dict[str, Tensor]:
    """The paper table's reference Shapley values at ``features.16``, by the photo's SHA-256."""
    values = {}
    for cache in sorted(SHAPLEY.glob("*.npz")):
        with np.load(cache) as saved:
            values[str(saved["digest"])] = torch.from_numpy(saved["values"])
    return values


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=int, default=2, help="the first N sample photos")
    parser.add_argument("--stds", type=float, nargs="+", default=[2.0, 0.5, 0.1, 0.0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--n-samples", type=int, default=35)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    loaded = load_model("efficientnet-lite0")
    photos = list(sample_photos().values())[: args.photos]
    shapley = reference_shapley()
    scorer = Scorer(loaded.model)
    metrics = [get_metric(m) for m in METRICS[:2]] + [get_metric(m, step=0.05) for m in METRICS[2:]]
    explainer = liftcam.Explainer(loaded.model, "features.16")
    rows: dict[float, dict[str, list[float]]] = {}
    for path in photos:
        _, x = crops_to_batch(loaded, [load_image(path)])
        reference = shapley.get(hashlib.sha256(Path(path).read_bytes()).hexdigest())
        for std in args.stds:
            seeds = args.seeds[:1] if std == 0 else args.seeds
            n_samples = 1 if std == 0 else args.n_samples
            runs = [explainer(x, SsCam(n_samples=n_samples, std=std, seed=seed)) for seed in seeds]
            row = rows.setdefault(std, {})
            weights = [run.weights[0] for run in runs if run.weights is not None]
            if len(weights) > 1:
                row.setdefault("seed r", []).append(pearson(weights[0], weights[1]))
            if reference is not None:
                row.setdefault("Shapley r", []).append(pearson(weights[0], reference))
            # softmax over K logit changes: how many channels carry the map (1 / sum w^2; K if uniform)
            row.setdefault("top w", []).append(float(weights[0].max()))
            row.setdefault("channels", []).append(float(1 / (weights[0].double() ** 2).sum()))
            batch = MetricBatch(x, runs[0].targets, {"ss-cam": runs[0].maps})
            for metric in metrics:
                row.setdefault(metric.name, []).append(float(metric.compute(batch, scorer)["ss-cam"][metric.name][0]))
            print(f"{Path(path).name} std {std}: " + ", ".join(f"{k} {v[-1]:.3f}" for k, v in row.items()), flush=True)
    columns = ["seed r", "Shapley r", "top w", "channels", *METRICS]
    title = f"SS-CAM at features.16 of EfficientNet-Lite0, {len(photos)} photos, {args.n_samples} draws"
    print(f"\n{title}; mean over photos\n")
    print("| std | " + " | ".join(columns) + " |")
    print("|---|" + "---|" * len(columns))
    for std, row in rows.items():
        cells = [f"{statistics.fmean(row[c]):.3f}" if c in row else "–" for c in columns]
        print(f"| {std} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
