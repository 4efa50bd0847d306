"""Pictures: heat-map overlays and side-by-side comparison grids."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
from PIL import Image


def _colormap(name: str) -> object:
    import matplotlib

    return matplotlib.colormaps[name]


def heatmap_rgb(heat: np.ndarray, colormap: str = "jet") -> np.ndarray:
    """A (H, W) map in [0, 1] as a (H, W, 3) uint8 colour image."""
    cmap = _colormap(colormap)
    rgba = cmap(np.clip(np.nan_to_num(heat), 0.0, 1.0))  # type: ignore[operator]
    return (np.asarray(rgba)[..., :3] * 255).round().astype(np.uint8)


def overlay(image: Image.Image | np.ndarray, heat: np.ndarray, alpha: float = 0.5, colormap: str = "jet") -> np.ndarray:
    """Blend the heat map over the image (same H, W): ``(1 - alpha) * image + alpha * colour(heat)``."""
    rgb = np.asarray(image.convert("RGB") if isinstance(image, Image.Image) else image, dtype=np.float32)
    if rgb.shape[:2] != heat.shape:
        raise ValueError(f"image {rgb.shape[:2]} and map {heat.shape} differ in size")
    blended = (1 - alpha) * rgb + alpha * heatmap_rgb(heat, colormap).astype(np.float32)
    return np.clip(blended, 0, 255).round().astype(np.uint8)


def save_overlay(path: str | Path, image: Image.Image | np.ndarray, heat: np.ndarray, alpha: float = 0.5) -> None:
    """Write the overlay of ``heat`` on ``image`` as a PNG."""
    Image.fromarray(overlay(image, heat, alpha)).save(path, format="PNG")


def printable(text: str) -> str:
    """``text`` as it can be drawn: the bytes of a file name that is not valid UTF-8 shown as U+FFFD."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def save_grid(
    path: str | Path,
    image: Image.Image | np.ndarray,
    maps: Mapping[str, np.ndarray],
    title: str = "",
    alpha: float = 0.5,
) -> None:
    """One row: the image, then each method's overlay titled with its name; ``title`` above."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    columns = 1 + len(maps)
    fig, axes = plt.subplots(1, columns, figsize=(2.4 * columns, 2.9), squeeze=False)
    try:
        panels = [("input", np.asarray(image))] + [(name, overlay(image, heat, alpha)) for name, heat in maps.items()]
        for ax, (name, picture) in zip(axes[0], panels, strict=True):
            ax.imshow(picture)
            ax.set_title(name, fontsize=9)
            ax.axis("off")
        if title:
            fig.suptitle(printable(title), fontsize=10)
        fig.tight_layout()
        fig.savefig(path, dpi=100)
    finally:
        plt.close(fig)
