"""Speed of the head-only perturbation methods and of reference Shapley values, in one process.

    .venv/bin/python benchmarks/bench_perturbation.py [--threads 2] [--check]

1. Ablation-CAM, ResNet50 ``layer4`` (K = 2048), batch 1: pytorch-grad-cam's ``AblationCAM`` (the
   model re-run for every batch of ablated channels) against ours, which runs the head only, on all 2048
   ablations in batches. Target: >= 20x.
2. Score-CAM per image, EfficientNet-Lite0 ``features.16`` (K = 320) and ResNet18 ``layer4`` (K = 512):
   pytorch-grad-cam's ``ScoreCAM`` against ours. Target: faster.
3. Reference Shapley values, EfficientNet-Lite0 ``features.16`` (K = 320, a nonlinear head) on a real
   photo: 1000 antithetic permutations (321,000 coalition values) per image. Target: < 60 s, with the
   standard error reported.
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from collections.abc import Callable

import torch
import torchvision

import liftcam
from liftcam.data import load_image, sample_photos
from liftcam.head import HeadEvaluator
from liftcam.methods import AblationCam, ScoreCam
from liftcam.models import load_model
from liftcam.shapley import image_game, shapley_values
from liftcam.targets import resolve_targets

warnings.filterwarnings("ignore")


def _best_of(fn: Callable[[], object], repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def _quiet_tqdm() -> None:
    """pytorch-grad-cam prints a progress bar per image; silence it."""
    import functools

    import tqdm

    tqdm.tqdm.__init__ = functools.partialmethod(tqdm.tqdm.__init__, disable=True)  # type: ignore[method-assign]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--permutations", type=int, default=1000)
    parser.add_argument("--check", action="store_true", help="exit 1 if a target is missed")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    _quiet_tqdm()
    from pytorch_grad_cam import AblationCAM, ScoreCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    print(f"torch {torch.__version__}, {args.threads} threads, CPU; best of the runs shown")
    ok = True

    torch.manual_seed(0)
    resnet = torchvision.models.resnet50().eval()
    x = torch.randn(1, 3, 224, 224)
    explainer = liftcam.Explainer(resnet, "layer4")
    target = [ClassifierOutputTarget(int(explainer(x, "grad-cam").targets[0]))]
    peer = AblationCAM(model=resnet, target_layers=[resnet.layer4])
    t_peer = _best_of(lambda: peer(input_tensor=x, targets=target), 1)
    t_head = _best_of(lambda: explainer(x, AblationCam()), 3)
    print("\n1. Ablation-CAM, ResNet50 layer4 (K = 2048), batch 1")
    print(f"   pytorch-grad-cam AblationCAM        {t_peer * 1e3:9.0f} ms")
    print(f"   liftcam ablation-cam (head runs)    {t_head * 1e3:9.1f} ms   x{t_peer / t_head:7.0f}")
    ok &= t_peer / t_head >= 20

    print("\n2. Score-CAM, per image (batch 1)")
    lite0 = load_model()
    photo = lite0.preprocessing(load_image(sample_photos()["coffee"]))[None]
    resnet18 = torchvision.models.resnet18().eval()
    for label, model, layer, image in [
        ("EfficientNet-Lite0 features.16 (K = 320)", lite0.model, "features.16", photo),
        ("ResNet18 layer4 (K = 512)", resnet18, "layer4", torch.randn(1, 3, 224, 224)),
    ]:
        module = dict(model.named_modules())[layer]
        ours = liftcam.Explainer(model, layer)
        cls = int(ours(image, "grad-cam").targets[0])
        peer = ScoreCAM(model=model, target_layers=[module])
        t_peer = _best_of(lambda p=peer, i=image, c=cls: p(input_tensor=i, targets=[ClassifierOutputTarget(c)]), 2)
        t_ours = _best_of(lambda e=ours, i=image, c=cls: e(i, ScoreCam(), targets=c), 2)
        print(f"   {label:42s} pytorch-grad-cam {t_peer:6.2f} s   liftcam {t_ours:6.2f} s   x{t_peer / t_ours:5.2f}")
        ok &= t_ours < t_peer

    print(f"\n3. Reference Shapley values, EfficientNet-Lite0 features.16 (K = 320), {args.permutations} permutations")
    explainer = liftcam.Explainer(lite0.model, "features.16")
    captured = explainer.capture(photo)
    classes = resolve_targets(None, explainer.logits(captured))
    start = time.perf_counter()
    evaluator = HeadEvaluator(explainer.split, captured, None, classes)
    game = image_game(evaluator, 0, torch.zeros_like(captured.activations[0]))
    result = shapley_values(game, "permutation", args.permutations, seed=0)
    seconds = time.perf_counter() - start
    print(f"   game: {type(game).__name__}; {result.evaluations} coalition values in {seconds:.1f} s")
    print(f"   standard error: mean {float(result.stderr.mean()):.2g}, max {float(result.stderr.max()):.2g}")
    print(
        f"   efficiency: sum phi - (v(N) - v(0)) = {float(result.values.sum()) - (result.v_full - result.v_empty):.2g}"
    )
    ok &= seconds < 60

    print("\ntargets: ablation >= 20x (head runs); score-cam faster; Shapley reference < 60 s")
    print("result: " + ("all met" if ok else "MISSED"))
    return 0 if ok or not args.check else 1


if __name__ == "__main__":
    sys.exit(main())
