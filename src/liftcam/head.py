"""Evaluate the head alone on many modified activation tensors of one image, batched.

Everything that needs ``F(A')`` for modified activations ``A'`` (ablation, Shapley values, LIME)
goes through :class:`HeadEvaluator`: it never runs the body again when the model was split on its
graph, and chunks the evaluations so that one chunk stays within a memory budget. For models split
by re-running (``torch.fx`` could not trace them), every evaluation re-runs the model from the input
with the layer's output substituted; it says so once.
"""

from __future__ import annotations

import warnings
from typing import Any

import torch
from torch import Tensor

from .capture import Captured, SplitModel
from .maps import per_channel
from .targets import Targets, image_targets, target_scores

#: Default memory budget for one chunk of head evaluations.
DEFAULT_MEMORY_BYTES = 256 * 2**20
# Intermediate tensors of a head per sample, as a multiple of the activation's size (a guess that
# holds for the heads of common CNNs; the budget is not a hard limit).
_HEAD_EXPANSION = 8


class HeadEvaluator:
    """Scores ``s = F(A')_c`` of one image for batches of modified activations ``A'``.

    Args:
        split: the model cut at the target layer.
        captured: the body's output for the batch (activations and context).
        targets: what the explanation explains (a class per image or a score function).
        classes: the resolved class per image (B,).
        memory_bytes: budget for one chunk of evaluations.
    """

    def __init__(
        self,
        split: SplitModel,
        captured: Captured,
        targets: Targets,
        classes: Tensor,
        memory_bytes: int = DEFAULT_MEMORY_BYTES,
    ) -> None:
        self.split = split
        self.captured = captured
        self.targets = targets
        self.classes = classes
        a = captured.activations
        per_sample = a[0].numel() * a.element_size() * _HEAD_EXPANSION
        if split.mode == "rerun":
            x = captured.context[0]
            per_sample += x[0].numel() * x.element_size() * _HEAD_EXPANSION
        self.chunk = max(1, memory_bytes // max(per_sample, 1))
        self._warned = False

    @property
    def activations(self) -> Tensor:
        return self.captured.activations

    def context_for(self, index: int, n: int) -> tuple[Any, ...]:
        """The head's context for ``n`` evaluations of image ``index``."""
        batch = self.activations.shape[0]
        return tuple(
            c[index : index + 1].expand(n, *c.shape[1:]) if isinstance(c, Tensor) and c.shape[:1] == (batch,) else c
            for c in self.captured.context
        )

    def scores(self, index: int, activations: Tensor) -> Tensor:
        """``F(A')_c`` (N,) of image ``index`` for ``activations`` (N, K, h, w), without autograd."""
        if self.split.mode == "rerun" and not self._warned:
            warnings.warn(
                f"the model could not be split on its graph: each of the {activations.shape[0]} head evaluations "
                "re-runs the whole model",
                stacklevel=2,
            )
            self._warned = True
        out = []
        with torch.no_grad():
            for start in range(0, activations.shape[0], self.chunk):
                part = activations[start : start + self.chunk]
                logits = self.split.head(part, self.context_for(index, part.shape[0]))
                classes = self.classes[index : index + 1].expand(part.shape[0])
                out.append(target_scores(image_targets(self.targets, index, part.shape[0]), classes, logits))
        return torch.cat(out)

    def coalition_scores(self, index: int, masks: Tensor, reference: Tensor) -> Tensor:
        """Scores of coalitions: ``A_S = R + z (A - R)`` per channel, for masks ``z`` (N, K) in {0, 1}."""
        a = self.activations[index]
        diff = a - reference
        out = []
        for start in range(0, masks.shape[0], self.chunk):
            z = masks[start : start + self.chunk].to(device=a.device, dtype=a.dtype)
            coalition = reference + per_channel(z, diff[None]) * diff
            out.append(self.scores(index, coalition))
        return torch.cat(out) if out else a.new_zeros(0)
