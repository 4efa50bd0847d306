"""ADCC (Poppi et al., CVPRW 2021), per image, higher is better:

    ADCC = 3 / (1 / Coherency + 1 / (1 - Complexity) + 1 / (1 - AD / 100))
    Coherency = (Pearson(L(x), L(x * L(x))) + 1) / 2,   Complexity = mean(L)

``L(x * L(x))`` is the same method's map of the masked input for the same class. A correlation with a
constant map is undefined and counts as coherency 0; ADCC is 0 where any term is 0.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .base import Metric, MetricBatch, Scorer, masked_scores, relative_drop


def _pearson_rows(a: Tensor, b: Tensor) -> Tensor:
    a = a.flatten(1).double()
    b = b.flatten(1).double()
    a = a - a.mean(dim=1, keepdim=True)
    b = b - b.mean(dim=1, keepdim=True)
    denominator = a.norm(dim=1) * b.norm(dim=1)
    return torch.where(denominator > 0, (a * b).sum(dim=1) / torch.where(denominator > 0, denominator, 1.0), torch.nan)


def coherency(batch: MetricBatch, method: str, maps: Tensor) -> Tensor:
    """``(Pearson(L(x), L(x * L(x))) + 1) / 2`` per image (B,), the method explaining its masked input again for
    the same class; 0 where the correlation is undefined (a constant map). Computed once per batch and method:
    ADCC and ARCC share it (the re-explanation is as costly as the explanation)."""
    key = f"coherency:{method}"
    cached = batch.cache.get(key)
    if cached is not None and cached[0] is maps:
        value: Tensor = cached[1]
        return value
    if batch.reexplain is None:
        raise ValueError("coherency needs the methods to explain the masked inputs again (reexplain)")
    again = batch.reexplain[method](batch.inputs * maps[:, None], batch.classes)
    r = _pearson_rows(maps, again)
    value = torch.where(torch.isnan(r), 0.0, (r + 1) / 2).float()
    batch.cache[key] = (maps, value)
    return value


class Adcc(Metric):
    name = "adcc"

    @property
    def values(self) -> tuple[str, ...]:
        return ("adcc", "coherency", "complexity")

    def compute(self, batch: MetricBatch, scorer: Scorer) -> dict[str, dict[str, Tensor]]:
        base = batch.base_scores(scorer)
        kept = masked_scores(batch, scorer, keep=True)
        out: dict[str, dict[str, Tensor]] = {}
        for method, maps in batch.maps.items():
            coherent = coherency(batch, method, maps)
            complexity = maps.flatten(1).mean(dim=1)
            keep = 1 - relative_drop(base, kept[method]) / 100  # ADCC's AD is the clipped one
            terms = torch.stack([coherent, 1 - complexity, keep])
            adcc = torch.where((terms > 0).all(dim=0), 3 / (1 / terms.clamp_min(1e-12)).sum(dim=0), 0.0)
            out[method] = {"adcc": 100 * adcc, "coherency": 100 * coherent, "complexity": 100 * complexity}
        return out
