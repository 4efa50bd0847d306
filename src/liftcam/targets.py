"""Which score is explained: a class per image, or any function of the logits."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Literal

import torch
from torch import Tensor

from .errors import TargetError

ScoreFunction = Callable[[Tensor], Tensor]
Targets = None | int | Sequence[int] | Tensor | ScoreFunction

#: ``Explanation.targets`` holds this where the score is a user function, not a class.
CUSTOM_TARGET = -1


def resolve_targets(targets: Targets, logits: Tensor) -> Tensor:
    """The explained class per image, as a LongTensor (B,).

    ``None``: the arg-max class; an int: that class for every image; a sequence or tensor: one class
    per image; a callable: :data:`CUSTOM_TARGET` for every image (the callable gives the score).
    """
    batch = logits.shape[0]
    device = logits.device
    if isinstance(targets, RegionTarget):
        if targets.classes is None:
            raise TargetError("a RegionTarget is bound to the model's output first (bind_targets)")
        return targets.classes
    if callable(targets) and not isinstance(targets, Tensor):
        return torch.full((batch,), CUSTOM_TARGET, dtype=torch.long, device=device)
    if logits.dim() != 2:
        raise TargetError(
            f"the model's output has shape {tuple(logits.shape)}, not (B, classes); "
            "pass targets as a callable logits -> (B,) scores"
        )
    classes = logits.shape[1]
    if targets is None:
        return logits.argmax(dim=1)
    if isinstance(targets, bool):
        raise TargetError("a target must be a class index, not a bool")
    if isinstance(targets, int):
        result = torch.full((batch,), targets, dtype=torch.long, device=device)
    else:
        try:
            result = torch.as_tensor(targets, device=device)
        except (TypeError, ValueError) as exc:
            raise TargetError(f"cannot read targets {targets!r}: {exc}") from exc
        if result.dtype.is_floating_point or result.dtype == torch.bool:
            raise TargetError("targets must be integer class indices")
        result = result.long().reshape(-1)
        if result.numel() == 1 and batch != 1:
            result = result.expand(batch).clone()
        if result.numel() != batch:
            raise TargetError(f"got {result.numel()} targets for a batch of {batch} images")
    bad = (result < 0) | (result >= classes)
    if bool(bad.any()):
        raise TargetError(f"class {int(result[bad][0])} is out of range for a model with {classes} classes")
    return result


def target_scores(targets: Targets, classes: Tensor, logits: Tensor) -> Tensor:
    """Scores (B,): ``logits[b, classes[b]]``, or the user's function of the logits."""
    if isinstance(targets, RegionTarget):
        return targets(logits)
    if callable(targets) and not isinstance(targets, Tensor):
        scores = targets(logits)
        if not isinstance(scores, Tensor) or scores.shape != (logits.shape[0],):
            shape = tuple(scores.shape) if isinstance(scores, Tensor) else type(scores).__name__
            raise TargetError(f"the target function must return a tensor of shape (B,), got {shape}")
        return scores
    return logits.gather(1, classes[:, None])[:, 0]


Box = tuple[float, float, float, float]
Region = Tensor | Box | Literal["predicted", "all"]


class RegionTarget:
    """A dense output's score: class ``category``'s logits summed over a region of the output map,

    ``s_b = sum_{(i, j) in M_b} y[b, c_b, i, j]``

    as pytorch-grad-cam's ``SemanticSegmentationTarget``. ``region`` is a boolean mask (H, W) or (B, H, W)
    at the output's resolution, a box ``(x0, y0, x1, y1)`` in output pixels (the end excluded), ``"predicted"``
    (the pixels whose arg-max class is ``c``) or ``"all"``. ``category`` is one class for every image or one
    per image (None: the class with the largest total logit over the output).

    The region is fixed from the model's actual output (:meth:`bind`) before any score is computed: the
    reference pass and every perturbation explain the same pixels, so the score is a linear function of
    the output, and the arg-max of ``"predicted"`` is a decision of the actual pass, not of each pass.
    """

    def __init__(self, category: int | Sequence[int] | Tensor | None, region: Region = "predicted") -> None:
        self.category = category
        self.region = region
        self.mask: Tensor | None = None  # (B, H, W), set by bind
        self.classes: Tensor | None = None

    def bind(self, logits: Tensor) -> RegionTarget:
        """A copy with the class per image and the region's mask fixed from the actual ``logits`` (B, C, H, W)."""
        if logits.dim() < 3:
            raise TargetError(
                f"a region target needs a dense output (B, C, H, W); the model's output has shape {tuple(logits.shape)}"
            )
        batch, _, *size = logits.shape
        # None: the class with the largest total logit; range and batch checks as for a class
        chosen = resolve_targets(self.category, logits.flatten(2).sum(2))
        region = self.region
        if isinstance(region, str):
            if region == "predicted":
                mask = logits.argmax(dim=1) == chosen.view(-1, *([1] * len(size)))
            elif region == "all":
                mask = torch.ones(batch, *size, dtype=torch.bool, device=logits.device)
            else:
                raise TargetError(f"unknown region {region!r}; use a mask, a box, 'predicted' or 'all'")
        elif isinstance(region, Tensor):
            mask = region.to(device=logits.device)
            if mask.dtype != torch.bool:
                raise TargetError(f"a region mask must be boolean, not {mask.dtype}")
            if tuple(mask.shape[-len(size) :]) != tuple(size) or mask.dim() not in (len(size), len(size) + 1):
                raise TargetError(
                    f"a region mask of shape {tuple(mask.shape)} does not fit the output's maps {tuple(size)}"
                )
            mask = mask.expand(batch, *size)
        else:
            mask = _box_mask(region, size, batch, logits.device)
        empty = ~mask.flatten(1).any(dim=1)
        if bool(empty.any()):
            b = int(empty.nonzero()[0])
            raise TargetError(f"the region of class {int(chosen[b])} in image {b} has no pixel")
        return self._with(mask, chosen)

    def image(self, index: int, n: int) -> RegionTarget:
        """The bound target of image ``index`` for ``n`` evaluations of that image (perturbations)."""
        mask, classes = self._fixed()
        return self._with(mask[index : index + 1].expand(n, *mask.shape[1:]), classes[index : index + 1].expand(n))

    def rows(self, indices: Tensor) -> RegionTarget:
        """The bound targets of images ``indices`` (n,), one evaluation each (several images' copies at once)."""
        mask, classes = self._fixed()
        indices = indices.to(mask.device)
        return self._with(mask[indices], classes[indices])

    def __call__(self, logits: Tensor) -> Tensor:
        mask, classes = self._fixed()
        index = classes.view(-1, 1, *([1] * (logits.dim() - 2))).expand(-1, 1, *logits.shape[2:])
        maps = logits.gather(1, index)[:, 0]
        return (maps * mask.to(maps.dtype)).flatten(1).sum(dim=1)

    def _with(self, mask: Tensor, classes: Tensor) -> RegionTarget:
        bound = RegionTarget(self.category, self.region)
        bound.mask, bound.classes = mask, classes
        return bound

    def _fixed(self) -> tuple[Tensor, Tensor]:
        if self.mask is None or self.classes is None:
            raise TargetError("a RegionTarget is bound to the model's output before it gives scores")
        return self.mask, self.classes


def _box_mask(box: Box, size: list[int], batch: int, device: torch.device) -> Tensor:
    if len(size) != 2 or len(box) != 4:
        raise TargetError(f"a box region is (x0, y0, x1, y1) on 2-D maps; got {box!r} for maps {tuple(size)}")
    x0, y0, x1, y1 = (float(v) for v in box)
    if not all(math.isfinite(v) for v in (x0, y0, x1, y1)) or x1 <= x0 or y1 <= y0:
        raise TargetError(f"box {box!r} has no area")
    height, width = size
    rows = torch.arange(height, device=device)
    cols = torch.arange(width, device=device)
    inside_rows = (rows >= math.floor(y0)) & (rows < math.ceil(y1))
    inside_cols = (cols >= math.floor(x0)) & (cols < math.ceil(x1))
    return (inside_rows[:, None] & inside_cols[None, :]).expand(batch, height, width)


def bind_targets(targets: Targets, logits: Tensor) -> Targets:
    """Targets whose meaning depends on the actual output (a region's mask), fixed from ``logits``."""
    return targets.bind(logits.detach()) if isinstance(targets, RegionTarget) else targets


def image_targets(targets: Targets, index: int, n: int) -> Targets:
    """The targets of image ``index`` for ``n`` evaluations of that image (a region's mask repeated)."""
    return targets.image(index, n) if isinstance(targets, RegionTarget) else targets


def rows_targets(targets: Targets, indices: Tensor) -> Targets:
    """The targets of images ``indices`` (n,), one evaluation each (a region's masks gathered)."""
    return targets.rows(indices) if isinstance(targets, RegionTarget) else targets


def predicted_regions(
    logits: Tensor, category: int | None = None, top: int = 1, background: int | None = 0
) -> list[RegionTarget]:
    """Region targets of a segmenter's output (B, C, H, W): class ``category`` over the pixels predicted as
    it, or else the ``top`` classes with the most predicted pixels (``background`` last), each over its
    pixels. An image where a class has no pixel explains that class over the whole image."""
    predicted = logits.argmax(dim=1)
    batch, classes = logits.shape[:2]
    if category is not None:
        chosen = torch.full((1, batch), category, dtype=torch.long, device=logits.device)
    else:
        shares = pixel_shares(logits)
        if background is not None and 0 <= background < classes:
            shares[:, background] -= 2.0  # after every other class (a share is at most 1)
        chosen = shares.argsort(dim=1, descending=True, stable=True)[:, : min(top, classes)].T
    out = []
    for classes_b in chosen:
        mask = predicted == classes_b.view(-1, *([1] * (predicted.dim() - 1)))
        empty = ~mask.flatten(1).any(dim=1)
        mask[empty] = True
        out.append(RegionTarget(classes_b, mask))
    return out


def pixel_shares(logits: Tensor) -> Tensor:
    """(B, C): each class's share of the pixels a segmenter's output (B, C, H, W) predicts as it."""
    predicted = torch.nn.functional.one_hot(logits.argmax(dim=1), logits.shape[1])  # (B, H, W, C)
    return predicted.flatten(1, -2).double().mean(dim=1)
