"""liftcam: class activation maps grounded in Shapley values.

import liftcam
exp = liftcam.explain(model, x, layer="layer4", method="lift-cam")
exp.maps     # (B, H, W) in [0, 1]
liftcam.show(liftcam.explain(model, x, "layer4", ["lift-cam", "grad-cam"]))   # a comparison grid
"""

from __future__ import annotations

from .errors import LiftCamError
from .explain import Explainer, Explanation, explain
from .fusion import FusedExplanation, MultiLayerExplainer
from .methods import METHODS
from .viz import show

__version__ = "0.1.0"

__all__ = [
    "METHODS",
    "Explainer",
    "Explanation",
    "FusedExplanation",
    "LiftCamError",
    "MultiLayerExplainer",
    "__version__",
    "explain",
    "show",
]
