"""The registry of CAM methods: one small module each, supplying only coefficients or a map."""

from __future__ import annotations

from ..errors import LiftCamError
from .ablation_cam import AblationCam
from .base import CamMethod, MapMethod, MethodInputs, MethodResult, Need
from .cam import Cam
from .eigen_cam import EigenCam
from .eigen_grad_cam import EigenGradCam
from .fem import Fem
from .finer_cam import FinerCam
from .full_grad import FullGrad
from .grad_cam import GradCam
from .grad_cam_elementwise import GradCamElementWise
from .grad_cam_plusplus import GradCamPlusPlus
from .hires_cam import HiResCam
from .is_cam import IsCam
from .kpca_cam import KpcaCam
from .layer_cam import LayerCam
from .lift_cam import LiftCam
from .lime_cam import LimeCam
from .lrp_cam import LrpCam
from .random_cam import RandomCam
from .score_cam import ScoreCam
from .shap import Shap
from .shapley_cam import ShapleyCam
from .smoothgrad_cam_pp import SmoothGradCamPlusPlus
from .ss_cam import SsCam
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
    GradCamElementWise,
    EigenCam,
    EigenGradCam,
    KpcaCam,
    Fem,
    FinerCam,
    FullGrad,
    SsCam,
    IsCam,
    SmoothGradCamPlusPlus,
    RandomCam,
)
_REGISTRY: dict[str, type[CamMethod]] = {cls.name: cls for cls in _CLASSES}

#: Names of the available methods, in display order.
METHODS: tuple[str, ...] = tuple(_REGISTRY)
#: Methods that need one forward/backward pass at most (the fast family).
GRADIENT_FAMILY: tuple[str, ...] = tuple(name for name, cls in _REGISTRY.items() if cls.single_pass)


def method_class(name: str) -> type[CamMethod]:
    """The class registered under ``name``."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise LiftCamError(f"unknown method {name!r}; available: {', '.join(METHODS)}") from None


def get_method(method: str | CamMethod) -> CamMethod:
    """A method instance: the given one, or the default-configured one registered under a name."""
    if isinstance(method, CamMethod):
        return method
    return method_class(method)()


def sampled_method(name: str, seed: int = 0, n_samples: int | None = None) -> CamMethod:
    """The method ``name``, with ``seed`` (and ``n_samples``) for the methods that sample; others as registered."""
    return method_class(name).seeded(seed, n_samples)


__all__ = [
    "GRADIENT_FAMILY",
    "METHODS",
    "AblationCam",
    "Cam",
    "CamMethod",
    "EigenCam",
    "EigenGradCam",
    "Fem",
    "FinerCam",
    "FullGrad",
    "GradCam",
    "GradCamElementWise",
    "GradCamPlusPlus",
    "HiResCam",
    "IsCam",
    "KpcaCam",
    "LayerCam",
    "LiftCam",
    "LimeCam",
    "LrpCam",
    "MapMethod",
    "MethodInputs",
    "MethodResult",
    "Need",
    "RandomCam",
    "ScoreCam",
    "Shap",
    "ShapleyCam",
    "SmoothGradCamPlusPlus",
    "SsCam",
    "XGradCam",
    "get_method",
    "method_class",
    "sampled_method",
]
