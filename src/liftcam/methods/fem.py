"""FEM, the Feature Explanation Method (Fuad et al., IPTA 2020): ``alpha_k = mean_ij 1[A_kij > mu_k + k sigma_k]``,
the share of channel k's positions above its mean plus ``k`` (default 2) standard deviations (population,
over the positions). Class-agnostic: the activations alone."""

from __future__ import annotations

from torch import Tensor

from ..maps import per_channel, spatial
from .base import CamMethod, MethodInputs, Need


class Fem(CamMethod):
    """Args: k, the number of standard deviations above the mean (pytorch-grad-cam's default 2)."""

    name = "fem"
    needs = frozenset[Need]()
    single_pass = True

    def __init__(self, k: float = 2.0) -> None:
        self.k = k

    def weights(self, inputs: MethodInputs) -> Tensor:
        a = inputs.activations
        dims = spatial(a)
        threshold = a.mean(dim=dims) + self.k * a.std(dim=dims, correction=0)
        return (a > per_channel(threshold, a)).to(a.dtype).mean(dim=dims)
