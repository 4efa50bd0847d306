"""A small corpus of bad and awkward inputs, generated at test time (nothing is stored in the repo)."""

from __future__ import annotations

import io
import os
import pickle
import struct
import zlib
from pathlib import Path

import numpy as np
import torch
from PIL import Image


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG that declares ``width`` x ``height`` pixels and holds almost no data (a decompression bomb header)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")
    )


def _jpeg_with_garbage_exif(good: Image.Image) -> bytes:
    exif = b"Exif\x00\x00" + b"MM\x00\x2a\x00\x00\x00\x08" + b"\xff\xff" + os.urandom(40)
    buffer = io.BytesIO()
    good.convert("RGB").resize((64, 48)).save(buffer, "JPEG", exif=exif)
    return buffer.getvalue()


class _Payload:
    """Unpickling this runs a command: what ``torch.load(weights_only=True)`` must refuse."""

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, ("echo pwned > /tmp/liftcam-pwned",))


#: Files a reader must refuse, with a word its reason must contain.
REFUSED = {
    "zero.png": "empty",
    "truncated.png": "cannot read",
    "truncated.jpg": "cannot read",
    "text.png": "not an image",
    "bomb.png": "too large",
    "nan.tiff": "NaN",
    "folder.png": "folder",
    "fifo.png": "not a regular file",
    "loop.png": "link loop",
}
#: Awkward but valid images that must be explained.
ACCEPTED = ("cmyk.jpg", "deep16.png", "one.png", "thin.png", "animated.gif", "exif.jpg", "caf\udce9.png")


def make_corpus(folder: Path, good: Path) -> dict[str, Path]:
    """Write every corpus file into ``folder``; ``good`` is a real photo to derive valid ones from."""
    folder.mkdir(parents=True, exist_ok=True)
    photo = Image.open(good).convert("RGB")
    data = good.read_bytes()
    paths: dict[str, Path] = {}

    def put(name: str, content: bytes) -> None:
        paths[name] = folder / name
        paths[name].write_bytes(content)

    put("zero.png", b"")
    put("truncated.png", data[: len(data) // 3])
    jpeg = io.BytesIO()
    photo.save(jpeg, "JPEG")
    put("truncated.jpg", jpeg.getvalue()[:2000])
    put("text.png", b"this is not an image\n")
    put("bomb.png", _png_header_only(30000, 30000))
    nan = np.full((32, 32), np.nan, dtype=np.float32)
    nan[:16] = 0.5
    Image.fromarray(nan, mode="F").save(folder / "nan.tiff")
    paths["nan.tiff"] = folder / "nan.tiff"
    (folder / "folder.png").mkdir(exist_ok=True)
    paths["folder.png"] = folder / "folder.png"
    os.mkfifo(folder / "fifo.png")
    paths["fifo.png"] = folder / "fifo.png"
    (folder / "loop.png").symlink_to(folder / "loop.png")
    paths["loop.png"] = folder / "loop.png"

    photo.convert("CMYK").save(folder / "cmyk.jpg")
    deep = (np.asarray(photo.convert("L"), dtype=np.uint16) * 257).astype(np.uint16)
    Image.fromarray(deep).save(folder / "deep16.png")
    Image.new("RGB", (1, 1), (200, 30, 30)).save(folder / "one.png")
    Image.new("RGB", (1, 5000), (30, 200, 30)).save(folder / "thin.png")
    frames = [photo.resize((64, 48)), photo.resize((64, 48)).rotate(90)]
    frames[0].save(folder / "animated.gif", save_all=True, append_images=frames[1:], duration=100, loop=0)
    put("exif.jpg", _jpeg_with_garbage_exif(photo))
    for name in ("cmyk.jpg", "deep16.png", "one.png", "thin.png", "animated.gif"):
        paths[name] = folder / name
    odd = os.fsencode(folder) + b"/caf\xe9.png"  # not valid UTF-8
    with open(odd, "wb") as f:
        f.write(data)
    paths["caf\udce9.png"] = Path(os.fsdecode(odd))
    return paths


def make_bad_weights(folder: Path, model: torch.nn.Module) -> dict[str, Path]:
    """A pickle payload named .pth, and state dicts with a wrong fc (10 classes) and a wrong first conv (3x3)."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = {"payload": folder / "payload.pth", "fc10": folder / "fc10.pth", "conv3": folder / "conv3.pth"}
    paths["payload"].write_bytes(pickle.dumps({"weight": _Payload()}))
    state = model.state_dict()
    last_linear = [k for k, v in state.items() if k.endswith("weight") and v.dim() == 2][-1]
    first_conv = next(k for k, v in state.items() if v.dim() == 4)
    wrong_fc = dict(state)
    wrong_fc[last_linear] = torch.zeros(10, state[last_linear].shape[1])
    torch.save(wrong_fc, paths["fc10"])
    wrong_conv = dict(state)
    out_channels, in_channels = state[first_conv].shape[:2]
    wrong_conv[first_conv] = (
        torch.zeros(out_channels, in_channels, 3, 3)
        if state[first_conv].shape[2] != 3
        else (torch.zeros(out_channels, in_channels, 5, 5))
    )
    torch.save(wrong_conv, paths["conv3"])
    return paths
