"""The registry of CAM methods: one small module each, supplying only coefficients or a map."""

from __future__ import annotations

from ..errors import LiftCamError
from .ablation_cam import AblationCam
from .base import CamMethod, MethodInputs, MethodResult, Need
from .cam import Cam
from .grad_cam import GradCam
from .grad_cam_plusplus import GradCamPlusPlus
from .hires_cam import HiResCam
from .layer_cam import LayerCam
from .lift_cam import LiftCam
from .lime_cam import LimeCam
from .lrp_cam import LrpCam
from .score_cam import ScoreCam
from .shap import Shap
from .shapley_cam import ShapleyCam
from .xgrad_cam import XGradCam

_CLASSES: tuple[type[CamMethod], ...] = (
    LiftCam,
    Cam,
    GradCam,
    GradCamPlusPlus,
    XGradCam,
    HiResCam,
    LayerCam,
    ScoreCam,
    AblationCam,
    ShapleyCam,
    LrpCam,
    LimeCam,
    Shap,
)
_REGISTRY: dict[str, type[CamMethod]] = {cls.name: cls for cls in _CLASSES}

#: Names of the available methods, in display order.
METHODS: tuple[str, ...] = tuple(_REGISTRY)
#: Methods that need one forward/backward pass at most (the fast family).
GRADIENT_FAMILY: tuple[str, ...] = ("lift-cam", "cam", "grad-cam", "grad-cam++", "xgrad-cam", "hires-cam", "layer-cam")


def get_method(method: str | CamMethod) -> CamMethod:
    """A method instance: the given one, or the default-configured one registered under a name."""
    if isinstance(method, CamMethod):
        return method
    try:
        return _REGISTRY[method]()
    except KeyError:
        raise LiftCamError(f"unknown method {method!r}; available: {', '.join(METHODS)}") from None


def sampled_method(name: str, seed: int = 0, n_samples: int | None = None) -> CamMethod:
    """The method ``name``, with ``seed`` (and ``n_samples``) for the methods that sample; others as registered."""
    if name == "shap":
        return Shap(seed=seed) if n_samples is None else Shap(n_samples=n_samples, seed=seed)
    if name == "lime-cam":
        return LimeCam(seed=seed)
    return get_method(name)


__all__ = [
    "GRADIENT_FAMILY",
    "METHODS",
    "AblationCam",
    "Cam",
    "CamMethod",
    "GradCam",
    "GradCamPlusPlus",
    "HiResCam",
    "LayerCam",
    "LiftCam",
    "LimeCam",
    "LrpCam",
    "MethodInputs",
    "MethodResult",
    "Need",
    "ScoreCam",
    "Shap",
    "ShapleyCam",
    "XGradCam",
    "get_method",
    "sampled_method",
]
