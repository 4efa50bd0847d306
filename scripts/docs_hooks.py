"""MkDocs hooks: the pages generated at build time from the code, so the site never goes stale.

- ``index.md``: the README (one source for both);
- ``reference/methods.md`` and ``reference/metrics.md``: every method's and metric's module docstring (its
  definition and equation);
- ``reference/cli.md``: every subcommand's ``--help``;
- ``gallery.md``: every method on three sample photos with the offline EfficientNet-Lite0, rendered now.
"""

from __future__ import annotations

import importlib
import inspect
import io
from pathlib import Path
from typing import Any

from mkdocs.structure.files import File, Files

ROOT = Path(__file__).resolve().parents[1]
GALLERY_PHOTOS = ("chelsea", "coffee", "motorcycle")
GALLERY_LAYER = "features.16"


def _home() -> str:
    """The README, its links into ``docs/`` made relative to the site."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    return text.replace("](docs/", "](")


def _docstring_page(title: str, intro: str, modules: list[tuple[str, str]]) -> str:
    parts = [f"# {title}\n\n{intro}\n"]
    for name, module in modules:
        doc = inspect.getdoc(importlib.import_module(module)) or ""
        parts.append(f"## `{name}`\n\n*Module `{module}`.*\n\n```text\n{doc}\n```\n")
    return "\n".join(parts)


def _methods() -> str:
    from liftcam.methods import METHODS, method_class

    modules = [(name, method_class(name).__module__) for name in METHODS]
    intro = (
        "Every method supplies its channel coefficients `alpha` (or, for a map-only method, its map); the maps are "
        "`minmax(upsample(ReLU(sum_k alpha_k A^k)))`. Each definition below is the method module's docstring."
    )
    return _docstring_page("Methods", intro, modules)


def _metrics() -> str:
    from liftcam.metrics import METRICS, get_metric

    modules = [(name, type(get_metric(name)).__module__) for name in METRICS]
    modules += [("model parameter randomisation", "liftcam.metrics.randomisation")]
    modules += [
        ("similarities", "liftcam.metrics.similarity"),
        ("Shapley fidelity", "liftcam.metrics.shapley_fidelity"),
    ]
    modules += [("ROAD's imputation", "liftcam.metrics.imputation")]
    intro = "Each metric is one module on a shared batching base; each definition below is its module's docstring."
    return _docstring_page("Metrics", intro, modules)


def _cli() -> str:
    from liftcam.cli import build_parser

    parser = build_parser()
    parts = ["# Command line\n", f"```text\n{parser.format_help()}```\n"]
    subparsers = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    for name, sub in subparsers.choices.items():  # type: ignore[attr-defined]
        parts.append(f"## `liftcam {name}`\n\n```text\n{sub.format_help()}```\n")
    return "\n".join(parts)


def _gallery(config: Any, files: Files) -> str:
    """Every method's overlay on three sample photos, computed now (the sampled methods with 32 samples)."""
    import torch
    from PIL import Image

    from liftcam import Explainer
    from liftcam.data import load_image, sample_photos
    from liftcam.methods import METHODS, IsCam, SsCam, method_class, sampled_method
    from liftcam.models import load_model
    from liftcam.runs.explain import applicable_methods, crops_to_batch
    from liftcam.viz import overlay

    torch.manual_seed(0)
    loaded = load_model("efficientnet-lite0")
    photos = sample_photos()
    crops, x = crops_to_batch(loaded, [load_image(photos[name]) for name in GALLERY_PHOTOS])
    explainer = Explainer(loaded.model, GALLERY_LAYER)
    names, notes = applicable_methods(loaded, explainer, explainer.capture(x), METHODS)
    # kept short: the sampled methods with 32 samples; SS-CAM and IS-CAM (a whole-model pass per channel and
    # sample) with 2
    quick = {"ss-cam": SsCam(n_samples=2), "is-cam": IsCam(n_samples=2)}
    specs = [quick.get(n) or sampled_method(n, 0, 32 if method_class(n).sampled else None) for n in names]
    explained = explainer(x, specs)
    classes = explained["lift-cam"].targets.tolist()

    def add(uri: str, image: Image.Image) -> str:
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        files.append(File.generated(config, f"gallery/{uri}", content=buffer.getvalue()))
        return f"gallery/{uri}"

    header = (
        "| method | "
        + " | ".join(f"{n} ({loaded.categories[c]})" for n, c in zip(GALLERY_PHOTOS, classes, strict=True))
        + " |"
    )
    rows = [header, "|---" * (len(GALLERY_PHOTOS) + 1) + "|"]
    rows.append(
        "| input | "
        + " | ".join(f"![{n}]({add(f'{n}.png', crop)})" for n, crop in zip(GALLERY_PHOTOS, crops, strict=True))
        + " |"
    )
    for name, exp in explained.items():
        cells = []
        for i, photo in enumerate(GALLERY_PHOTOS):
            picture = Image.fromarray(overlay(crops[i], exp.maps[i].cpu().numpy()))
            cells.append(f"![{name} on {photo}]({add(f'{photo}-{name}.png', picture)})")
        rows.append(f"| `{name}` | " + " | ".join(cells) + " |")
    intro = (
        f"# Gallery\n\nEvery method on three sample photos: EfficientNet-Lite0 (offline ImageNet weights) at "
        f"`{GALLERY_LAYER}`, the last MBConv block, where the head is nonlinear and the methods differ; the "
        "predicted class of each photo; sampled methods with 32 samples, SS-CAM and IS-CAM with 2 (to keep the "
        "build short). Rendered when the site was built.\n"
    )
    skipped = "".join(f"\n- {note}" for note in notes)
    return intro + (f"\nNot applicable at this layer:\n{skipped}\n" if notes else "") + "\n" + "\n".join(rows) + "\n"


def on_files(files: Files, config: Any) -> Files:
    pages = {
        "index.md": _home(),
        "reference/methods.md": _methods(),
        "reference/metrics.md": _metrics(),
        "reference/cli.md": _cli(),
    }
    pages["gallery.md"] = _gallery(config, files)
    for uri, text in pages.items():
        files.append(File.generated(config, uri, content=text))
    return files
