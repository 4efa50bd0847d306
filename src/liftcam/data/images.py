"""Reading images of any Pillow mode and preparing them as the model expects."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torchvision.transforms.functional as TF
from PIL import Image, ImageOps, UnidentifiedImageError
from torch import Tensor
from torchvision.transforms import InterpolationMode

from ..errors import ImageError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def image_extensions() -> frozenset[str]:
    """File extensions Pillow can open (lower case, with the dot)."""
    Image.init()
    return frozenset(ext.lower() for ext in Image.registered_extensions())


def find_images(inputs: Iterable[str | Path]) -> list[Path]:
    """Expand folders (recursively, sorted) into image files; files are kept as given, even bad ones."""
    extensions = image_extensions()
    found: list[Path] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            found.extend(sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in extensions))
        else:
            found.append(path)
    return found


def _to_8bit(image: Image.Image) -> Image.Image:
    """High bit-depth single-channel images (I;16, I, F) scaled to 8 bits by their dtype's range."""
    array = np.asarray(image)
    if array.dtype.kind == "f":
        top = 1.0 if float(np.nanmax(array, initial=0.0)) <= 1.0 else 255.0
    else:
        top = 65535.0 if int(array.max(initial=0)) > 255 else 255.0
    scaled = np.clip(np.nan_to_num(array.astype(np.float64)) / top * 255.0, 0, 255)
    return Image.fromarray(np.round(scaled).astype(np.uint8), mode="L")


def to_rgb(image: Image.Image) -> Image.Image:
    """Any Pillow image as 8-bit RGB: transparency composited on white, 16-bit scaled down."""
    if image.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        image = _to_8bit(image)
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def load_image(path: str | Path) -> Image.Image:
    """Read ``path`` fully as RGB (EXIF orientation applied); :class:`ImageError` with the reason."""
    path = Path(path)
    if not path.exists():
        raise ImageError(f"{path}: no such file")
    if path.is_dir():
        raise ImageError(f"{path}: is a folder, not an image")
    try:
        with Image.open(path) as image:
            image.load()
            oriented = ImageOps.exif_transpose(image)
            return to_rgb(oriented if oriented is not None else image)
    except UnidentifiedImageError:
        raise ImageError(f"{path}: not an image Pillow can read") from None
    except (OSError, ValueError, SyntaxError) as exc:
        raise ImageError(f"{path}: cannot read image ({exc})") from None


@dataclass(frozen=True)
class Preprocessing:
    """Resize the shorter side, centre-crop, scale to [0, 1], normalise per channel."""

    resize: int = 256
    crop: int = 224
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    interpolation: str = "bilinear"

    def crop_image(self, image: Image.Image) -> Image.Image:
        """The RGB image as the model sees it, before normalisation (for overlays)."""
        mode = InterpolationMode(self.interpolation)
        resized = TF.resize(image, [self.resize], interpolation=mode, antialias=True)
        cropped: Image.Image = TF.center_crop(resized, [self.crop])
        return cropped

    def normalize(self, image: Image.Image) -> Tensor:
        """(3, crop, crop) float tensor of an already cropped image."""
        tensor: Tensor = TF.normalize(TF.to_tensor(image), list(self.mean), list(self.std))
        return tensor

    def __call__(self, image: Image.Image) -> Tensor:
        return self.normalize(self.crop_image(image))

    def batch(self, images: Sequence[Image.Image]) -> Tensor:
        return torch.stack([self(im) for im in images])

    def resized_size(self, width: int, height: int) -> tuple[int, int]:
        """(width, height) after resizing the shorter side to ``resize`` (torchvision's rounding)."""
        short, long = (width, height) if width <= height else (height, width)
        new_long = int(self.resize * long / short)
        return (self.resize, new_long) if width <= height else (new_long, self.resize)

    def transform_boxes(self, boxes: Tensor, width: int, height: int) -> Tensor:
        """Boxes (n, 4) ``(x0, y0, x1, y1)`` in original pixels -> pixels of the crop, clipped to it;
        boxes left with no area are dropped."""
        new_w, new_h = self.resized_size(width, height)
        left = round((new_w - self.crop) / 2.0)  # torchvision's centre crop
        top = round((new_h - self.crop) / 2.0)
        scale = torch.tensor([new_w / width, new_h / height, new_w / width, new_h / height])
        shift = torch.tensor([left, top, left, top], dtype=torch.float32)
        moved = (boxes.float().reshape(-1, 4) * scale - shift).clamp(0, self.crop)
        keep = (moved[:, 2] > moved[:, 0]) & (moved[:, 3] > moved[:, 1])
        return moved[keep]
