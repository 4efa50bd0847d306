"""Which score is explained: a class per image, or any function of the logits."""

from __future__ import annotations

from collections.abc import Callable, Sequence

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
    if callable(targets) and not isinstance(targets, Tensor):
        scores = targets(logits)
        if not isinstance(scores, Tensor) or scores.shape != (logits.shape[0],):
            shape = tuple(scores.shape) if isinstance(scores, Tensor) else type(scores).__name__
            raise TargetError(f"the target function must return a tensor of shape (B,), got {shape}")
        return scores
    return logits.gather(1, classes[:, None])[:, 0]
