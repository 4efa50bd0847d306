"""What every metric shares: the batch it scores, batched model evaluation, and the metric protocol.

A metric receives a :class:`MetricBatch`: the model's input images (B, C, H, W), the explained class
per image, and one map per method (B, H, W) in [0, 1]; it returns per-image values per method. All
model evaluations of masked inputs go through :class:`Scorer`, which batches them across images,
methods and steps and computes ``p_c`` (softmax probability by default, or the logit).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import Tensor, nn

from ..capture import CPU_CHUNK, chunk_size, in_chunks, logits_in_chunks, model_output_logits

ScoreKind = Literal["softmax", "logit"]
#: Explain masked inputs again (for ADCC's coherency): (inputs, classes) -> maps (B, H, W).
Reexplain = Callable[[Tensor, Tensor], Tensor]
#: Every method's explanations with another model of the same architecture (the randomisation test):
#: model -> (inputs, classes) -> method -> explanation.
ExplainerFor = Callable[[nn.Module], Callable[[Tensor, Tensor], Mapping[str, Any]]]


class Scorer:
    """``p_c`` of many inputs, in batches of ``batch_size``, without autograd.

    Args:
        model: the classifier.
        kind: ``"softmax"`` (probability of the class) or ``"logit"``.
        batch_size: inputs per forward pass; default 16 on CPU (larger batches are often slower per input
            there), up to 128 on CUDA (:func:`~liftcam.capture.chunk_size`).
        channels_last: pass inputs in channels-last memory format (faster convolutions on CPU).
    """

    def __init__(
        self, model: nn.Module, kind: ScoreKind = "softmax", batch_size: int | None = None, channels_last: bool = True
    ) -> None:
        self.model = model
        self.kind = kind
        self.batch_size = None if batch_size is None else max(1, batch_size)
        self.channels_last = channels_last
        self.evaluations = 0

    def __call__(self, inputs: Tensor, classes: Tensor) -> Tensor:
        """Scores (N,) of ``inputs`` (N, C, H, W) for ``classes`` (N,)."""

        def read(logits: Tensor, start: int, stop: int) -> Tensor:
            logits = logits.float()
            if self.kind == "softmax":
                logits = logits.softmax(dim=1)
            return logits.gather(1, classes[start:stop, None].to(logits.device))[:, 0]

        self.evaluations += inputs.shape[0]
        size = self.batch_size or chunk_size(inputs, CPU_CHUNK)
        return logits_in_chunks(self.model, inputs, size, read, self.channels_last)

    def num_classes(self, inputs: Tensor) -> int:
        """The number of classes the model scores (one forward pass of the first input)."""
        with torch.inference_mode():
            return int(model_output_logits(self.model(inputs[:1])).shape[1])

    def generate(self, make: Callable[[int, int], Tensor], total: int, classes: Tensor) -> Tensor:
        """Scores of ``total`` inputs built lazily: ``make(start, stop)`` returns inputs start..stop-1,
        so that masked copies are created one batch at a time, never all at once. The first chunk (16 inputs
        unless ``batch_size`` says) sizes the others (the same 16 on CPU; more on CUDA)."""
        if total == 0:
            return classes.new_zeros(0, dtype=torch.float32)
        first = make(0, min(total, self.batch_size or CPU_CHUNK))
        size = self.batch_size or chunk_size(first, CPU_CHUNK)
        done = first.shape[0]
        head = self(first, classes[:done])
        rest = in_chunks(
            total - done, size, lambda i, j: self(make(done + i, done + j), classes[done + i : done + j]), head[:0]
        )
        return torch.cat([head, rest])


@dataclass
class MetricBatch:
    """One batch of images with one map per method.

    Attributes:
        inputs: (B, C, H, W) the model's input tensors.
        classes: (B,) explained classes.
        maps: method -> (B, H, W) maps in [0, 1].
        boxes: per image, an (n, 4) tensor of (x0, y0, x1, y1) object boxes in input pixels, or None.
        reexplain: method -> function explaining masked inputs again (ADCC); optional.
        explainer_for: every method's explanations with another model (randomisation test); optional.
        cache: values shared between metrics of the same batch (e.g. ``p_c(x)``).
    """

    inputs: Tensor
    classes: Tensor
    maps: Mapping[str, Tensor]
    boxes: Sequence[Tensor | None] | None = None
    reexplain: Mapping[str, Reexplain] | None = None
    explainer_for: ExplainerFor | None = None
    cache: dict[str, Any] = field(default_factory=dict)

    def base_scores(self, scorer: Scorer) -> Tensor:
        """``Y = p_c(x)`` (B,), computed once per batch and shared."""
        if "base" not in self.cache:
            self.cache["base"] = scorer(self.inputs, self.classes)
        value: Tensor = self.cache["base"]
        return value


class Metric(ABC):
    """A metric: per-image values for every method of a batch.

    ``name`` is the metric's name; ``higher_is_better`` its direction; ``values`` the names of the
    values it returns (the first is the headline). ``parameters`` are written into every result file.
    """

    name: str
    higher_is_better: bool = True
    needs_boxes: bool = False

    @property
    def values(self) -> tuple[str, ...]:
        return (self.name,)

    def parameters(self) -> dict[str, Any]:
        return {}

    @abstractmethod
    def compute(self, batch: MetricBatch, scorer: Scorer) -> dict[str, dict[str, Tensor]]:
        """method -> value name -> per-image values (B,) (NaN where undefined, e.g. no boxes)."""


def stack_methods(batch: MetricBatch) -> tuple[list[str], Tensor, Tensor]:
    """All methods' maps as one batch: names, maps (M*B, H, W) and classes (M*B,); row ``i`` belongs
    to image ``i % B`` (the inputs are not copied M times)."""
    names = list(batch.maps)
    maps = torch.cat([batch.maps[m] for m in names])
    return names, maps, batch.classes.repeat(len(names))


def split_methods(names: Sequence[str], values: Tensor, batch_size: int) -> dict[str, Tensor]:
    """Undo :func:`stack_methods` for per-image values (M*B, ...)."""
    return {name: values[i * batch_size : (i + 1) * batch_size] for i, name in enumerate(names)}


def masked_scores(batch: MetricBatch, scorer: Scorer, keep: bool) -> dict[str, Tensor]:
    """``O = p_c(x * L)`` (``keep``) or ``D = p_c(x * (1 - L))`` per method, all methods in one batch
    of evaluations, computed once per batch and shared by the metrics that use them."""
    key = "kept" if keep else "deleted"
    if key not in batch.cache:
        names, maps, classes = stack_methods(batch)
        b = batch.inputs.shape[0]

        def make(start: int, stop: int) -> Tensor:
            images = batch.inputs[torch.arange(start, stop, device=batch.inputs.device) % b]
            weights = maps[start:stop, None]
            return images * (weights if keep else 1 - weights)

        values = scorer.generate(make, maps.shape[0], classes)
        batch.cache[key] = split_methods(names, values, batch.inputs.shape[0])
    result: dict[str, Tensor] = batch.cache[key]
    return result


def relative_drop(base: Tensor, other: Tensor, clip: bool = True) -> Tensor:
    """``100 * max(0, Y - O) / Y`` per image (``clip=False``: ``100 * (Y - O) / Y``, increases count
    as negative drops); 0 where ``Y = 0``."""
    drop = (base - other).clamp_min(0) if clip else base - other
    return torch.where(base > 0, 100 * drop / torch.where(base > 0, base, 1.0), 0.0)


def per_image_with_boxes(batch: MetricBatch, maps: Tensor, score: Callable[[Tensor, Tensor], float]) -> Tensor:
    """``score(map, boxes)`` per image (B,) on the maps' device; NaN for images without boxes (left out of the
    means)."""
    values = []
    for i, heat in enumerate(maps):
        boxes = batch.boxes[i] if batch.boxes is not None else None
        if boxes is None or boxes.numel() == 0:
            values.append(float("nan"))
        else:
            values.append(score(heat, boxes.to(device=heat.device, dtype=torch.float32)))
    return torch.tensor(values, device=maps.device)


class DropMetric(Metric):
    """``100 * max(0, Y - p_c(x * M)) / Y`` per image, with ``M = L`` (``keep``) or ``1 - L``; ``clip=False``
    drops the ``max(0, .)``."""

    keep: bool = True

    def __init__(self, clip: bool = True) -> None:
        self.clip = clip

    def parameters(self) -> dict[str, Any]:
        return {"clip": self.clip}

    def compute(self, batch: MetricBatch, scorer: Scorer) -> dict[str, dict[str, Tensor]]:
        base = batch.base_scores(scorer)
        masked = masked_scores(batch, scorer, keep=self.keep)
        return {m: {self.name: relative_drop(base, o, self.clip)} for m, o in masked.items()}
