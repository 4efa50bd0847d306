"""The registry of CAM methods: one small module each, supplying only coefficients or a map."""

from __future__ import annotations

from ..errors import LiftCamError
from .base import CamMethod, MethodInputs, Need
from .cam import Cam
from .grad_cam import GradCam
from .grad_cam_plusplus import GradCamPlusPlus
from .hires_cam import HiResCam
from .layer_cam import LayerCam
from .lift_cam import LiftCam
from .xgrad_cam import XGradCam

_REGISTRY: dict[str, CamMethod] = {
    m.name: m for m in (LiftCam(), Cam(), GradCam(), GradCamPlusPlus(), XGradCam(), HiResCam(), LayerCam())
}

#: Names of the available methods, in display order.
METHODS: tuple[str, ...] = tuple(_REGISTRY)


def get_method(name: str) -> CamMethod:
    """The method registered under ``name``; unknown names raise with the list of methods."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise LiftCamError(f"unknown method {name!r}; available: {', '.join(METHODS)}") from None


__all__ = ["METHODS", "CamMethod", "MethodInputs", "Need", "get_method"]
