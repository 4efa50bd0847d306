"""Real photographs that ship inside installed wheels, found without importing their packages."""

from __future__ import annotations

import importlib.util
from pathlib import Path

# name -> (package, path inside the package). Only photographs, no synthetic images.
SAMPLE_PHOTOS: dict[str, tuple[str, str]] = {
    "chelsea": ("skimage", "data/chelsea.png"),
    "coffee": ("skimage", "data/coffee.png"),
    "astronaut": ("skimage", "data/astronaut.png"),
    "rocket": ("skimage", "data/rocket.jpg"),
    "motorcycle": ("skimage", "data/motorcycle_left.png"),
    "china": ("sklearn", "datasets/images/china.jpg"),
    "flower": ("sklearn", "datasets/images/flower.jpg"),
    "grace_hopper": ("matplotlib", "mpl-data/sample_data/grace_hopper.jpg"),
}


def _package_dir(package: str) -> Path | None:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def sample_photo(name: str) -> Path | None:
    """Path of the sample photo ``name``, or None where its package is not installed."""
    package, inner = SAMPLE_PHOTOS[name]
    root = _package_dir(package)
    if root is None:
        return None
    path = root / inner
    return path if path.is_file() else None


def sample_photos() -> dict[str, Path]:
    """All sample photos available in this environment, by name."""
    found = {name: sample_photo(name) for name in SAMPLE_PHOTOS}
    return {name: path for name, path in found.items() if path is not None}
