"""The random logit test (Sixt et al., ICML 2020), Quantus's ``RandomLogit``: the map explaining the target class
should differ from the map explaining a random other class,

``similarity(L_c(x), L_{c'}(x))``,  ``c'`` drawn uniformly from the other classes,

lower is better (a map that is the same for every class explains the image, not the class). ``similarity``:
``"ssim"`` (default, as Quantus), ``"spearman"``, ``"pearson"`` or ``"hog"`` (:mod:`.similarity`). ``c'`` is
the ``j``-th of the other classes in order, ``j`` drawn per image by a NumPy generator seeded with ``seed``
(``randint(0, n_classes - 1)``: Quantus's draw for one image). The method explains the image again for ``c'``.
Named difference: Quantus's SSIM runs on the flattened maps (:mod:`.similarity`).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

from .base import Metric, MetricBatch, Scorer
from .similarity import get_similarity


class RandomLogit(Metric):
    name = "random_logit"
    higher_is_better = False

    def __init__(self, similarity: str = "ssim", seed: int = 42) -> None:
        self.similarity = similarity
        self.measure = get_similarity(similarity)
        self.seed = seed

    def parameters(self) -> dict[str, Any]:
        return {"similarity": self.similarity, "seed": self.seed}

    def other_classes(self, classes: Tensor, n_classes: int) -> Tensor:
        """``c'`` per image: the ``j``-th class other than ``c``, ``j ~ randint(0, n_classes - 1)`` seeded per image."""
        j = torch.tensor(
            [int(np.random.RandomState(self.seed).randint(0, n_classes - 1)) for _ in range(classes.shape[0])],
            device=classes.device,
        )
        return j + (j >= classes).long()  # skip c itself

    def compute(self, batch: MetricBatch, scorer: Scorer) -> dict[str, dict[str, Tensor]]:
        if batch.reexplain is None:
            raise ValueError("the random logit test needs the methods to explain another class (reexplain)")
        others = self.other_classes(batch.classes, scorer.num_classes(batch.inputs))
        result = {}
        for method, maps in batch.maps.items():
            again = batch.reexplain[method](batch.inputs, others)
            values = [self.measure(a, b) for a, b in zip(maps, again, strict=True)]
            result[method] = {self.name: torch.tensor(values, dtype=torch.float32, device=maps.device)}
        return result
