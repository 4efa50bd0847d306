"""Exceptions raised by liftcam. Every message is one line a user can act on."""

from __future__ import annotations

import os


class LiftCamError(Exception):
    """Base class of every error liftcam raises on bad input or an unsupported model."""


class LayerError(LiftCamError):
    """The target layer cannot be found, is not used, or gives no spatial maps."""


class TargetError(LiftCamError):
    """A target class is out of range or a target specification is malformed."""


class UnsupportedOperationError(LiftCamError):
    """The DeepLIFT engine met an operation in the head that it has no rule for."""


class HeadError(LiftCamError):
    """The part of the network after the target layer cannot be evaluated as asked."""


class ImageError(LiftCamError):
    """An image file cannot be read: ``path`` and a short ``reason`` ("no such file", "too large: ...")."""

    def __init__(self, path: str | os.PathLike[str], reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = str(path)
        self.reason = reason


class ModelError(LiftCamError):
    """A model name or weights specification cannot be resolved."""
