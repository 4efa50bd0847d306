"""Pictures: heat-map overlays and side-by-side comparison grids."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
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
    captions: Mapping[str, str] | None = None,
) -> None:
    """One row: the image, then each method's overlay titled with its name (and its caption below the name,
    e.g. its Shapley fidelity); ``title`` above."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    columns = 1 + len(maps)
    fig, axes = plt.subplots(1, columns, figsize=(2.4 * columns, 3.2 if captions else 2.9), squeeze=False)
    try:
        named = {name: f"{name}\n{captions[name]}" if captions and name in captions else name for name in maps}
        panels = [("input", np.asarray(image))] + [(named[n], overlay(image, heat, alpha)) for n, heat in maps.items()]
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


def save_segmentation(
    path: str | Path, image: Image.Image | np.ndarray, labels: np.ndarray, names: Mapping[int, str], alpha: float = 0.5
) -> None:
    """The predicted classes ``labels`` (H, W) blended over the image, with a legend of ``names``."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    palette = _colormap("tab20")
    present = [int(c) for c in np.unique(labels)]
    colours: dict[int, tuple[float, float, float]] = {
        c: tuple(float(v) for v in palette(c % 20)[:3])  # type: ignore[operator, misc]
        for c in present
    }
    painted = np.zeros((*labels.shape, 3), dtype=np.float32)
    for c, colour in colours.items():
        painted[labels == c] = np.asarray(colour) * 255
    rgb = np.asarray(image.convert("RGB") if isinstance(image, Image.Image) else image, dtype=np.float32)
    blended = np.clip((1 - alpha) * rgb + alpha * painted, 0, 255).round().astype(np.uint8)
    fig, ax = plt.subplots(figsize=(4.2, 3.6))
    try:
        ax.imshow(blended)
        ax.axis("off")
        handles = [Patch(color=colours[c], label=printable(names.get(c, str(c)))) for c in present]
        ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=7, frameon=False)
        fig.tight_layout()
        fig.savefig(path, dpi=100)
    finally:
        plt.close(fig)


def draw_boxes(
    image: Image.Image | np.ndarray,
    boxes: Sequence[Sequence[float]],
    captions: Sequence[str],
    highlight: Sequence[int] = (),
) -> np.ndarray:
    """The image (H, W, 3) uint8 with ``boxes`` ``(x0, y0, x1, y1)`` drawn and captioned; ``highlight`` thicker."""
    import torch
    from torchvision.utils import draw_bounding_boxes

    rgb = np.array(image.convert("RGB") if isinstance(image, Image.Image) else image, dtype=np.uint8)  # a copy
    if not boxes:
        return rgb
    picture = torch.from_numpy(rgb).permute(2, 0, 1)
    chosen = set(highlight)
    thin = [i for i in range(len(boxes)) if i not in chosen]
    for group, width, colour in ((thin, 1, "white"), (sorted(chosen), 3, "yellow")):
        if group:
            picture = draw_bounding_boxes(
                picture,
                torch.tensor([list(boxes[i]) for i in group], dtype=torch.float32),
                [printable(captions[i]) for i in group],
                colors=colour,
                width=width,
            )
    return np.ascontiguousarray(picture.permute(1, 2, 0).numpy())
