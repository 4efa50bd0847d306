"""The ``liftcam`` command line: argument parsing and file output around the library."""

from __future__ import annotations

import argparse
import math
import os
import re
import sys
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import numpy as np
import torch
from PIL import Image

from . import __version__
from .data.images import DEFAULT_MAX_PIXELS, ORIGINAL_SIZE, find_images, load_image
from .data.samples import sample_photos
from .errors import ImageError, LiftCamError
from .explain import Explainer, Explanation
from .fusion import FusedExplanation
from .methods import METHODS, CamMethod, sampled_method
from .models import LITE0, LoadedModel, available_models, candidate_layers, load_model
from .runs import DEFAULT_BATCH_SIZE
from .runs.explain import METHOD_GROUPS, TargetChoice, crops_to_batch, explain_images, parse_target, resolve_methods
from .runs.fidelity import FIDELITY_METHODS
from .runs.files import prepare_output_dir, shown, tell, write_json_atomic
from .viz import draw_boxes, overlay, save_grid, save_overlay, save_segmentation

EXIT_BAD_INPUT = 1  # some input files could not be explained; the others were written
EXIT_ERROR = 2  # nothing could be explained: bad model, layer, method or target


def _error(message: str) -> None:
    tell(f"liftcam: error: {message}")


def _unique_dir(out: Path, stem: str, used: set[str]) -> Path:
    name, n = stem, 2
    while name in used:
        name, n = f"{stem}_{n}", n + 1
    used.add(name)
    return out / name


def _print_text(text: str) -> None:
    """``text`` on stdout; a file name that is not valid UTF-8 shown with its bytes escaped."""
    sys.stdout.write(shown(text))


def failed_line(failed: Sequence[tuple[str, str]]) -> str:
    """``liftcam: N file(s) failed: PATH (reason), ...`` from (path, reason) pairs."""
    items = ", ".join(f"{path} ({reason})" for path, reason in failed)
    return f"liftcam: {len(failed)} file(s) failed: {items}"


@dataclass
class _Run:
    loaded: LoadedModel
    explainers: list[Explainer]  # one per layer; several: the maps fused, each layer's kept
    methods: list[str]
    target: TargetChoice
    args: argparse.Namespace
    out: Path
    summary: dict[str, Any] = field(default_factory=dict)
    used: set[str] = field(default_factory=set)
    checked: bool = False

    def class_name(self, cls: int) -> str:
        cats = self.loaded.categories
        return cats[cls] if 0 <= cls < len(cats) else str(cls)

    def explain_batch(self, files: list[Path], images: list[Any]) -> None:
        crops, x = crops_to_batch(self.loaded, images)
        check = self.args.method[0] in METHOD_GROUPS and not self.checked
        result = explain_images(
            self.loaded, self.explainers, x, self.methods, self.target, self.args.reference,
            self.args.fidelity, self.args.seed, self.args.samples, check_methods=check,
        )  # fmt: skip
        if check:  # with a method group, the methods this head has no rule for are left out (one note each)
            self.checked = True
            self.methods = result.methods
            self.summary["methods"] = list(self.methods)
            for note in result.notes:
                tell(f"liftcam: note: {note}")
        probs, labels = result.probabilities, result.labels
        for i, (path, crop) in enumerate(zip(files, crops, strict=True)):
            folder = _unique_dir(self.out, path.stem, self.used)
            folder.mkdir(parents=True, exist_ok=True)
            entry: dict[str, Any] = {
                "file": str(path),
                "output_dir": str(folder),
                "top5": [
                    {"class": c, "name": self.class_name(c), "probability": round(p, 6)} for c, p in result.top(i)
                ],
                "explanations": [],
            }
            if labels is not None:
                names = {c: self.class_name(c) for c in range(probs.shape[1])}
                save_segmentation(folder / "segmentation.png", crop, labels[i], names)
                entry["segmentation"] = "segmentation.png"
            for ranked in result.ranks:
                suffix = "" if len(result.ranks) == 1 else f"_top{ranked.rank}"
                captions: dict[str, str] = {}
                first = next(iter(ranked.explanations.values()))
                cls = int(first.targets[i])
                record: dict[str, Any] = {
                    "rank": ranked.rank,
                    "class": cls,
                    "name": self.class_name(cls),
                    "score": float(first.scores[i]),
                    "probability": float(probs[i, cls]),
                    "methods": {},
                }
                if labels is not None:
                    region = ranked.targets.region
                    assert isinstance(region, torch.Tensor)
                    record["region_pixels"] = int(region[i].sum())
                    record["region"] = "predicted" if bool((labels[i] == cls).any()) else "all"
                rates = ranked.shapley_pearson(i)
                heat: dict[str, np.ndarray] = {}
                for name, exp in ranked.explanations.items():
                    stem = f"{name}{suffix}"
                    heat[name] = exp.maps[i].cpu().numpy()
                    save_overlay(folder / f"{stem}.png", crop, heat[name])
                    item: dict[str, Any] = {"overlay": f"{stem}.png", **_map_files(folder, stem, exp, i, heat[name])}
                    if name in rates:
                        r = rates[name]
                        if r is None:
                            captions[name] = "no coefficients"
                        else:
                            item["shapley_pearson"] = r
                            captions[name] = f"Shapley r = {r:.2f}"
                    record["methods"][name] = item
                if self.args.method[0] in METHOD_GROUPS or self.args.grid:
                    grid = f"grid{suffix}.png"
                    title = f"{path.name}: {record['name']} (p={record['probability']:.2f})"
                    save_grid(folder / grid, crop, heat, title, captions=captions)
                    record["grid"] = grid
                entry["explanations"].append(record)
            self.summary["images"].append(entry)


def cmd_explain(args: argparse.Namespace) -> int:
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        methods = resolve_methods(args.method)
        out = prepare_output_dir(args.out)
        loaded = load_model(args.model, args.weights, args.device)
        target = parse_target(args.target, loaded.categories)
        if args.task not in ("auto", loaded.task):
            raise LiftCamError(f"{loaded.name} is a {loaded.task} model, not a {args.task} one")
        # a detector is explained at its scores with the choices frozen: liftcam.detection
        layers = args.layer or [loaded.default_layer]
        if args.fidelity and len(layers) > 1:
            raise LiftCamError("--fidelity rates one layer's coefficients; give one --layer")
        # several layers: each explained, the maps fused
        explainers = [] if loaded.task == "detection" else [Explainer(loaded.model, layer) for layer in layers]
    except LiftCamError as exc:
        _error(str(exc))
        return EXIT_ERROR
    try:
        files = _input_files(args.images)
    except LiftCamError as exc:
        _error(str(exc))
        return EXIT_ERROR
    if loaded.weights == "random":
        tell(f"liftcam: warning: {loaded.name} has random weights; pass --weights for meaningful maps")
    if loaded.task == "detection":
        return _explain_detections(args, loaded, methods, target, files, out)

    run = _Run(loaded, explainers, methods, target, args, out)
    run.summary = _explain_summary(args, loaded, "+".join(e.layer for e in explainers), methods)
    from tqdm import tqdm

    with tqdm(total=len(files), unit="img", desc="explain", file=sys.stderr, disable=args.quiet) as bar:
        for start in range(0, len(files), args.batch_size):
            chunk = files[start : start + args.batch_size]
            good: list[Path] = []
            images = []
            for path in chunk:
                try:
                    image = load_image(path, args.max_pixels)
                    images.append(image)
                    good.append(path)
                    if image.info.get(ORIGINAL_SIZE):
                        width, height = image.info[ORIGINAL_SIZE]
                        note = (
                            f"{width} x {height} pixels exceed --max-pixels: decoded at {image.width} x {image.height}"
                        )
                        tell(f"liftcam: note: {path}: {note}", bar)
                except ImageError as exc:
                    tell(f"liftcam: skipped {exc}", bar)
                    run.summary["failed"].append({"file": str(path), "reason": exc.reason})
            try:
                if good:
                    run.explain_batch(good, images)
            except LiftCamError as exc:
                write_json_atomic(out / "summary.json", run.summary)
                _error(str(exc))
                return EXIT_ERROR
            finally:
                bar.update(len(chunk))
            write_json_atomic(out / "summary.json", run.summary)
    done = len(run.summary["images"])
    tell(f"liftcam: explained {done} image(s) with {', '.join(run.methods)} -> {out / 'summary.json'}")
    failed = run.summary["failed"]
    if failed:
        tell(failed_line([(f["file"], f["reason"]) for f in failed]))
        return EXIT_BAD_INPUT
    return 0


def _explain_summary(args: argparse.Namespace, loaded: LoadedModel, layer: str, methods: list[str]) -> dict[str, Any]:
    """The settings part of ``explain``'s summary; ``images`` and ``failed`` filled as the run goes."""
    return {
        "liftcam": __version__,
        "model": loaded.name,
        "task": loaded.task,
        "weights": loaded.weights,
        "layer": layer,
        "methods": methods,
        "target": args.target or "top1",
        "reference": args.reference,
        "images": [],
        "failed": [],
    }


def _map_files(
    folder: Path, stem: str, exp: Explanation | FusedExplanation, row: int, fused: np.ndarray
) -> dict[str, Any]:
    """Write row ``row``'s raw map (``stem.npy``) or, for several layers, the fused map (``stem.npy``) and each
    layer's raw map (``stem_<layer>.npy``); the summary's entries for them, with each residual."""
    if isinstance(exp, Explanation):
        np.save(folder / f"{stem}.npy", exp.raw[row].cpu().numpy())
        return {"raw": f"{stem}.npy", **({} if exp.delta is None else {"delta": float(exp.delta[row])})}
    np.save(folder / f"{stem}.npy", fused)
    layers: dict[str, Any] = {}
    for layer, one in exp.layers.items():
        raw = f"{stem}_{_file_part(layer)}.npy"
        np.save(folder / raw, one.raw[row].cpu().numpy())
        layers[layer] = {"raw": raw, **({} if one.delta is None else {"delta": float(one.delta[row])})}
    return {"fused": f"{stem}.npy", "layers": layers}


def _file_part(name: str) -> str:
    """A layer's name as part of a file name: ``backbone.fpn[0]`` -> ``backbone.fpn-0``."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-")


def _explain_detections(
    args: argparse.Namespace,
    loaded: LoadedModel,
    methods: list[str],
    target: TargetChoice,
    files: list[Path],
    out: Path,
) -> int:
    """``explain`` on a detector: per image, the detections drawn, and each method's map per chosen detection."""
    import torchvision.transforms.functional as TF
    from tqdm import tqdm

    from .detection import DetectionExplainer, top_detections

    try:
        layers = args.layer or [loaded.default_layer]
        explainer = DetectionExplainer(loaded.model, layers[0] if len(layers) == 1 else layers)
    except LiftCamError as exc:
        _error(str(exc))
        return EXIT_ERROR
    names = loaded.categories
    summary = _explain_summary(args, loaded, explainer.layer, methods)
    used: set[str] = set()
    specs: list[str | CamMethod] = [sampled_method(m, args.seed, args.samples) for m in methods]
    with tqdm(total=len(files), unit="img", desc="explain", file=sys.stderr, disable=args.quiet) as bar:
        for path in files:
            try:
                image = load_image(path, args.max_pixels)
                pixels = TF.to_tensor(image).to(next(loaded.model.parameters()).device)
                found, _ = explainer.detect(pixels)
                wanted = top_detections(found, target.cls, target.top)
                if not wanted:
                    raise ImageError(path, "no detection of the asked class" if found else "no detection")
                result = explainer(pixels, specs, wanted, args.reference)
            except ImageError as exc:
                tell(f"liftcam: skipped {exc}", bar)
                summary["failed"].append({"file": str(path), "reason": exc.reason})
                bar.update(1)
                continue
            except LiftCamError as exc:
                write_json_atomic(out / "summary.json", summary)
                _error(f"{shown(str(path))}: {exc}")
                return EXIT_ERROR
            folder = _unique_dir(out, path.stem, used)
            folder.mkdir(parents=True, exist_ok=True)
            captions = [f"{names[d.label] if d.label < len(names) else d.label} {d.score:.2f}" for d in found]
            boxes = [d.box for d in found]
            picture = draw_boxes(image, boxes, captions, highlight=[d.index for d in result.detections])
            Image.fromarray(picture).save(folder / "detections.png")
            entry: dict[str, Any] = {
                "file": str(path),
                "output_dir": str(folder),
                "detections_picture": "detections.png",
                "detections": [
                    {"index": d.index, "box": list(d.box), "label": d.label,
                     "name": captions[d.index].rsplit(" ", 1)[0], "score": d.score}
                    for d in found
                ],
                "explanations": [],
            }  # fmt: skip
            size = (image.height, image.width)
            shown_h, shown_w = result.image_size  # the maps' padding (to a multiple of 32) left out
            for row, d in enumerate(result.detections):
                record: dict[str, Any] = {"detection": d.index, "label": d.label, "score": d.score, "methods": {}}
                heats: dict[str, np.ndarray] = {}
                for name, exp in result.explanations.items():
                    stem = f"{name}_det{d.index}"
                    heat = torch.nn.functional.interpolate(
                        exp.maps[row, :shown_h, :shown_w][None, None], size=size, mode="bilinear", align_corners=False
                    )[0, 0]
                    heats[name] = heat.cpu().numpy()
                    boxed = draw_boxes(overlay(image, heats[name]), [d.box], [captions[d.index]], [0])
                    Image.fromarray(boxed).save(folder / f"{stem}.png")
                    fused = exp.maps[row, :shown_h, :shown_w].cpu().numpy()
                    item: dict[str, Any] = {"overlay": f"{stem}.png", **_map_files(folder, stem, exp, row, fused)}
                    record["methods"][name] = item
                if args.method[0] in METHOD_GROUPS or args.grid:  # the detection's box, then every map beside it
                    boxed_input = draw_boxes(image, [d.box], [captions[d.index]], [0])
                    record["grid"] = f"grid_det{d.index}.png"
                    save_grid(folder / record["grid"], boxed_input, heats, f"{path.name}: {captions[d.index]}")
                entry["explanations"].append(record)
            summary["images"].append(entry)
            write_json_atomic(out / "summary.json", summary)
            bar.update(1)
    write_json_atomic(out / "summary.json", summary)
    tell(f"liftcam: explained {len(summary['images'])} image(s) with {', '.join(methods)} -> {out / 'summary.json'}")
    if summary["failed"]:
        tell(failed_line([(f["file"], f["reason"]) for f in summary["failed"]]))
        return EXIT_BAD_INPUT
    return 0


def cmd_fidelity(args: argparse.Namespace) -> int:
    from .runs.fidelity import check_fidelity_methods, run_fidelity, summary_markdown

    try:
        check_fidelity_methods(args.methods)
        out = prepare_output_dir(args.out)
        _set_run_threads(args.threads, out)
        loaded = load_model(args.model, args.weights, args.device)
        files = _input_files(args.images)
        summary = run_fidelity(
            loaded,
            files,
            out,
            layer=args.layer,
            methods=args.methods,
            estimator=args.estimator,
            samples=args.samples,
            seed=args.seed,
            reference=args.reference,
            max_pixels=args.max_pixels,
            progress=not args.quiet,
            shapley_from=args.shapley_from,
        )
    except LiftCamError as exc:
        _error(str(exc))
        return EXIT_ERROR
    _print_text(summary_markdown(summary))
    tell(f"liftcam: per-image records in {out / 'records.jsonl'}, {out / 'fidelity.csv'}")
    if summary["failed"]:
        tell(failed_line([(f["image"], f["reason"]) for f in summary["failed"]]))
        return EXIT_BAD_INPUT
    return 0


def _set_run_threads(threads: int, out: Path) -> None:
    """torch's CPU threads for a run in ``out``: ``--threads``, else those the run there started with (a
    resumed run computes as it began; another count rounds the CPU kernels differently), else torch's."""
    from .runs.records import stored_threads

    threads = threads or stored_threads(out) or 0
    if threads:
        torch.set_num_threads(threads)


def _input_files(images: list[str]) -> list[Path]:
    """The files named (folders expanded), or the sample photos when none is named."""
    if images:
        files = find_images(images)
        if not files:
            raise LiftCamError("no image files found in " + ", ".join(images))
        return files
    files = list(sample_photos().values())
    if not files:
        raise LiftCamError("no images given and no sample photos installed (pip install 'liftcam[samples]')")
    return files


def cmd_evaluate(args: argparse.Namespace) -> int:
    from .data.datasets import load_dataset
    from .metrics import METRICS, ON_REQUEST_METRICS
    from .runs.evaluate import BOX_METRICS, FAST_METRICS, Distributed, EvaluateSettings, run_evaluate
    from .runs.report import summary_markdown

    cluster: Distributed | None = None
    try:
        out = prepare_output_dir(args.out)
        _set_run_threads(args.threads, out)
        methods = resolve_methods(args.methods)
        cluster = Distributed.from_environment(args.device)
        device = args.device
        if device.startswith("cuda") and cluster.world > 1 and ":" not in device:
            device = f"cuda:{int(os.environ.get('LOCAL_RANK', cluster.rank))}"
        loaded = load_model(args.model, args.weights, device)
        samples = load_dataset(args.data, args.boxes, args.synsets, args.limit, args.seed)
        if args.metrics == ["all"]:
            metrics = [m for m in METRICS if m not in ON_REQUEST_METRICS]
        elif args.metrics:
            metrics = list(dict.fromkeys(args.metrics))
        else:
            metrics = list(FAST_METRICS) + (list(BOX_METRICS) if any(s.boxes for s in samples) else [])
        parameters = {
            "step": args.step,
            "fill": args.fill,
            "blur_kernel": args.blur_kernel,
            "blur_sigma": args.blur_sigma,
            "tolerance": args.tolerance,
            "clip": not args.no_clip,
            "percentiles": tuple(args.road_percentiles),
            "noise": args.road_noise,
        }
        settings = EvaluateSettings(
            data=str(args.data),
            model=loaded.name,
            weights=loaded.weights,
            layer=args.layer or loaded.default_layer,
            methods=tuple(methods),
            metrics=tuple(metrics),
            metric_parameters=tuple(sorted(parameters.items())),
            score=args.score,
            target=args.target,
            reference=args.reference,
            limit=args.limit,
            seed=args.seed,
            images=len(samples),
            max_pixels=args.max_pixels,
            batch_size=args.batch_size,
        )
        summary = run_evaluate(
            loaded,
            samples,
            out,
            settings,
            examples=args.examples,
            progress=not args.quiet,
            distributed=cluster,
        )
    except LiftCamError as exc:
        _error(str(exc))
        return EXIT_ERROR
    finally:
        if cluster is not None:
            cluster.close()
    if summary is None:  # a process other than rank 0 of a torchrun job
        return 0
    _print_text(summary_markdown(summary))
    tell(f"liftcam: {out / 'summary.md'}, {out / 'summary.csv'}, {out / 'report.html'}")
    if summary["junk"]:
        tell(f"liftcam: warning: {summary['junk']} unreadable record line(s) skipped")
    if summary["failed"]:
        tell(failed_line([(f["image"], f["reason"]) for f in summary["failed"]]))
        return EXIT_BAD_INPUT
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from .runs.report import summary_markdown, write_evaluate_report

    try:
        summary = write_evaluate_report(args.run_dir)
    except LiftCamError as exc:
        _error(str(exc))
        return EXIT_ERROR
    _print_text(summary_markdown(summary))
    if summary["junk"]:
        tell(f"liftcam: warning: {summary['junk']} unreadable record line(s) skipped")
    return 0


def cmd_layers(args: argparse.Namespace) -> int:
    try:
        loaded = load_model(args.model, args.weights, "cpu")
    except LiftCamError as exc:
        _error(str(exc))
        return EXIT_ERROR
    print(f"{'layer':40s} {'type':28s} {'output (K x h x w)':20s}")
    for info in candidate_layers(loaded.model, loaded.preprocessing.crop):
        mark = "  <- default" if info.name == loaded.default_layer else ""
        reused = (
            f"  (called {info.calls}x: {info.name}#1 .. #{info.calls}, the first by default)" if info.calls > 1 else ""
        )
        reused += f"  [{info.layout}]" if info.layout != "maps" else ""
        shape = " x ".join(str(s) for s in info.shape)
        print(f"{info.name:40s} {info.kind:28s} {shape:20s}{mark}{reused}")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    try:
        from .webapp.server import serve
    except ImportError as exc:
        _error(f"liftcam serve needs the serve extra ({exc.name} is missing): pip install 'liftcam[serve]'")
        return EXIT_ERROR
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        serve(args.host, args.port, args.model, args.device)
    except LiftCamError as exc:
        _error(str(exc))
        return EXIT_ERROR
    except KeyboardInterrupt:
        pass
    return 0


def cmd_models(_args: argparse.Namespace) -> int:
    for name in available_models():
        print(name)
    return 0


def _int_at_least(low: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be at least {low}, not {value}")
        return value

    return parse


def _odd_kernel(text: str) -> int:
    value = _int_at_least(1)(text)
    if value % 2 == 0:
        raise argparse.ArgumentTypeError(f"must be odd (the blur is centred on each pixel), not {value}")
    return value


def _number(positive: bool) -> Callable[[str], float]:
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if not math.isfinite(value) or value < 0 or (positive and value == 0):
            raise argparse.ArgumentTypeError(f"must be a finite number {'> 0' if positive else '>= 0'}, not {text}")
        return value

    return parse


def _fraction(text: str) -> float:
    """A number in (0, 1], written as a decimal (0.01) or a fraction (1/224)."""
    try:
        top, _, bottom = text.partition("/")
        value = float(top) / float(bottom) if bottom else float(top)
    except (ValueError, ZeroDivisionError):
        raise argparse.ArgumentTypeError(f"{text!r} is not a number or a fraction like 1/224") from None
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"{text} is not in (0, 1]")
    return value


class _Parser(argparse.ArgumentParser):
    """argparse, with a bad argument reported in one ``liftcam: error:`` line (exit 2), no usage block."""

    def error(self, message: str) -> NoReturn:
        tell(f"liftcam: error: {message} (see '{self.prog} --help')")
        raise SystemExit(EXIT_ERROR)


_POSITIVE = _int_at_least(1)
_NATURAL = _int_at_least(0)
_AT_LEAST_2 = _int_at_least(2)  # permutation sampling draws antithetic pairs


def _max_pixels_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--max-pixels",
        type=_POSITIVE,
        default=DEFAULT_MAX_PIXELS,
        help=f"pixel budget of one image (default {DEFAULT_MAX_PIXELS:,}): larger JPEGs are decoded reduced, "
        "other larger images skipped",
    )


def _shared_options() -> tuple[_Parser, _Parser]:
    """The options every run (explain, fidelity, evaluate) shares, declared once: the model and where it runs;
    the run's reference, threads, image size limit and progress bar."""
    model = _Parser(add_help=False)
    model.add_argument("--model", default=LITE0, help=f"model name (default {LITE0}; see 'liftcam models')")
    model.add_argument("--weights", default=None, help="torchvision weights name, a local .pth, or 'random'")
    model.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ...")
    run = _Parser(add_help=False)
    run.add_argument(
        "--reference", default="zeros", choices=["zeros", "mean"], help="the reference R of lift-cam, shap, ..."
    )
    run.add_argument(
        "--threads",
        type=_NATURAL,
        default=0,
        help="torch CPU threads (default: torch's; a resumed evaluate or fidelity run: the ones it started with)",
    )
    _max_pixels_option(run)
    run.add_argument("--quiet", action="store_true", help="no progress bar")
    return model, run


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="liftcam", description="Class activation maps grounded in Shapley values.")
    parser.add_argument("--version", action="version", version=f"liftcam {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    shared = _shared_options()

    p = sub.add_parser("explain", parents=shared, help="explain images; with none given, the bundled sample photos")
    p.add_argument("images", nargs="*", help="image files or folders (searched recursively)")
    p.add_argument(
        "--layer",
        nargs="+",
        default=None,
        help="target layer (default: the model's; see 'liftcam layers'); several: each explained, the maps fused",
    )
    p.add_argument(
        "--method",
        nargs="+",
        default=["lift-cam"],
        help=f"methods, 'fast' (the gradient family) or 'all': {', '.join(METHODS)}",
    )
    p.add_argument(
        "--task",
        default="auto",
        choices=["auto", "classification", "segmentation", "detection"],
        help="what the model does (default: from the model's name); segmentation explains each predicted class "
        "over its pixels, detection each chosen detection with the detector's choices frozen",
    )
    p.add_argument(
        "--target",
        default=None,
        help="class index, class name, or topK (default: top1); for a detector, the first K detections or those "
        "of a class",
    )
    p.add_argument("--samples", type=_AT_LEAST_2, default=1000, help="shap: permutations when K is too large")
    p.add_argument("--seed", type=_NATURAL, default=0, help="the sampling methods' seed")
    p.add_argument("--out", default="liftcam-out", help="output folder (default liftcam-out)")
    p.add_argument("--batch-size", type=_POSITIVE, default=DEFAULT_BATCH_SIZE)
    p.add_argument("--grid", action="store_true", help="also write the comparison grid for few methods")
    p.add_argument(
        "--fidelity",
        type=_AT_LEAST_2,
        default=None,
        metavar="N",
        help="rate each method's coefficients against Shapley values of the maps sampled with N permutations "
        "(their Pearson r, in the grid and the summary)",
    )
    p.set_defaults(func=cmd_explain)

    p = sub.add_parser("fidelity", parents=shared, help="compare methods' coefficients with reference Shapley values")
    p.add_argument("images", nargs="*", help="image files or folders; default: the sample photos")
    p.add_argument("--layer", default=None)
    p.add_argument("--methods", nargs="+", default=list(FIDELITY_METHODS), help="methods with coefficients")
    p.add_argument("--estimator", default="auto", choices=["auto", "exact", "permutation", "kernel"])
    p.add_argument("--samples", type=_AT_LEAST_2, default=1000, help="permutations (or KernelSHAP coalitions)")
    p.add_argument("--seed", type=_NATURAL, default=0)
    p.add_argument("--out", default="liftcam-fidelity")
    p.add_argument(
        "--shapley-from",
        type=Path,
        default=None,
        metavar="FOLDER",
        help="reuse the reference Shapley values of another fidelity run with the same settings but the methods "
        "(to add a method to a finished study)",
    )
    p.set_defaults(func=cmd_fidelity)

    p = sub.add_parser(
        "evaluate", parents=shared, help="faithfulness and localisation metrics over an image set (resumable)"
    )
    p.add_argument("data", help="image folder (ImageFolder layout or flat), or ImageNet val with boxes")
    p.add_argument("--layer", default=None)
    p.add_argument("--methods", nargs="+", default=["lift-cam", "grad-cam", "grad-cam++", "xgrad-cam"])
    p.add_argument("--metrics", nargs="+", default=None, help="metric names or 'all' (every metric but mprt, the "
                   "randomisation test, run when named; default: AD, IC, ADD, and the pointing games when boxes "
                   "are given)")  # fmt: skip
    p.add_argument("--out", required=True, help="run folder: records, summary, report")
    p.add_argument("--boxes", default=None, help="VOC XML folder, LOC_val_solution.csv or image,class,x0,y0,x1,y1 CSV")
    p.add_argument("--synsets", default=None, help="synset list (LOC_synset_mapping.txt) for WordNet ids")
    p.add_argument("--limit", type=_POSITIVE, default=None, help="a random subset of this many images")
    p.add_argument("--seed", type=_NATURAL, default=0, help="seed of the subset")
    p.add_argument("--target", default="predicted", choices=["predicted", "label"], help="class explained")
    p.add_argument("--score", default="softmax", choices=["softmax", "logit"], help="p_c: probability or logit")
    p.add_argument(
        "--step", type=_fraction, default=1 / 224, help="deletion/insertion: fraction of pixels per step (1/224)"
    )
    p.add_argument("--fill", type=_finite, default=0.0, help="deletion: value of deleted pixels (input tensor space)")
    p.add_argument("--blur-kernel", type=_odd_kernel, default=11, help="insertion: Gaussian blur kernel size (odd)")
    p.add_argument("--blur-sigma", type=_number(positive=True), default=5.0, help="insertion: Gaussian blur sigma")
    p.add_argument("--tolerance", type=_number(positive=False), default=15.0, help="pointing game: pixels of tolerance")
    p.add_argument("--no-clip", action="store_true", help="AD and ADD without max(0, .): signed drops")
    p.add_argument(
        "--road-percentiles",
        nargs="+",
        type=_number(positive=True),
        default=[10.0, 20.0, 30.0, 40.0, 50.0, 60.0, 70.0, 80.0, 90.0],
        help="ROAD: the percentiles of the map removed at",
    )
    p.add_argument("--road-noise", type=_number(positive=False), default=0.01, help="ROAD: the imputation's noise")
    p.add_argument(
        "--batch-size", type=_POSITIVE, default=DEFAULT_BATCH_SIZE, help="images per batch (fixed by image index)"
    )
    p.add_argument("--examples", type=_NATURAL, default=4, help="images with overlays in the report")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("report", help="(re)write the summary and HTML report of an evaluation run")
    p.add_argument("run_dir")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("layers", help="list a model's layers with spatial maps and their shapes")
    p.add_argument("model", nargs="?", default=LITE0)
    p.add_argument("--weights", default=None)
    p.set_defaults(func=cmd_layers)

    p = sub.add_parser("models", help="list the model names")
    p.set_defaults(func=cmd_models)

    p = sub.add_parser("serve", help="a local web app: drop a photo, compare every method's map and numbers")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=_int_at_least(1), default=8000, help="port (default 8000)")
    p.add_argument("--model", default=LITE0, help=f"model loaded first (default {LITE0})")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ...")
    p.add_argument("--threads", type=_NATURAL, default=0, help="torch CPU threads (default: torch's)")
    p.set_defaults(func=cmd_serve)
    return parser


def _finite(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, not {text}")
    return value


def _warning_printer() -> Callable[..., None]:
    """Python warnings of a run, as one ``liftcam: warning:`` line each (each message once)."""
    seen: set[str] = set()

    def show(message: Warning | str, category: type[Warning], *_args: Any, **_kwargs: Any) -> None:
        text = str(message).strip().splitlines()[0] if str(message).strip() else category.__name__
        if text not in seen:
            seen.add(text)
            tell(f"liftcam: warning: {text}")

    return show


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code (0 done, 1 some inputs failed, 2 nothing done)."""
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # --help, --version, or a bad argument (already reported in one line)
        return exc.code if isinstance(exc.code, int) else EXIT_ERROR
    with warnings.catch_warnings():  # restored on return: no global state outlives the call
        warnings.simplefilter("default")
        warnings.showwarning = _warning_printer()
        try:
            code: int = args.func(args)
        except OSError as exc:  # the disk filled up, a folder was removed under us, ...
            _error(f"{exc.strerror or exc}" + (f": {exc.filename}" if exc.filename else ""))
            return EXIT_ERROR
        except KeyboardInterrupt:
            tell("liftcam: interrupted; what was written is kept (run again to resume)")
            return 130
    return code


if __name__ == "__main__":
    sys.exit(main())
