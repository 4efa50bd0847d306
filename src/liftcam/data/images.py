"""Reading images of any Pillow mode and preparing them as the model expects."""

from __future__ import annotations

import errno
import math
import os
import stat
import struct
import warnings
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
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
    with np.errstate(all="ignore"):  # huge floats: clipped below, never a raw numpy warning
        if array.dtype.kind == "f":
            top = 1.0 if float(np.nanmax(array, initial=0.0)) <= 1.0 else 255.0
        else:
            top = 65535.0 if int(array.max(initial=0)) > 255 else 255.0
        scaled = np.clip(np.nan_to_num(array.astype(np.float64)) / top, 0.0, 1.0) * 255.0
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


#: Default pixel budget of one decoded image (64 megapixels: 192 MB as RGB). Larger JPEGs are decoded
#: reduced (1/2, 1/4 or 1/8 per side) to fit it; other formats larger than it are refused.
DEFAULT_MAX_PIXELS = 64_000_000
#: ``image.info`` key of the size of the file's image when it was decoded reduced (boxes are in it).
ORIGINAL_SIZE = "liftcam_original_size"
_FILE_KINDS = ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a character device"),
               (stat.S_ISBLK, "a block device"))  # fmt: skip


def check_image_file(path: str | Path) -> Path:
    """``path`` if it is (or links to) a non-empty regular file; :class:`ImageError` with the reason otherwise.

    Runs before anything opens the file: opening a FIFO would block forever.
    """
    path = Path(path)
    try:
        info = os.stat(path)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise ImageError(path, "symbolic link loop") from None
        if exc.errno == errno.ENOENT:
            raise ImageError(path, "broken symbolic link" if path.is_symlink() else "no such file") from None
        if exc.errno == errno.EACCES:
            raise ImageError(path, "permission denied") from None
        raise ImageError(path, f"cannot access ({exc.strerror})") from None
    if stat.S_ISDIR(info.st_mode):
        raise ImageError(path, "is a folder, not an image")
    if not stat.S_ISREG(info.st_mode):
        kind = next((name for test, name in _FILE_KINDS if test(info.st_mode)), "a special file")
        raise ImageError(path, f"not a regular file ({kind})")
    if info.st_size == 0:
        raise ImageError(path, "empty file")
    if not os.access(path, os.R_OK):
        raise ImageError(path, "permission denied")
    return path


@contextmanager
def _own_pixel_check() -> Iterator[None]:
    """Pillow's decompression-bomb limit off while a header is read: :func:`load_image` checks its own
    budget before decoding anything (restored on exit, also after an exception)."""
    saved = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None
    try:
        yield
    finally:
        Image.MAX_IMAGE_PIXELS = saved


def _fit_budget(image: Image.Image, path: Path, max_pixels: int) -> None:
    """Decode reduced (JPEG draft mode) or refuse an image whose declared size exceeds ``max_pixels``."""
    width, height = image.size
    if width * height <= max_pixels:
        return
    if image.format == "JPEG":
        for scale in (2, 4, 8):
            if math.ceil(width / scale) * math.ceil(height / scale) <= max_pixels:
                image.draft(image.mode, (math.ceil(width / scale), math.ceil(height / scale)))
                image.info[ORIGINAL_SIZE] = (width, height)
                return
    raise ImageError(
        path,
        f"too large: {width} x {height} pixels ({width * height / 1e6:.0f} megapixels) exceeds the pixel budget of "
        f"{max_pixels / 1e6:g} megapixels (--max-pixels)",
    )


def load_image(path: str | Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Read ``path`` fully as RGB (EXIF orientation applied); :class:`ImageError` with the reason.

    Only regular files are opened. An image larger than ``max_pixels`` is decoded reduced where the
    format allows it (JPEG: 1/2, 1/4 or 1/8 per side; ``image.info[ORIGINAL_SIZE]`` then holds the file's
    size) and refused otherwise. Pillow's warnings (corrupt EXIF, ...) are not passed on; an image with
    NaN or infinite pixel values is refused.
    """
    path = check_image_file(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with _own_pixel_check():
                image = Image.open(path)
            with image:
                _fit_budget(image, path, max_pixels)
                image.load()
                original = image.info.get(ORIGINAL_SIZE)
                if image.mode == "F" and not bool(np.isfinite(np.asarray(image)).all()):
                    raise ImageError(path, "contains NaN or infinite pixel values")
                try:
                    oriented = ImageOps.exif_transpose(image)
                except Exception:  # a broken EXIF block: the pixels are fine, the orientation unknown
                    oriented = None
                rgb = to_rgb(oriented if oriented is not None else image)
                if original is not None:
                    turned = oriented is not None and oriented.size != image.size
                    rgb.info[ORIGINAL_SIZE] = original[::-1] if turned else original
                return rgb
    except UnidentifiedImageError:
        raise ImageError(path, "not an image Pillow can read") from None
    except Image.DecompressionBombError as exc:
        raise ImageError(path, f"too large ({exc})") from None
    except (OSError, ValueError, SyntaxError, EOFError, struct.error, MemoryError) as exc:
        raise ImageError(path, f"cannot read image ({exc})") from None


def original_size(image: Image.Image) -> tuple[int, int]:
    """(width, height) of the image as stored in its file (differs when it was decoded reduced)."""
    size = image.info.get(ORIGINAL_SIZE, image.size)
    return int(size[0]), int(size[1])


# Beyond this aspect ratio only the central band of an image is resized (see crop_image).
_MAX_ASPECT = 8
_BAND_MARGIN = 8
_PIL_FILTERS = {"bilinear": Image.Resampling.BILINEAR, "bicubic": Image.Resampling.BICUBIC,
                "nearest": Image.Resampling.NEAREST}  # fmt: skip


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
        width, height = image.size
        if max(width, height) > _MAX_ASPECT * min(width, height):
            # resizing all of a 1 x 5000 strip to a shorter side of 256 would take gigabytes: resize only
            # the central band the crop keeps (with a margin for the filter)
            new_w, new_h = self.resized_size(width, height)
            along_width = width > height
            new_long, long = (new_w, width) if along_width else (new_h, height)
            keep = min(new_long, self.crop + 2 * _BAND_MARGIN)
            first = (new_long - keep) // 2
            lo, hi = first * long / new_long, (first + keep) * long / new_long
            box = (lo, 0.0, hi, float(height)) if along_width else (0.0, lo, float(width), hi)
            size = (keep, self.resize) if along_width else (self.resize, keep)
            image = image.resize(size, _PIL_FILTERS[self.interpolation], box=box)
            resized = image
        else:
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
        scale = torch.tensor([new_w / width, new_h / height, new_w / width, new_h / height], device=boxes.device)
        shift = torch.tensor([left, top, left, top], dtype=torch.float32, device=boxes.device)
        moved = (boxes.float().reshape(-1, 4) * scale - shift).clamp(0, self.crop)
        keep = (moved[:, 2] > moved[:, 0]) & (moved[:, 3] > moved[:, 1])
        return moved[keep]
