"""``liftcam evaluate``: faithfulness and localisation metrics of CAM methods over an image set.

One record per (image, method) is appended to the run's record file as soon as it is computed; the
same command resumes an interrupted run and refuses a run directory made with other settings.

Batches are fixed by image index: batch ``j`` holds images ``j * batch_size`` to
``(j + 1) * batch_size - 1`` of the data set, whatever was done before (the batch size is one of the
settings). A resumed run recomputes a whole batch of which some record is missing (writing only the
missing records), and under ``torchrun`` (``torch.distributed``;
gloo on CPU, nccl on CUDA) process ``r`` of ``n`` takes batches ``r, r + n, ...``: every image is always
computed in the same batch, so that batched kernels round the same way and the records and summary
are bit-identical to an uninterrupted single-process run's (with the same thread count). Each
process appends to ``records.rank<r>.jsonl``; process 0 writes the summary.

Methods are explained together (shared forward/backward passes) and all masked-image evaluations of a
batch (AD/IC/ADD, deletion/insertion steps) go through one batched scorer.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .. import __version__
from ..data.datasets import Sample
from ..data.images import DEFAULT_MAX_PIXELS, load_image, original_size
from ..errors import ImageError, LiftCamError
from ..explain import Explainer, Reference
from ..methods import get_method
from ..metrics import METRICS, get_metric, metric_parameters
from ..metrics.base import MetricBatch, Scorer
from ..models import LoadedModel
from ..viz import save_overlay
from . import DEFAULT_BATCH_SIZE
from .files import tell
from .records import RecordStore, run_settings

DEFAULT_METHODS: tuple[str, ...] = ("lift-cam", "grad-cam", "grad-cam++", "xgrad-cam")
FAST_METRICS: tuple[str, ...] = ("average_drop", "increase_in_confidence", "average_drop_in_deletion")
BOX_METRICS: tuple[str, ...] = ("energy_pointing_game", "pointing_game")
SHARD_PATTERN = "records*.jsonl"


@dataclass(frozen=True)
class EvaluateSettings:
    """Everything that determines an evaluation's results; stored in ``settings.json``."""

    data: str
    model: str
    weights: str
    layer: str
    methods: tuple[str, ...]
    metrics: tuple[str, ...]
    metric_parameters: tuple[tuple[str, Any], ...]
    score: str
    target: str
    reference: str
    limit: int | None
    seed: int
    images: int
    max_pixels: int = DEFAULT_MAX_PIXELS
    #: Images per batch: part of the settings, as batches are fixed by image index (the batch mean
    #: reference depends on them, and batched kernels round by them).
    batch_size: int = DEFAULT_BATCH_SIZE

    def as_dict(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        d["methods"] = list(self.methods)
        d["metrics"] = list(self.metrics)
        d["metric_parameters"] = dict(self.metric_parameters)
        d["liftcam"] = __version__
        return d


@dataclass
class Distributed:
    """This process's place in a ``torchrun`` job (rank 0 of 1 when run alone)."""

    rank: int = 0
    world: int = 1

    @staticmethod
    def from_environment(device: str) -> Distributed:
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world <= 1:
            return Distributed()
        import torch.distributed as dist

        if not dist.is_initialized():
            dist.init_process_group(backend="nccl" if device.startswith("cuda") else "gloo")
        return Distributed(dist.get_rank(), dist.get_world_size())

    def barrier(self) -> None:
        if self.world > 1:
            import torch.distributed as dist

            dist.barrier()

    def close(self) -> None:
        """Leave the process group (a no-op when run alone)."""
        if self.world > 1:
            import torch.distributed as dist

            if dist.is_initialized():
                dist.destroy_process_group()

    @property
    def record_file(self) -> str:
        return "records.jsonl" if self.world == 1 else f"records.rank{self.rank}.jsonl"


def run_evaluate(
    loaded: LoadedModel,
    samples: Sequence[Sample],
    out: Path,
    settings: EvaluateSettings,
    examples: int = 4,
    progress: bool = True,
    distributed: Distributed | None = None,
) -> dict[str, Any] | None:
    """Evaluate (or resume) on ``samples``; every process writes its records, then process 0 the reports
    (its summary is returned; None in the other processes)."""
    from tqdm import tqdm

    from .report import write_evaluate_report

    cluster = distributed or Distributed()
    unknown = [m for m in settings.metrics if m not in METRICS]
    if unknown:
        raise LiftCamError(f"unknown metric {unknown[0]!r}; available: {', '.join(METRICS)}")
    specs = [get_method(m) for m in settings.methods]
    parameters = dict(settings.metric_parameters)
    metrics = [
        get_metric(name, **{k: v for k, v in parameters.items() if k in metric_parameters(name)})
        for name in settings.metrics
    ]
    explainer = Explainer(loaded.model, settings.layer)
    stored = run_settings(settings.as_dict(), loaded.model)
    if cluster.rank == 0:
        RecordStore(out, stored, ("image", "method"), cluster.record_file, SHARD_PATTERN)
    cluster.barrier()
    store = RecordStore(out, stored, ("image", "method"), cluster.record_file, SHARD_PATTERN, write_settings=False)
    scorer = Scorer(loaded.model, settings.score)  # type: ignore[arg-type]
    indexed = list(enumerate(samples))
    size = settings.batch_size
    batches = [indexed[start : start + size] for start in range(0, len(indexed), size)]
    mine = [batch for j, batch in enumerate(batches) if j % cluster.world == cluster.rank]

    def finished(sample: Sample) -> bool:
        key = str(sample.path)
        return store.done(image=key, method="error") or all(store.done(image=key, method=m) for m in settings.methods)

    todo = [batch for batch in mine if not all(finished(s) for _, s in batch)]
    examples_dir = out / "examples"
    with tqdm(
        total=sum(len(b) for b in mine),
        initial=sum(len(b) for b in mine) - sum(len(b) for b in todo),
        unit="img",
        desc=f"evaluate[{cluster.rank}]",
        disable=not progress,
    ) as bar:
        for chunk in todo:
            _evaluate_batch(
                loaded, explainer, specs, metrics, scorer, store, chunk, settings, examples, examples_dir, bar
            )
            bar.set_postfix_str("", refresh=False)
            bar.update(len(chunk))
    cluster.barrier()
    return write_evaluate_report(out) if cluster.rank == 0 else None


def _evaluate_batch(
    loaded: LoadedModel,
    explainer: Explainer,
    specs: list[Any],
    metrics: list[Any],
    scorer: Scorer,
    store: RecordStore,
    chunk: list[tuple[int, Sample]],
    settings: EvaluateSettings,
    examples: int,
    examples_dir: Path,
    bar: Any,
) -> None:
    start = time.perf_counter()
    good, crops, boxes = [], [], []
    prep = loaded.preprocessing
    for index, sample in chunk:
        key = str(sample.path)
        try:
            image = load_image(sample.path, settings.max_pixels)
        except ImageError as exc:
            if not store.done(image=key, method="error"):
                store.append({"image": key, "method": "error", "error": str(exc), "reason": exc.reason})
                tell(f"liftcam: skipped {exc}", bar)
            continue
        reason = _label_problem(sample.label, len(loaded.categories)) if settings.target == "label" else None
        if reason is not None:
            if not store.done(image=key, method="error"):
                store.append({"image": key, "method": "error", "error": f"{key}: {reason}", "reason": reason})
                tell(f"liftcam: skipped {key}: {reason}", bar)
            continue
        crops.append(prep.crop_image(image))
        boxes.append(prep.transform_boxes(sample.boxes_tensor(), *original_size(image)) if sample.boxes else None)
        good.append((index, sample))
    if not good:
        return
    x = torch.stack([prep.normalize(c) for c in crops])
    captured = explainer.capture(x)
    if settings.target == "label":
        targets: Any = torch.tensor([s.label for _, s in good], device=captured.activations.device)
    else:
        targets = None
    reference: Reference = "mean" if settings.reference == "mean" else "zeros"
    bar.set_postfix_str("explaining")  # a batch of a costly method takes an hour on CPU: say where it is
    explanations = explainer.explain_captured(captured, specs, targets, reference)
    first = next(iter(explanations.values()))
    classes = first.targets
    maps = {name: e.maps for name, e in explanations.items()}

    def reexplainer(spec: Any) -> Any:
        return lambda inputs, cls: explainer(inputs, spec, targets=cls, reference=reference).maps

    def explainer_for(model: torch.nn.Module) -> Any:
        other = Explainer(model, explainer.layer)
        return lambda inputs, cls: other(inputs, specs, targets=cls, reference=reference)

    batch = MetricBatch(
        inputs=captured.inputs if captured.inputs is not None else x,
        classes=classes,
        maps=maps,
        boxes=boxes,
        reexplain={s.name: reexplainer(s) for s in specs},
        explainer_for=explainer_for,
    )
    values: dict[str, dict[str, torch.Tensor]] = {name: {} for name in maps}
    for metric in metrics:
        bar.set_postfix_str(metric.name)
        for method, result in metric.compute(batch, scorer).items():
            values[method].update(result)
    probabilities = first.logits.softmax(dim=1)
    ms = (time.perf_counter() - start) * 1e3 / len(good)
    for i, (index, sample) in enumerate(good):
        if index < examples:
            examples_dir.mkdir(parents=True, exist_ok=True)
            crops[i].save(examples_dir / f"{index:04d}.png")
        for method in maps:
            if store.done(image=str(sample.path), method=method):
                continue  # written before an interruption: an image is recomputed only for what is missing
            record: dict[str, Any] = {
                "image": str(sample.path),
                "method": method,
                "index": index,
                "target": int(classes[i]),
                "label": sample.label,
                "score": float(first.scores[i]),
                "probability": float(probabilities[i, classes[i]]),
                "boxes": _count(boxes[i]),
                "ms": ms,
            }
            for name, tensor in values[method].items():
                value = tensor[i]
                record[name] = [_number(round(float(v), 6)) for v in value] if value.dim() else _number(float(value))
            if index < examples:
                save_overlay(examples_dir / f"{index:04d}_{method}.png", crops[i], maps[method][i].cpu().numpy())
            store.append(record)


def _label_problem(label: int | None, classes: int) -> str | None:
    """Why an image's label cannot be explained (None when it can)."""
    if label is None:
        return "no label"
    if classes and not 0 <= label < classes:
        return f"label {label} is out of range for a model with {classes} classes"
    return None


def _count(boxes: torch.Tensor | None) -> int:
    return 0 if boxes is None else int(boxes.shape[0])


def _number(value: float) -> float | None:
    """NaN as null, in values and curves alike: the records stay standard JSON."""
    return None if np.isnan(value) else value
