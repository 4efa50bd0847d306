"""Labelled image sets for evaluation: folders, ImageFolder layouts, and ImageNet validation boxes.

* A folder of images, searched recursively. Images in sub-folders named by class (torchvision's
  ImageFolder layout) take the folder's class: an index (``"281"``) or a WordNet id
  (``"n02123045"``), mapped to the class index through a synset list (``LOC_synset_mapping.txt``:
  one ``wnid name`` per line, in class order; when exactly 1000 WordNet-id folders are present their
  sorted order is the class order, as in torchvision's category order).
* Object boxes and labels, matched to images by file stem, from PASCAL-VOC XML files (ImageNet's
  ``val/*.xml``; next to the images or in a given folder), from ``LOC_val_solution.csv``
  (``ImageId,PredictionString`` with ``wnid x0 y0 x1 y1`` repeated), or from a simple CSV with the
  header ``image,class,x0,y0,x1,y1`` (one row per box, class as index or WordNet id).

Boxes are in the original image's pixels; :meth:`Preprocessing.transform_boxes` maps them through the
same resize and centre crop as the image.

``load_dataset("samples")`` is the bundled labelled set: the sample photos, five of them with a class
and an object box annotated by hand for liftcam (``sample_boxes.csv`` in this package).
"""

from __future__ import annotations

import csv
import io
import math
import random
import re
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor

from ..errors import LiftCamError
from .images import find_images

_WNID = re.compile(r"n\d{8}")
#: The name of the bundled labelled set.
SAMPLES = "samples"
SAMPLE_BOXES = Path(__file__).with_name("sample_boxes.csv")


@dataclass
class Sample:
    """One image with its class (None if unknown) and object boxes (x0, y0, x1, y1) in original pixels."""

    path: Path
    label: int | None = None
    boxes: list[tuple[float, float, float, float]] = field(default_factory=list)

    def boxes_tensor(self) -> Tensor:
        return torch.tensor(self.boxes, dtype=torch.float32, device="cpu").reshape(-1, 4)


def _read_text(path: Path, what: str) -> str:
    """A side file's text; one clear error if it is missing, not a file, or not text."""
    if not path.exists():
        raise LiftCamError(f"{what} {path}: no such file")
    if not path.is_file():
        raise LiftCamError(f"{what} {path}: not a regular file")
    try:
        data = path.read_bytes()
        text = data.decode("utf-8-sig")
    except OSError as exc:
        raise LiftCamError(f"{what} {path}: cannot read ({exc.strerror or exc})") from None
    except UnicodeDecodeError:
        raise LiftCamError(f"{what} {path}: not a text file (not UTF-8)") from None
    if "\0" in text:
        raise LiftCamError(f"{what} {path}: not a text file (binary data)")
    return text


def _coordinates(values: Sequence[str], where: str) -> tuple[float, float, float, float]:
    """``x0 y0 x1 y1`` as numbers, with ``x1 > x0`` and ``y1 > y0``."""
    if len(values) != 4:
        raise LiftCamError(f"{where}: a box needs 4 coordinates x0 y0 x1 y1, found {len(values)}")
    try:
        x0, y0, x1, y1 = (float(v) for v in values)
    except ValueError:
        raise LiftCamError(f"{where}: box coordinates {' '.join(values)!r} are not all numbers") from None
    if not all(math.isfinite(v) for v in (x0, y0, x1, y1)):
        raise LiftCamError(f"{where}: box coordinates must be finite numbers")
    if x1 <= x0 or y1 <= y0:
        raise LiftCamError(f"{where}: box ({x0:g}, {y0:g}, {x1:g}, {y1:g}) has no area (needs x1 > x0 and y1 > y0)")
    return x0, y0, x1, y1


def read_synsets(path: str | Path) -> list[str]:
    """WordNet ids in class order from a synset list (``wnid [name]`` per line)."""
    wnids = []
    for line in _read_text(Path(path), "synset list").splitlines():
        token = line.strip().split(" ")[0].split(",")[0] if line.strip() else ""
        if token:
            if not _WNID.fullmatch(token):
                raise LiftCamError(f"{path}: {token!r} is not a WordNet id (n########)")
            wnids.append(token)
    return wnids


class ClassIndex:
    """Resolves a class given as an index or a WordNet id."""

    def __init__(self, wnids: Sequence[str] | None) -> None:
        self.index = {w: i for i, w in enumerate(wnids or [])}

    def __call__(self, name: str, where: str) -> int:
        name = name.strip()
        if name.isdigit():
            return int(name)
        if _WNID.fullmatch(name):
            if not self.index:
                raise LiftCamError(f"{where}: class {name} is a WordNet id; pass the synset list (--synsets)")
            if name not in self.index:
                raise LiftCamError(f"{where}: WordNet id {name} is not in the synset list")
            return self.index[name]
        raise LiftCamError(f"{where}: class {name!r} is neither an index nor a WordNet id")


def _voc(path: Path, classes: ClassIndex) -> tuple[int | None, list[tuple[float, float, float, float]]]:
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as exc:
        raise LiftCamError(f"{path}: not a PASCAL-VOC XML file ({exc})") from None
    label, boxes = None, []
    for obj in root.iter("object"):
        name = obj.findtext("name")
        box = obj.find("bndbox")
        if name is None or box is None:
            continue
        label = classes(name, str(path)) if label is None else label
        coords = [(box.findtext(k) or "").strip() for k in ("xmin", "ymin", "xmax", "ymax")]
        boxes.append(_coordinates(coords, str(path)))
    return label, boxes


def _annotations(path: Path, classes: ClassIndex) -> dict[str, tuple[int | None, list[tuple[float, ...]]]]:
    """Annotations by image stem from a folder of VOC XML files or a CSV file."""
    found: dict[str, tuple[int | None, list[tuple[float, ...]]]] = {}
    if path.is_dir():
        for xml in sorted(path.rglob("*.xml")):
            found[xml.stem] = _voc(xml, classes)  # type: ignore[assignment]
        return found
    text = _read_text(path, "boxes file")
    try:
        rows = list(csv.reader(io.StringIO(text, newline="")))
    except csv.Error as exc:
        raise LiftCamError(f"boxes file {path}: not a CSV file ({exc})") from None
    if not rows:
        return found
    header = [h.strip().lower() for h in rows[0]]
    numbered = [(n, row) for n, row in enumerate(rows[1:], start=2) if any(v.strip() for v in row)]
    if header[:2] == ["imageid", "predictionstring"]:
        for n, row in numbered:
            where = f"{path}: line {n}"
            if len(row) < 2 or not row[0].strip():
                raise LiftCamError(f"{where}: expected ImageId,PredictionString")
            tokens = row[1].split()
            if len(tokens) % 5:
                raise LiftCamError(
                    f"{where}: PredictionString must repeat 'wnid x0 y0 x1 y1'; found {len(tokens)} tokens"
                )
            boxes: list[tuple[float, ...]] = []
            label = None
            for i in range(0, len(tokens), 5):
                label = classes(tokens[i], where) if label is None else label
                boxes.append(_coordinates(tokens[i + 1 : i + 5], where))
            found[Path(row[0]).stem] = (label, boxes)
    elif header[:6] == ["image", "class", "x0", "y0", "x1", "y1"]:
        for n, row in numbered:
            where = f"{path}: line {n}"
            if len(row) < 2 or not row[0].strip():
                raise LiftCamError(f"{where}: expected image,class[,x0,y0,x1,y1]")
            stem = Path(row[0]).stem
            label = classes(row[1], where)
            entry = found.setdefault(stem, (label, []))
            coords = [v.strip() for v in row[2:]]
            if any(coords):  # a row without coordinates gives a label only
                entry[1].append(_coordinates(coords, where))
    else:
        raise LiftCamError(f"{path}: expected the header ImageId,PredictionString or image,class,x0,y0,x1,y1")
    return found


def load_dataset(
    root: str | Path,
    boxes: str | Path | None = None,
    synsets: str | Path | None = None,
    limit: int | None = None,
    seed: int = 0,
) -> list[Sample]:
    """The images under ``root`` (sorted) with labels and boxes; ``limit`` picks a seeded random subset."""
    root = Path(root)
    if boxes is not None and not Path(boxes).exists():
        raise LiftCamError(f"boxes file {boxes}: no such file or folder")
    wnids = read_synsets(synsets) if synsets else None
    if str(root) == SAMPLES and not root.exists():
        return _sample_set(limit, seed, boxes, wnids)
    if not root.exists():
        raise LiftCamError(f"{root}: no such folder or file")
    files = find_images([root])
    if not files:
        raise LiftCamError(f"{root}: no images found")
    folders = {p.parent.name for p in files if p.parent != root} if root.is_dir() else set()
    if wnids is None and len(folders) == 1000 and all(_WNID.fullmatch(f) for f in folders):
        wnids = sorted(folders)
    classes = ClassIndex(wnids)
    annotations: dict[str, tuple[int | None, list[tuple[float, ...]]]] = {}
    if boxes is not None:
        annotations = _annotations(Path(boxes), classes)
    elif root.is_dir() and any(root.rglob("*.xml")):
        annotations = _annotations(root, classes)
    samples = []
    for path in files:
        label: int | None = None
        if root.is_dir() and path.parent != root:
            name = path.parent.name
            if name.isdigit() or _WNID.fullmatch(name):
                label = classes(name, str(path.parent))
        annotated = annotations.get(path.stem)
        if annotated is not None:
            label = annotated[0] if annotated[0] is not None else label
        sample_boxes = [tuple(b) for b in annotated[1]] if annotated else []
        samples.append(Sample(path, label, sample_boxes))  # type: ignore[arg-type]
    if limit is not None and limit < len(samples):
        chosen = sorted(random.Random(seed).sample(range(len(samples)), limit))
        samples = [samples[i] for i in chosen]
    return samples


def _sample_set(
    limit: int | None, seed: int, boxes: str | Path | None = None, wnids: list[str] | None = None
) -> list[Sample]:
    """The bundled photos with the bundled annotations, or with the boxes file given."""
    from .samples import sample_photos

    photos = sorted(sample_photos().values())
    if not photos:
        raise LiftCamError("no sample photos installed (pip install 'liftcam[samples]')")
    annotations = _annotations(Path(boxes) if boxes is not None else SAMPLE_BOXES, ClassIndex(wnids))
    samples = [
        Sample(p, *(annotations[p.stem][0], [tuple(b) for b in annotations[p.stem][1]]))  # type: ignore[arg-type]
        if p.stem in annotations
        else Sample(p)
        for p in photos
    ]
    if limit is not None and limit < len(samples):
        chosen = sorted(random.Random(seed).sample(range(len(samples)), limit))
        samples = [samples[i] for i in chosen]
    return samples
