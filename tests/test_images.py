"""Image files of every Pillow mode load as RGB; unreadable files fail with a one-line reason."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from liftcam.data import Preprocessing, find_images, load_image
from liftcam.errors import ImageError


def _save(tmp_path: Path, name: str, image: Image.Image, **kw: object) -> Path:
    path = tmp_path / name
    image.save(path, **kw)
    return path


def test_modes_load_as_rgb(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    rgb = Image.fromarray(rng.integers(0, 255, (40, 60, 3), dtype=np.uint8))
    gray16 = Image.fromarray((np.linspace(0, 65535, 40 * 60).reshape(40, 60)).astype(np.uint16))
    rgba = rgb.convert("RGBA")
    rgba.putalpha(0)  # fully transparent: composited on white
    palette = rgb.convert("P")
    cases = {
        "rgb.png": (rgb, {}),
        "gray.png": (rgb.convert("L"), {}),
        "rgba.png": (rgba, {}),
        "palette.png": (palette, {}),
        "gray16.png": (gray16, {}),
        "cmyk.jpg": (rgb.convert("CMYK"), {}),
        "la.png": (rgb.convert("LA"), {}),
        "rgb.bmp": (rgb, {}),
        "rgb.webp": (rgb, {"lossless": True}),
    }
    for name, (image, kw) in cases.items():
        loaded = load_image(_save(tmp_path, name, image, **kw))
        assert loaded.mode == "RGB" and loaded.size == (60, 40), name
    assert np.all(np.asarray(load_image(tmp_path / "rgba.png")) == 255)
    sixteen = np.asarray(load_image(tmp_path / "gray16.png"))
    assert sixteen[0, 0, 0] == 0 and sixteen[-1, -1, 0] == 255  # full 16-bit range scaled to 8 bits
    assert np.array_equal(np.asarray(load_image(tmp_path / "rgb.png")), np.asarray(rgb))


def test_unreadable_files(tmp_path: Path) -> None:
    text = tmp_path / "notes.png"
    text.write_text("not an image")
    big = Image.fromarray(np.random.default_rng(1).integers(0, 255, (200, 200, 3), dtype=np.uint8))
    big_path = _save(tmp_path, "big.png", big)
    cut = tmp_path / "cut.png"
    cut.write_bytes(big_path.read_bytes()[: len(big_path.read_bytes()) // 2])
    with pytest.raises(ImageError, match="not an image"):
        load_image(text)
    with pytest.raises(ImageError, match=r"cut\.png: cannot read image"):
        load_image(cut)
    with pytest.raises(ImageError, match="no such file"):
        load_image(tmp_path / "missing.jpg")
    with pytest.raises(ImageError, match="folder"):
        load_image(tmp_path)


def test_find_images_expands_folders(tmp_path: Path) -> None:
    (tmp_path / "cls_a").mkdir()
    _save(tmp_path / "cls_a", "b.png", Image.new("RGB", (8, 8)))
    _save(tmp_path, "a.jpg", Image.new("RGB", (8, 8)))
    (tmp_path / "readme.txt").write_text("x")
    found = find_images([tmp_path, tmp_path / "missing.png"])
    assert found == [tmp_path / "a.jpg", tmp_path / "cls_a" / "b.png", tmp_path / "missing.png"]


def test_preprocessing_resizes_and_crops() -> None:
    image = Image.new("RGB", (400, 300), (255, 0, 0))
    prep = Preprocessing(resize=256, crop=224, mean=(0.5,) * 3, std=(0.5,) * 3)
    assert prep.crop_image(image).size == (224, 224)
    x = prep(image)
    assert x.shape == (3, 224, 224)
    assert abs(float(x[0].mean()) - 1.0) < 1e-5 and abs(float(x[1].mean()) + 1.0) < 1e-5
