"""Similarity of two maps, for the sanity checks (model parameter randomisation, random logit).

- ``spearman``: Spearman's rank correlation (average ranks for ties), Adebayo et al.'s main measure.
- ``pearson``: Pearson's correlation of the values.
- ``ssim``: the structural similarity index (Wang et al., 2004) of the 2-D maps as scikit-image's
  ``structural_similarity`` defines it: 7x7 uniform windows, sample covariances, ``K1 = 0.01``,
  ``K2 = 0.03``, the mean over the windows inside the map; ``data_range`` the range of both maps together
  (Quantus's choice),

  ``SSIM = (2 mu_a mu_b + C1)(2 s_ab + C2) / ((mu_a^2 + mu_b^2 + C1)(s_a^2 + s_b^2 + C2))``,
  ``C1 = (K1 R)^2``, ``C2 = (K2 R)^2``.

  Named difference: Quantus passes each map flattened to one row, so its windows are 7 pixels of a row
  and run across row ends; here they are 7x7 squares of the image.
- ``hog``: Pearson's correlation of the maps' histograms of oriented gradients (Dalal & Triggs; scikit-image's
  ``hog`` with its defaults: 9 orientations, 8x8-pixel cells, 3x3-cell blocks), Adebayo et al.'s third
  measure; needs scikit-image (``liftcam[samples]``).

Each takes two maps (H, W) and returns a float (NaN where undefined: a constant map).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import LiftCamError

Similarity = Callable[[Tensor, Tensor], float]


def pearson(a: Tensor, b: Tensor) -> float:
    """Pearson's correlation of the flattened values, in float64; NaN if either is constant."""
    a, b = a.double().flatten(), b.double().flatten()
    a, b = a - a.mean(), b - b.mean()
    denominator = float(a.norm() * b.norm())
    return float(a @ b) / denominator if denominator > 0 else float("nan")


def _ranks(x: Tensor) -> Tensor:
    """Ranks 1..n with ties given their average rank (scipy's ``rankdata``)."""
    _, inverse, counts = torch.unique(x.double(), sorted=True, return_inverse=True, return_counts=True)
    ends = counts.cumsum(0).double()
    average: Tensor = ends - (counts.double() - 1) / 2
    return average[inverse]


def spearman(a: Tensor, b: Tensor) -> float:
    """Spearman's rank correlation (average ranks for ties)."""
    return pearson(_ranks(a.flatten()), _ranks(b.flatten()))


def ssim(a: Tensor, b: Tensor, window: int = 7, k1: float = 0.01, k2: float = 0.03) -> float:
    """SSIM of two 2-D maps (scikit-image's definition; ``data_range`` the range of both maps)."""
    if a.dim() != 2 or a.shape != b.shape:
        raise LiftCamError(f"SSIM compares two 2-D maps of one shape, not {tuple(a.shape)} and {tuple(b.shape)}")
    if min(a.shape) < window:
        raise LiftCamError(f"SSIM's {window}x{window} window does not fit a {tuple(a.shape)} map")
    a, b = a.double(), b.double()
    data_range = float(torch.maximum(a.max(), b.max()) - torch.minimum(a.min(), b.min()))
    # windows inside the map only: scikit-image pads, then crops (window - 1) / 2 pixels from every side
    stack = torch.stack([a, b, a * a, b * b, a * b])[:, None]
    mu_a, mu_b, aa, bb, ab = F.avg_pool2d(stack, window, stride=1)[:, 0]
    n = window * window
    covariance = n / (n - 1)  # sample covariances
    var_a, var_b = covariance * (aa - mu_a * mu_a), covariance * (bb - mu_b * mu_b)
    cov_ab = covariance * (ab - mu_a * mu_b)
    c1, c2 = (k1 * data_range) ** 2, (k2 * data_range) ** 2
    if c1 == 0:  # two equal constant maps
        return 1.0
    index = (2 * mu_a * mu_b + c1) * (2 * cov_ab + c2) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
    return float(index.mean())


def hog(a: Tensor, b: Tensor) -> float:
    """Pearson's correlation of the two maps' HOG descriptors (scikit-image's ``hog`` defaults)."""
    try:
        from skimage.feature import hog as descriptor
    except ImportError:
        raise LiftCamError("the HOG similarity needs scikit-image: pip install 'liftcam[samples]'") from None
    first = torch.from_numpy(descriptor(a.detach().double().cpu().numpy()))
    second = torch.from_numpy(descriptor(b.detach().double().cpu().numpy()))
    return pearson(first, second)


#: The similarities by name.
SIMILARITIES: dict[str, Similarity] = {"spearman": spearman, "pearson": pearson, "ssim": ssim, "hog": hog}


def get_similarity(name: str | Similarity) -> Similarity:
    """The similarity called ``name`` (or ``name`` itself when it is a function)."""
    if callable(name):
        return name
    try:
        return SIMILARITIES[name]
    except KeyError:
        raise LiftCamError(f"unknown similarity {name!r}; available: {', '.join(SIMILARITIES)}") from None
