"""Seeing a layer's output as maps: token sequences and channels-last tensors as ``(B, K, h, w)``.

Every method works on channel maps ``A`` (B, K, h, w). A transformer block outputs tokens ``T``
(B, N, D), some of them prefix tokens (class, distillation, registers) before the ``h x w`` patch tokens;
Swin and MaxViT stages output channels-last ``(B, h, w, C)``. A :class:`MapView` is an index map
between the two: ``A`` holds the ``D`` channels of the patch tokens; the head receives ``T`` again,
with the patch tokens taken from ``A`` and the prefix tokens at their actual values (so the players of
the Shapley game are the ``D`` channels over the spatial tokens, and a prefix token is never removed).
The map is a selection of elements, so it is linear both ways and every rule passes through it.

``reshape`` (a callable ``T -> A``, as pytorch-grad-cam's ``reshape_transform``) describes any other
layout: applied once to a tensor of element positions, it gives the index map.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from .errors import LayerError

Reshape = Callable[[Tensor], Tensor]


@dataclass(frozen=True)
class MapView:
    """``A = T.flatten(1)[:, index].view(B, *shape)`` and back (``T``'s other elements kept).

    Attributes:
        index: (K*h*w,) positions in one sample's flattened ``T``.
        shape: ``(K, h, w)`` of the maps.
        description: how ``T`` was read (``"tokens: 1 prefix + 14 x 14"``, ``"channels-last"``, ...).
    """

    index: Tensor
    shape: tuple[int, ...]
    description: str

    def to_maps(self, t: Tensor) -> Tensor:
        return t.flatten(1)[:, self.index.to(t.device)].reshape(t.shape[0], *self.shape)

    def from_maps(self, a: Tensor, t: Tensor) -> Tensor:
        """``T`` with the elements seen as maps replaced by ``a`` (linear in ``a``)."""
        index = self.index.to(a.device).expand(a.shape[0], -1)
        base = t.flatten(1).expand(a.shape[0], -1).to(a.dtype)
        return base.scatter(1, index, a.reshape(a.shape[0], -1)).reshape(a.shape[0], *t.shape[1:])


def _positions(sample_shape: tuple[int, ...]) -> Tensor:
    """One sample's element positions, as a float64 tensor shaped like it (exact below 2^53)."""
    return torch.arange(math.prod(sample_shape), dtype=torch.float64).reshape(1, *sample_shape)


def _from_reshape(reshape: Reshape, sample_shape: tuple[int, ...], description: str) -> MapView:
    out = reshape(_positions(sample_shape))
    if not isinstance(out, Tensor) or out.dim() not in (3, 4, 5) or out.shape[0] != 1:
        shape = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
        raise LayerError(f"the reshape must turn the layer's output into maps (B, K, h, w), not {shape}")
    index = out.reshape(-1)
    inside = bool(((index >= 0) & (index < math.prod(sample_shape))).all())
    if not inside or not bool((index == index.round()).all()) or torch.unique(index).numel() != index.numel():
        raise LayerError("the reshape must only select and rearrange the layer's elements (no arithmetic)")
    return MapView(index.long(), tuple(out.shape[1:]), description)


def prefix_tokens(model: nn.Module) -> int | None:
    """Prefix tokens of a timm or torchvision vision transformer, None if the model does not say."""
    count = getattr(model, "num_prefix_tokens", None)
    if isinstance(count, int):
        return count
    if isinstance(getattr(model, "class_token", None), Tensor):  # torchvision ViT
        return 1
    return None


def _grid(tokens: int, input_size: tuple[int, ...], model: nn.Module) -> tuple[int, int] | None:
    patch_embed = getattr(model, "patch_embed", None)
    grid = getattr(patch_embed, "grid_size", None)
    if isinstance(grid, (tuple, list)) and len(grid) == 2 and grid[0] * grid[1] == tokens:
        return int(grid[0]), int(grid[1])
    height, width = input_size[-2:]
    for h in range(1, tokens + 1):
        if tokens % h == 0 and h * width == (tokens // h) * height:
            return h, tokens // h
    return None


def map_view(
    output: Tensor, input_size: tuple[int, ...], model: nn.Module, layer: str, reshape: Reshape | None = None
) -> MapView | None:
    """How to see ``output`` as maps; None when it already is ``(B, K, h, w)`` channels-first."""
    sample = tuple(output.shape[1:])
    if reshape is not None:
        return _from_reshape(reshape, sample, "given reshape")
    if output.dim() == len(input_size) + 2 and len(input_size) >= 2:
        height, width = input_size[-2:]
        shape = output.shape
        first = shape[-2] * width == shape[-1] * height  # (C, ..., h, w) keeps the input's aspect ratio
        last = shape[-3] * width == shape[-2] * height and shape[-1] != shape[-2]  # (..., h, w, C)
        if last and not first:
            order = (0, output.dim() - 1, *range(1, output.dim() - 1))
            letters = "(B, h, w, C)" if output.dim() == 4 else "(B, t, h, w, C)"
            return _from_reshape(lambda t: t.permute(*order), sample, f"channels-last {letters}")
        return None
    if output.dim() == 3 and len(input_size) == 2:
        _, n, d = output.shape
        known = prefix_tokens(model)
        # the model's own count first; some blocks run on the patch tokens alone (CaiT, XCiT append the
        # class token later)
        for prefix in dict.fromkeys([known, 0] if known is not None else range(0, 9)):
            if prefix is None or prefix >= n:
                continue
            grid = _grid(n - prefix, input_size, model)
            if grid is not None:
                h, w = grid

                def tokens_to_maps(t: Tensor, p: int = prefix, hw: tuple[int, int] = (h, w)) -> Tensor:
                    return t[:, p:].reshape(t.shape[0], *hw, t.shape[-1]).permute(0, 3, 1, 2)

                return _from_reshape(tokens_to_maps, sample, f"tokens: {prefix} prefix + {h} x {w}")
        raise LayerError(
            f"layer {layer!r} outputs {n} tokens of {d} channels that do not form a grid matching the input "
            "(after up to 8 prefix tokens); pass reshape= to say how they map to (B, K, h, w)"
        )
    return None
