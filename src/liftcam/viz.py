"""Pictures: heat-map overlays and side-by-side comparison grids."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

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


def input_picture(x: Any) -> np.ndarray:
    """A model input (C, H, W) as a (H, W, 3) uint8 picture: each image min-max scaled (normalisation undone up
    to an affine map per image); one channel shown grey, more than three: the first three."""
    array = np.asarray(x.detach().float().cpu() if hasattr(x, "detach") else x, dtype=np.float32)
    if array.ndim == 2:
        array = array[None]
    array = np.repeat(array, 3, axis=0) if array.shape[0] == 1 else array[:3]
    low, high = float(array.min()), float(array.max())
    scaled = (array - low) / (high - low) if high > low else np.zeros_like(array)
    return (scaled.transpose(1, 2, 0) * 255).round().astype(np.uint8)


def show(
    explanations: Any,
    images: Sequence[Image.Image] | Any | None = None,
    class_names: Sequence[str] | None = None,
    alpha: float = 0.5,
    max_images: int = 8,
) -> Any:
    """A comparison grid drawn with matplotlib: one row per image, the input, then each method's overlay,
    titled with the method and the explained class. Returns the figure (a notebook displays it).

    Args:
        explanations: one :class:`~liftcam.Explanation` (or fused explanation) or a dict of them by method.
        images: the images as the model saw them (PIL crops, or a (B, C, H, W) tensor); None: the inputs kept in
            the explanations, min-max scaled per image.
        class_names: names of the classes (e.g. ``loaded.categories``), for the titles.
        max_images: the first rows drawn.
    """
    import matplotlib.pyplot as plt  # the session's backend: inline in a notebook, Agg without a display

    by_method = dict(explanations) if isinstance(explanations, Mapping) else {explanations.method: explanations}
    if not by_method:
        raise ValueError("show: no explanation given")
    first = next(iter(by_method.values()))
    rows = min(int(first.maps.shape[0]), max_images)
    if images is None:
        kept = getattr(first, "inputs", None)
        if kept is None:
            kept = next(iter(first.layers.values())).inputs if hasattr(first, "layers") else None
        pictures: list[np.ndarray | None] = [input_picture(kept[i]) if kept is not None else None for i in range(rows)]
    elif isinstance(images, Sequence) and all(isinstance(im, Image.Image) for im in images):
        pictures = [np.asarray(im.convert("RGB")) for im in list(images)[:rows]]
    else:
        pictures = [input_picture(images[i]) for i in range(rows)]
    columns = len(by_method) + (1 if pictures[0] is not None else 0)
    fig, axes = plt.subplots(rows, columns, figsize=(2.3 * columns, 2.5 * rows), squeeze=False)
    for r in range(rows):
        cls = int(first.targets[r])
        label = class_names[cls] if class_names is not None and 0 <= cls < len(class_names) else f"class {cls}"
        panels: list[tuple[str, np.ndarray]] = []
        if pictures[r] is not None:
            panels.append((label, pictures[r]))  # type: ignore[arg-type]
        picture = pictures[r]
        for method, exp in by_method.items():
            heat = exp.maps[r].detach().float().cpu().numpy()
            if picture is None:
                panels.append((method, heatmap_rgb(heat)))
            elif heat.shape != picture.shape[:2]:
                raise ValueError(f"show: the {heat.shape} maps and the {picture.shape[:2]} images differ in size")
            else:
                panels.append((method, overlay(picture, heat, alpha)))
        for ax, (title, picture) in zip(axes[r], panels, strict=True):
            ax.imshow(picture)
            ax.set_title(printable(title), fontsize=9)
            ax.axis("off")
    fig.tight_layout()
    return fig


def figure_png(figure: Any) -> bytes:
    """The figure as PNG bytes (closed afterwards)."""
    import io

    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    try:
        figure.savefig(buffer, format="png", dpi=90)
    finally:
        plt.close(figure)
    return buffer.getvalue()
