"""``liftcam fidelity``: how close each method's coefficients are to the Shapley values, per image.

For every image, reference Shapley values of the activation-map game, absent maps replaced by the
reference: zeros, or with ``reference="mean"`` the mean activation over all the run's images (a
first pass through the body, cached in ``reference_mean.npz``: the mean of a batch of one image would be
the image itself, and every game trivial). Reference Shapley values (exact where the head or K
allows it, else antithetic permutation sampling with a reported standard error), then every method's
coefficients compared with them (``metrics.shapley_fidelity``) and timed. One record per
(image, method) goes to ``records.jsonl`` as soon as it is computed; an interrupted run resumes where it
stopped. At the end: ``fidelity.csv`` (per image), ``summary.md`` (mean, std per method) and
``fidelity.png`` (per-image Pearson per method).

Any kill leaves a consistent folder: an image's reference Shapley values are cached in one file
written atomically, together with their record; a cache found without its record (killed between the
two) gives the record on resume, computed nothing twice. Every value but the timings is bit-identical
between an interrupted and an uninterrupted run; the timings are kept apart (``ms`` columns, and the
last line of ``summary.md``).

``shapley_from``: another fidelity run's folder whose reference Shapley values are reused (copied into
this run's cache) for the images both runs read, matched by content (the SHA-256 of the file, kept in
each cache), when every setting that determines them agrees (all but the methods); adding a method to a
finished study, on this machine or another, then costs only that method.
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import os
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .. import __version__
from ..data.images import DEFAULT_MAX_PIXELS, load_image
from ..errors import HeadError, ImageError, LiftCamError
from ..explain import Explainer, Reference, resolve_reference
from ..head import HeadEvaluator
from ..methods import METHODS, method_class, sampled_method
from ..metrics.shapley_fidelity import FIDELITY_METRICS, fidelity
from ..models import LoadedModel
from ..shapley import Estimator, image_game, shapley_values
from ..targets import resolve_targets
from .files import open_text, tell, write_text_atomic
from .records import COMPUTE_FIELDS, RecordStore, failed_records, read_settings, run_settings, settings_differences

#: Methods with channel coefficients, compared by default (every one but the Shapley values themselves).
FIDELITY_METHODS: tuple[str, ...] = tuple(
    m for m in METHODS if method_class(m).has_coefficients and not method_class(m).ground_truth
)
REFERENCE = "shapley-reference"


@dataclass(frozen=True)
class FidelitySettings:
    """What determines a fidelity run's results."""

    model: str
    weights: str
    layer: str
    methods: tuple[str, ...]
    estimator: str
    samples: int
    seed: int
    reference: str
    max_pixels: int = DEFAULT_MAX_PIXELS

    def as_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "methods": list(self.methods), "liftcam": __version__}


def check_fidelity_methods(methods: Sequence[str]) -> None:
    """Refuse unknown methods and methods without coefficients (fidelity compares coefficients)."""
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise LiftCamError(f"unknown method {unknown[0]!r}; available: {', '.join(METHODS)}")
    mapless = [m for m in methods if not method_class(m).has_coefficients]
    if mapless:
        comparable = ", ".join(m for m in METHODS if method_class(m).has_coefficients)
        raise LiftCamError(
            f"{', '.join(mapless)} define a map, not channel coefficients, so fidelity cannot compare them with "
            f"Shapley values; methods with coefficients: {comparable}"
        )


def run_fidelity(
    loaded: LoadedModel,
    files: Sequence[Path],
    out: Path,
    layer: str | None = None,
    methods: Sequence[str] = FIDELITY_METHODS,
    estimator: Estimator = "auto",
    samples: int = 1000,
    seed: int = 0,
    reference: str = "zeros",
    max_pixels: int = DEFAULT_MAX_PIXELS,
    progress: bool = True,
    shapley_from: Path | None = None,
) -> dict[str, Any]:
    """Run (or resume) the fidelity study; returns the summary (also written to ``out``).

    ``shapley_from``: a fidelity run folder with the same settings but the methods, whose reference
    Shapley values are reused image by image (see the module's docstring).
    """
    from tqdm import tqdm

    check_fidelity_methods(methods)
    explainer = Explainer(loaded.model, layer or loaded.default_layer)
    settings = FidelitySettings(
        loaded.name, loaded.weights, explainer.layer, tuple(methods), estimator, samples, seed, reference, max_pixels
    )
    # checked before anything is written: a refused source leaves the output folder as it was
    reused = _reused_shapley(shapley_from, out, settings, files) if shapley_from is not None else None
    store = RecordStore(out, run_settings(settings.as_dict(), loaded.model), key_fields=("image", "method"))
    if store.started_afresh:  # caches of a run with other settings that wrote no record
        for stale in [*out.glob("shapley/*.npz"), out / "reference_mean.npz"]:
            stale.unlink(missing_ok=True)
    reference_spec: Reference = "zeros"
    if reference == "mean":
        reference_spec = _mean_activation(explainer, loaded, files, out, max_pixels, progress)
    elif reference != "zeros":
        raise LiftCamError(f"unknown reference {reference!r}; use 'zeros' or 'mean'")
    shapley_dir = out / "shapley"
    shapley_dir.mkdir(exist_ok=True)
    wanted = [REFERENCE, *methods]
    with tqdm(total=len(files), unit="img", desc="fidelity", disable=not progress) as bar:
        for path in files:
            key = str(path)
            if all(store.done(image=key, method=m) for m in wanted):
                bar.update(1)
                continue
            try:
                image = load_image(path, max_pixels)
            except ImageError as exc:
                if not store.done(image=key, method="error"):
                    store.append({"image": key, "method": "error", "error": str(exc), "reason": exc.reason})
                tell(f"liftcam: skipped {exc}", bar)
                bar.update(1)
                continue
            x = loaded.preprocessing(image)[None]
            cache = shapley_cache(shapley_dir, key)
            if reused is not None and not cache.exists() and (source := reused.get(_digest(path))) is not None:
                _reuse_cache(source, cache, key)
            _explain_image(explainer, store, cache, path, x, settings, reference_spec)
            bar.update(1)
    return write_reports(store, out)


def _reused_shapley(source: Path, out: Path, settings: FidelitySettings, files: Sequence[Path]) -> dict[str, Path]:
    """``source``'s cached reference Shapley values by image digest, refused unless they are the values this
    run computes."""
    source = Path(source)
    if source.resolve() == out.resolve():
        raise LiftCamError(f"--shapley-from {source} is this run's own folder; give another fidelity run's folder")
    theirs = read_settings(source)
    if theirs is None or not (source / "shapley").is_dir():
        raise LiftCamError(f"--shapley-from {source}: no fidelity run there (no settings.json and shapley/)")
    # reference values are reused across machines: where they were computed rounds them by about 1e-7
    changed = [k for k in settings_differences(theirs, settings.as_dict()) if k not in ("methods", *COMPUTE_FIELDS)]
    if changed:
        raise LiftCamError(
            f"--shapley-from {source}: its reference Shapley values were computed with other settings "
            f"(differs in: {', '.join(changed)}); they would not be this run's"
        )
    # the mean reference is the mean over the run's images: the same images, or other values
    if settings.reference == "mean" and _mean_images(source / "reference_mean.npz") != [str(f) for f in files]:
        raise LiftCamError(
            f"--shapley-from {source}: its mean reference was taken over other images, so its Shapley values "
            "differ from this run's"
        )
    index = {}
    for cache in sorted((source / "shapley").glob("*.npz")):
        if not cache.name.endswith(".tmp.npz"):
            with np.load(cache) as saved:
                if "digest" in saved.files:  # caches written before digests were kept cannot be matched
                    index[str(saved["digest"])] = cache
    return index


def shapley_cache(shapley_dir: Path, key: str) -> Path:
    """The cache file of an image's reference Shapley values (os.fsencode: also for names not valid UTF-8)."""
    return shapley_dir / f"{hashlib.sha1(os.fsencode(key)).hexdigest()[:16]}.npz"


def _digest(path: Path) -> str:
    """What matches an image between runs: the SHA-256 of its file."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _mean_images(cache: Path) -> list[str] | None:
    """The images a cached mean reference was taken over (None where there is none)."""
    if not cache.exists():
        return None
    with np.load(cache) as saved:
        images: list[str] = json.loads(str(saved["images"]))
    return images


def _reuse_cache(source: Path, cache: Path, key: str) -> None:
    """Copy another run's cached values of the same image, its record renamed to this run's image path."""
    with np.load(source) as saved:
        record = {**json.loads(str(saved["record"])), "image": key}
        _write_cache(cache, saved["values"], saved["stderr"], record, str(saved["digest"]))


def _write_cache(cache: Path, values: np.ndarray, stderr: np.ndarray, record: dict[str, Any], digest: str) -> None:
    """The values, their record and the image's digest in one file, written atomically (whole or absent)."""
    tmp = cache.with_name(cache.stem + ".tmp.npz")
    np.savez(tmp, values=values, stderr=stderr, record=json.dumps(record), digest=digest)
    os.replace(tmp, cache)


def _mean_activation(
    explainer: Explainer, loaded: LoadedModel, files: Sequence[Path], out: Path, max_pixels: int, progress: bool
) -> torch.Tensor:
    """The mean activation (K, h, w) over the run's readable images, computed once and cached."""
    from tqdm import tqdm

    cache = out / "reference_mean.npz"
    keys = [str(f) for f in files]
    if (images := _mean_images(cache)) is not None:
        if images != keys:
            raise LiftCamError(f"{out} holds a run over other images (its mean reference differs); use another folder")
        with np.load(cache) as saved:
            return torch.from_numpy(saved["mean"])
    total: torch.Tensor | None = None
    count = 0
    for path in tqdm(files, unit="img", desc="mean reference", disable=not progress):
        try:
            image = load_image(path, max_pixels)
        except ImageError:
            continue  # reported by the main pass
        a = explainer.capture(loaded.preprocessing(image)[None]).activations[0].double()
        total = a if total is None else total + a
        count += 1
    if total is None:
        raise LiftCamError("no readable image to take the mean reference over")
    mean = (total / count).float()
    tmp = out / "reference_mean.tmp.npz"
    np.savez(tmp, mean=mean.cpu().numpy(), images=json.dumps(keys))
    os.replace(tmp, cache)
    return mean


def _explain_image(
    explainer: Explainer,
    store: RecordStore,
    cache: Path,
    path: Path,
    x: torch.Tensor,
    settings: FidelitySettings,
    reference: Reference,
) -> None:
    key = str(path)
    start = time.perf_counter()
    captured = explainer.capture(x)
    body_ms = (time.perf_counter() - start) * 1e3
    a = captured.activations
    ref = resolve_reference(reference, a)
    logits = explainer.logits(captured)
    if not bool(torch.isfinite(logits).all()):
        raise LiftCamError(f"the model's output is NaN or infinite for {key}: check the model's weights")
    classes = resolve_targets(None, logits)
    if cache.exists():
        with np.load(cache) as saved:
            phi = torch.from_numpy(saved["values"]).to(a.device)
            reference_record = json.loads(str(saved["record"]))
    else:
        start = time.perf_counter()
        evaluator = HeadEvaluator(explainer.split, captured, None, classes)
        game = image_game(evaluator, 0, ref[0])
        result = shapley_values(game, settings.estimator, settings.samples, settings.seed)  # type: ignore[arg-type]
        phi = result.values
        reference_record = {
            "image": key,
            "method": REFERENCE,
            "class": int(classes[0]),
            "estimator": result.estimator,
            "evaluations": result.evaluations,
            "stderr_mean": float(result.stderr.mean()),
            "stderr_max": float(result.stderr.max()),
            "efficiency_gap": float(result.values.sum()) - (result.v_full - result.v_empty),
            "ms": (time.perf_counter() - start) * 1e3,
            "body_ms": body_ms,
        }
        # cached before the record is appended: a kill between the two gives the record back on resume
        values, stderr = result.values.cpu().numpy(), result.stderr.cpu().numpy()
        _write_cache(cache, values, stderr, reference_record, _digest(path))
    if not store.done(image=key, method=REFERENCE):
        store.append(reference_record)
    for name in settings.methods:
        if store.done(image=key, method=name):
            continue
        record: dict[str, Any] = {"image": key, "method": name, "class": int(classes[0])}
        start = time.perf_counter()
        try:
            spec = [sampled_method(name, settings.seed)]
            exp = explainer.explain_captured(captured, spec, None, ref)[name]
        except (HeadError, LiftCamError) as exc:
            record["error"] = str(exc)
        else:
            if exp.weights is None:
                raise LiftCamError(f"{name} gave no coefficients")  # refused up front; never reached
            record["ms"] = (time.perf_counter() - start) * 1e3
            record.update(fidelity(exp.weights[0], phi, a[0], captured.input_size))
        store.append(record)


def _mean_std(values: list[float]) -> tuple[float, float]:
    clean = [v for v in values if not math.isnan(v)]
    if not clean:
        return float("nan"), float("nan")
    return statistics.fmean(clean), statistics.stdev(clean) if len(clean) > 1 else 0.0


def write_reports(store: RecordStore, out: Path) -> dict[str, Any]:
    """``fidelity.csv``, ``summary.md`` and ``fidelity.png`` from the records; returns the summary."""
    records = store.records
    methods = [m for m in store.settings["methods"]]
    # in image, then method order: the same file whatever order an interrupted run wrote its records in
    rows = sorted(
        (r for r in records if r["method"] in methods and "error" not in r),
        key=lambda r: (r["image"], methods.index(r["method"])),
    )
    with open_text(out / "fidelity.csv.tmp") as f:
        writer = csv.DictWriter(f, fieldnames=["image", "method", "class", *FIDELITY_METRICS, "ms"])
        writer.writeheader()
        for r in rows:
            writer.writerow({k: r.get(k) for k in writer.fieldnames})
    os.replace(out / "fidelity.csv.tmp", out / "fidelity.csv")
    summary: dict[str, Any] = {"settings": store.settings, "methods": {}}
    for m in methods:
        mine = [r for r in rows if r["method"] == m]
        errors = sorted({r["error"] for r in records if r["method"] == m and "error" in r})
        entry: dict[str, Any] = {"images": len(mine), "errors": errors}
        for metric in (*FIDELITY_METRICS, "ms"):
            entry[metric] = _mean_std([float(r[metric]) for r in mine])
        summary["methods"][m] = entry
    refs = [r for r in records if r["method"] == REFERENCE]
    summary["reference"] = {
        "images": len(refs),
        "estimators": sorted({r["estimator"] for r in refs}),
        "evaluations_per_image": max((r["evaluations"] for r in refs), default=0),
        "stderr_mean": _mean_std([r["stderr_mean"] for r in refs])[0],
        "stderr_max": max((r["stderr_max"] for r in refs), default=float("nan")),
        "ms": _mean_std([r["ms"] for r in refs]),
    }
    summary["failed"] = failed_records(records)
    write_text_atomic(out / "summary.md", summary_markdown(summary))
    if rows:
        _plot(rows, methods, out / "fidelity.png")
    return summary


def summary_markdown(summary: dict[str, Any]) -> str:
    """The summary table: mean ± std per method over images, best mean marked in bold; the timings
    on the last line (the only line that differs between runs)."""
    settings = summary["settings"]
    ref = summary["reference"]
    lines = [
        f"Model `{settings['model']}` ({settings['weights']}), layer `{settings['layer']}`, "
        f"reference `{settings['reference']}`; {ref['images']} images.",
        f"Reference Shapley values: {', '.join(ref['estimators']) or '-'} "
        f"({ref['evaluations_per_image']} coalition values per image, standard error mean "
        f"{ref['stderr_mean']:.2g}, max {ref['stderr_max']:.2g}).",
        "",
        "| method | images | " + " | ".join(FIDELITY_METRICS) + " |",
        "|---" * (len(FIDELITY_METRICS) + 2) + "|",
    ]
    entries = summary["methods"]
    best = {
        metric: max((round(e[metric][0], 3) for e in entries.values() if not math.isnan(e[metric][0])), default=None)
        for metric in FIDELITY_METRICS
    }
    for name, e in entries.items():
        if not e["images"]:
            reason = e["errors"][0] if e["errors"] else "no images"
            lines.append(f"| {name} | 0 | n/a: {reason} |" + " |" * (len(FIDELITY_METRICS) - 1))
            continue
        cells = []
        for metric in FIDELITY_METRICS:
            mean, std = e[metric]
            cell = f"{mean:.3f} ± {std:.3f}"
            cells.append(f"**{cell}**" if best[metric] is not None and round(mean, 3) == best[metric] else cell)
        lines.append(f"| {name} | {e['images']} | " + " | ".join(cells) + " |")
    if summary["failed"]:
        lines += ["", "Failed: " + ", ".join(f"{f['image']} ({f['reason']})" for f in summary["failed"])]
    timings = [f"reference {ref['ms'][0]:.0f}"] + [
        f"{name} {e['ms'][0]:.0f}" for name, e in entries.items() if not math.isnan(e["ms"][0])
    ]
    lines += ["", "Time per image (ms): " + ", ".join(timings) + "."]
    return "\n".join(lines) + "\n"


def _plot(rows: list[dict[str, Any]], methods: list[str], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    present = [m for m in methods if any(r["method"] == m for r in rows)]
    data = {
        m: [float(r["pearson"]) for r in rows if r["method"] == m and not math.isnan(r["pearson"])] for m in present
    }
    order = sorted(present, key=lambda m: -statistics.median(data[m]) if data[m] else 0.0)
    fig, ax = plt.subplots(figsize=(1.0 + 0.9 * len(order), 3.6))
    try:
        ax.boxplot([data[m] for m in order], showfliers=False)
        for i, m in enumerate(order, start=1):
            ax.scatter(np.full(len(data[m]), i) + np.linspace(-0.12, 0.12, len(data[m])), data[m], s=10, alpha=0.7)
        ax.set_xticks(range(1, len(order) + 1), order, rotation=30, ha="right")
        ax.set_ylabel("Pearson with Shapley values")
        ax.axhline(0, color="grey", lw=0.5)
        ax.set_title("Coefficients vs reference Shapley values, per image")
        fig.tight_layout()
        fig.savefig(path, dpi=110)
    finally:
        plt.close(fig)
