"""Shared fixtures: tiny hand-built models, the pretrained EfficientNet-Lite0 and real photos."""

from __future__ import annotations

import warnings
from collections.abc import Iterator

import pytest
import torch
from torch import nn

from liftcam.data import load_image, sample_photos
from liftcam.models import LoadedModel, load_model

warnings.filterwarnings("ignore", message=".*local_pooling.*")


class TinyCnn(nn.Module):
    """conv body -> K maps -> GAP + Linear head (CAM's setting)."""

    def __init__(self, k: int = 4, classes: int = 3) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, k, 3, stride=2, padding=1))
        self.act = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(k, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.pool(self.act(self.body(x))), 1))


@pytest.fixture(scope="session")
def lite0() -> LoadedModel:
    return load_model("efficientnet-lite0")


@pytest.fixture(scope="session")
def photos() -> dict[str, object]:
    found = sample_photos()
    assert {"chelsea", "coffee", "motorcycle"} <= set(found), "sample photos missing: install liftcam[samples]"
    return {name: load_image(path) for name, path in found.items()}


@pytest.fixture(scope="session")
def photo_batch(lite0: LoadedModel, photos: dict[str, object]) -> torch.Tensor:
    return lite0.preprocessing.batch(list(photos.values()))  # type: ignore[arg-type]


@pytest.fixture
def tiny() -> TinyCnn:
    torch.manual_seed(0)
    return TinyCnn().eval()


@pytest.fixture
def full_precision_cuda() -> Iterator[None]:
    """CUDA in float32 arithmetic: PyTorch's default TF32 convolutions (Ampere and newer) round to ~1e-3.

    CPU-versus-CUDA tests compare the same math, so they switch TF32 off for the test and restore it.
    """
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved
