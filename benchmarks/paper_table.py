"""The paper's benchmark table on what runs offline: EfficientNet-Lite0/1/2 at three layers each.

    .venv/bin/python benchmarks/paper_table.py [--models lite0 lite1 lite2] [--layers final block depthwise]
        [--methods table | all | NAME ...] [--step 0.05] [--threads 2] [--device cpu] [--later max-sensitivity]
        [--only evaluate fidelity max-sensitivity] [--batch-size 8]
        [--out benchmarks/results/paper-table] [--assemble-only] [--publish]

For each model and layer it runs, as subprocesses whose command lines go into the tables,

* ``liftcam evaluate samples --metrics all``: every metric but the randomisation test, on the bundled
  labelled photos (the 8 sample photos, 5 of them with boxes);
* ``liftcam fidelity``: Shapley fidelity of every method with coefficients, against reference Shapley
  values of the same images.

Both are resumable: a finished run is read back, an interrupted one continues where it stopped. The table's
methods run together in ``MODEL/LAYER/evaluate`` and ``.../fidelity``; a method outside that group (the
costly four below) runs alone in ``evaluate-METHOD`` and ``fidelity-METHOD``, so that it can be added later
(``--methods score-cam``) and the tables read every run of the layer; its fidelity run reuses the layer's
reference Shapley values (``--shapley-from MODEL/LAYER/fidelity``), so every method of a layer is rated
against the same values and they are computed once. Then it
writes, under ``--out``, ``tables.md`` (per model, a headline table over the three layers, and a full table
per layer: mean ± standard error over images, best mean in bold) and ``report.html`` with one figure per
model; ``--publish`` puts the headline tables into README.md (between its ``paper-table`` markers) and the
full tables with the figures into ``docs/evaluation/paper-table.md``.

The three layers (issue 11): ``final``, the final 1x1 conv block (non-negative maps, linear head: LIFT-CAM's
coefficients are the exact Shapley values); ``block``, the last MBConv block's
output (signed maps, nonlinear head); ``depthwise``, the post-ReLU6 depthwise activation inside the last
block (its second call, ``_swish#2``: non-negative maps through a nonlinear head, the paper's setting).

``--methods table`` (default) leaves out the four methods that evaluate the whole model on hundreds of masked
copies per image (Score-CAM, SS-CAM, IS-CAM, sampled SHAP): with every metric re-explaining up to 12 times per
image (Max-Sensitivity 10, the Coherency ADCC and ARCC share, random logit; 13 before they shared it, when
these times were measured), one of them costs 20 minutes to 13 hours per layer on 2 CPU cores. Their
Max-Sensitivity runs in a folder of its own, after the other metrics and the fidelity run
(``evaluate-METHOD-max-sensitivity``; ``--later max-sensitivity`` skips it this time, and ``--only
max-sensitivity`` runs nothing else: on a GPU lease, a cell whose other runs were computed on the CPU, which a
CUDA run would not resume).
``--step 0.05`` (default) takes deletion and insertion in 20 steps instead of 224.

``--batch-size`` (default 8, all the bundled photos in one batch) sets the images per batch of the evaluate
runs this call starts; a run already started keeps the size it was started with (a stored setting). A
costly method's records are written per batch, so on a CPU, where one of its cells takes hours, ``1`` keeps
each finished photo through an interruption and lets a cell span sessions; its values then differ from a
batch-8 run's by the rounding of batched kernels only. Until a method's run has every photo, the tables
leave it out (and say so).
"""

from __future__ import annotations

import argparse
import html
import math
import os
import shlex
import shutil
import subprocess
import sys
from functools import partial
from pathlib import Path
from typing import Any

from liftcam.data import sample_photos
from liftcam.data.images import load_image
from liftcam.explain import Explainer
from liftcam.methods import METHODS, method_class
from liftcam.metrics import METRICS, ON_REQUEST_METRICS
from liftcam.models import load_model
from liftcam.runs import DEFAULT_BATCH_SIZE
from liftcam.runs.explain import applicable_methods
from liftcam.runs.fidelity import FIDELITY_METHODS, REFERENCE
from liftcam.runs.records import RecordStore, read_settings
from liftcam.runs.report import mean_se, value_columns

LAST_BLOCK = {
    "efficientnet-lite0": "features.16",
    "efficientnet-lite1": "features.21",
    "efficientnet-lite2": "features.21",
}
MODELS: dict[str, tuple[str, dict[str, str]]] = {
    key: (model, {"final": f"features.{int(block[9:]) + 1}", "block": block, "depthwise": f"{block}._swish#2"})
    for key, (model, block) in zip(("lite0", "lite1", "lite2"), LAST_BLOCK.items(), strict=True)
}
LAYER_ROLES = {
    "final": "final conv block: non-negative maps, linear head",
    "block": "last MBConv block's output: signed maps, nonlinear head",
    "depthwise": "depthwise ReLU6 in the last block: non-negative maps, nonlinear head",
}
COSTLY = ("score-cam", "ss-cam", "is-cam", "shap")
#: A costly method's Max-Sensitivity (10 more explanations per photo, 10 of its 13) runs in its own folder,
#: ``evaluate-METHOD-max-sensitivity``, after the other metrics and its fidelity: a short GPU lease fills
#: those first (``--later max-sensitivity`` leaves it for another time). Each metric draws from its own
#: seeded generator, so the split gives the values of one run with every metric (tested).
SPLIT_METRIC = "max_sensitivity"
SPLIT_NAME = SPLIT_METRIC.replace("_", "-")  # in folder names, ``--later`` and ``--only``
RUN_KINDS = ("evaluate", "fidelity", SPLIT_NAME)  # a cell's runs, in the order they run (``--only``)
ALL_BUT_SPLIT = [m for m in METRICS if m not in ON_REQUEST_METRICS and m != SPLIT_METRIC]
TABLE_METHODS = tuple(m for m in METHODS if m not in COSTLY)
#: The headline columns: (source, value, label, higher is better).
HEADLINE = (
    ("fidelity", "pearson", "Shapley r", True),
    ("evaluate", "average_drop", "AD", False),
    ("evaluate", "average_drop_in_deletion", "ADD", True),
    ("evaluate", "deletion", "Del", False),
    ("evaluate", "insertion", "Ins", True),
    ("evaluate", "road", "ROAD", True),
)
FIDELITY_VALUES = (("pearson", True), ("spearman", True), ("sign_agreement", True), ("map_pearson", True))


def command(
    kind: str,
    methods: list[str],
    *,
    model: str,
    layer: str,
    step: float,
    threads: int,
    out: Path,
    device: str = "cpu",
    metrics: list[str] | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
) -> list[str]:
    """The ``liftcam`` command line of one run (``--device`` and ``--batch-size`` only where they are not the
    defaults; ``metrics`` None: ``all``)."""
    args = [kind]
    if kind == "evaluate":
        args += ["samples", "--metrics", *(metrics or ["all"]), "--step", str(step), "--examples", "0"]
        args += ["--batch-size", str(batch_size)] if batch_size != DEFAULT_BATCH_SIZE else []
    args += ["--model", model, "--layer", layer, "--methods", *methods, "--threads", str(threads), "--out", str(out)]
    return args + (["--device", device] if device != "cpu" else [])


def applicable(model: str, layer: str, methods: list[str]) -> tuple[list[str], list[str]]:
    """The methods that apply at this layer (``cam`` needs a GAP + Linear head), and why the others do not."""
    loaded = load_model(model)
    explainer = Explainer(loaded.model, layer)
    prep = loaded.preprocessing
    photo = load_image(next(iter(sample_photos().values())))
    captured = explainer.capture(prep.normalize(prep.crop_image(photo))[None])
    return applicable_methods(loaded, explainer, captured, methods)


# glibc hands freed blocks over 32 MiB back to the kernel and faults them in again (zeroed) on the next
# batch: on 2 cores Score-CAM and IS-CAM at Lite1's depthwise layer spent 300 of 710 CPU-seconds in the kernel.
# Keeping them in the heap ran the same explanation 2.2x faster with bit-identical maps (glibc only; others
# ignore the variable).
KEEP_FREED_MEMORY = "glibc.malloc.mmap_threshold=4294967296:glibc.malloc.trim_threshold=68719476736"


def child_environment(environ: dict[str, str]) -> dict[str, str]:
    """``environ`` with glibc told to keep freed memory, unless the caller set its own tunables."""
    return {"GLIBC_TUNABLES": KEEP_FREED_MEMORY, **environ}


def run(args: list[str], log: Path) -> None:
    """Run ``liftcam ARGS`` and note its command line in ``log`` (read back into the tables)."""
    line = "liftcam " + shlex.join(args)
    print("$ " + line, flush=True)
    subprocess.run([sys.executable, "-m", "liftcam", *args], check=True, env=child_environment(dict(os.environ)))
    # noted once the run has finished: an interrupted run's folder is not yet "made by" it
    log.parent.mkdir(parents=True, exist_ok=True)
    known = log.read_text(encoding="utf-8").splitlines() if log.exists() else []
    if line not in known:
        log.write_text("\n".join([*known, line]) + "\n", encoding="utf-8")


def read_run(directory: Path) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
    if not directory.is_dir():
        return None, []
    records, _ = RecordStore.read_all(directory)
    return read_settings(directory), [r for r in records if "error" not in r]


def stats(records: list[dict[str, Any]], method: str, value: str) -> tuple[float, float, int]:
    return mean_se([r.get(value) for r in records if r["method"] == method])


def digits(value: str) -> int:
    return 3 if value in ("deletion", "insertion") or value in dict(FIDELITY_VALUES) else 2


def cells(rows: dict[str, tuple[float, float, int]], value: str, higher: bool | None) -> dict[str, str]:
    """Formatted ``mean ± se`` per method; ``(n=...)`` where a method has values for fewer images than the
    column's most (ROAD has none for an all-zero map). The best displayed mean among the methods with the
    most images is bold (ties all bold)."""
    d = digits(value)
    most = max((n for _, _, n in rows.values()), default=0)
    shown = {m: round(s[0], d) for m, s in rows.items() if s[2] == most and most > 0}
    best = (max if higher else min)(shown.values()) if shown and higher is not None else None
    out = {}
    for method, (mean, se, n) in rows.items():
        if n == 0:
            out[method] = "–"
            continue
        text = f"{mean:.{d}f}" + (f" ± {se:.{d}f}" if not math.isnan(se) else "")
        text = f"**{text}**" if best is not None and n == most and round(mean, d) == best else text
        out[method] = text + (f" (n={n})" if n < most else "")
    return out


def run_folder(folder: Path, kind: str, method: str | None) -> Path:
    """Where a run goes: ``kind`` for the table's methods together, ``kind-METHOD`` for a method outside
    the table's group, run on its own (added later, e.g. on a GPU, without touching the table's runs: the
    settings name the methods, and ROAD draws its noise per image method after method, so a method's values
    depend on the methods run before it in the same run)."""
    return folder / (kind if method is None else f"{kind}-{method}")


def read_runs(folder: Path, kind: str) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
    """The records of every run of one kind in a layer's folder (the table's and the single methods'), and
    the table run's settings (the first found otherwise). A single method's run that has not yet done every
    photo of the table's run is left out until it has (a costly CPU cell can span sessions). A photo counts
    as done once each of the run's methods has its record: a fidelity run stores the photo's reference Shapley
    values before explaining it."""
    settings, records = read_run(folder / kind)
    photos = {photo(r) for r in records}
    for extra in sorted(folder.glob(f"{kind}-*")):
        extra_settings, extra_records = read_run(extra)
        done = photos & done_photos(extra_settings, extra_records)
        if len(done) < len(photos):
            print(f"{extra}: {len(done)} of {len(photos)} photos, left out of the tables until it has them all")
            continue
        settings = settings or extra_settings
        records += extra_records
    return settings, records


def done_photos(settings: dict[str, Any] | None, records: list[dict[str, Any]]) -> set[str]:
    """The photos on which every method of a run has its record (the methods its settings name, else
    those with records, the reference Shapley values not counted)."""
    have = {(photo(r), r["method"]) for r in records if r["method"] != REFERENCE}
    methods = set((settings or {}).get("methods") or {m for _, m in have})
    return {p for p, _ in have if all((p, m) in have for m in methods)}


def photo(record: dict[str, Any]) -> str:
    """The record's photo by file name: a GPU machine's runs read the same photos from another folder."""
    return Path(record["image"]).name


class Layer:
    """One (model, layer): its runs' records."""

    def __init__(self, root: Path, key: str, role: str, layer: str) -> None:
        self.role, self.layer, self.folder = role, layer, root / key / role
        self.evaluate_settings, self.evaluate = read_runs(self.folder, "evaluate")
        self.fidelity_settings, self.fidelity = read_runs(self.folder, "fidelity")
        self.images = len({photo(r) for r in self.evaluate})
        #: the methods with evaluate records here (a layer's tables show these)
        self.methods_run = {r["method"] for r in self.evaluate}
        self.fidelity_images = len({photo(r) for r in self.fidelity})

    def role_of(self, source: str) -> str:
        """The layer's role, with the photos counted where a fidelity run has not finished them all."""
        if source == "fidelity" and self.fidelity_images < self.images:
            return f"{self.role}, {self.fidelity_images} of {self.images} photos"
        return self.role

    def column(self, source: str, value: str, methods: list[str]) -> dict[str, tuple[float, float, int]]:
        records = self.evaluate if source == "evaluate" else self.fidelity
        return {m: stats(records, m, value) for m in methods}


def headline_table(layers: list[Layer], methods: list[str]) -> list[str]:
    header = ["method"] + [
        f"{label} {'↑' if up else '↓'} ({lay.role_of(src)})" for lay in layers for src, _, label, up in HEADLINE
    ]
    columns = [cells(lay.column(src, value, methods), value, up) for lay in layers for src, value, _, up in HEADLINE]
    lines = ["| " + " | ".join(header) + " |", "|---" * len(header) + "|"]
    lines += ["| " + " | ".join([m] + [c[m] for c in columns]) + " |" for m in methods]
    return lines


def full_table(lay: Layer, methods: list[str]) -> list[str]:
    """Every value of one layer, for the methods that ran there."""
    methods = [m for m in methods if m in lay.methods_run]
    metrics = lay.evaluate_settings["metrics"] if lay.evaluate_settings else []
    columns: list[tuple[str, str, bool | None]] = [("fidelity", v, up) for v, up in FIDELITY_VALUES]
    columns += [("evaluate", v, up) for v, up in value_columns(metrics)]
    header = ["method"] + [
        ("Shapley " if src == "fidelity" else "") + v + {True: " ↑", False: " ↓", None: ""}[up]
        for src, v, up in columns
    ]
    formatted = [cells(lay.column(src, v, methods), v, up) for src, v, up in columns]
    lines = ["| " + " | ".join(header) + " |", "|---" * len(header) + "|"]
    lines += ["| " + " | ".join([m] + [c[m] for c in formatted]) + " |" for m in methods]
    return lines


def commands_of(lay: Layer) -> list[str]:
    log = lay.folder / "commands.txt"
    return [f"`{line}`" for line in log.read_text(encoding="utf-8").splitlines()] if log.exists() else []


def read_models(root: Path, models: list[str], methods: list[str]) -> dict[str, tuple[list[Layer], list[str]]]:
    """Per model with records: its layers that have an evaluate run, and the methods they show (in order)."""
    out = {}
    for key in models:
        layer_names = MODELS[key][1]
        layers = [lay for lay in (Layer(root, key, r, layer_names[r]) for r in LAYER_ROLES) if lay.evaluate]
        if layers:
            out[key] = layers, [m for m in methods if any(m in lay.methods_run for lay in layers)]
    return out


def assemble(runs: dict[str, tuple[list[Layer], list[str]]]) -> tuple[str, str]:
    """(tables.md, the README part)."""
    full, readme = ["# The paper's table on the bundled photos", ""], []
    for key, (layers, shown) in runs.items():
        name = MODELS[key][0]
        what = ", ".join(f"{lay.role} = `{lay.layer}`" for lay in layers)
        intro = [
            f"### {name}",
            "",
            f"Mean ± standard error over {max(lay.images for lay in layers)} photos; best mean in bold; "
            f"layers: {what}. Shapley r: Pearson of the coefficients with reference Shapley values "
            "(– where a method has no coefficients).",
            "",
        ]
        readme += intro + headline_table(layers, shown) + [""]
        full += intro + headline_table(layers, shown) + [""]
        for lay in layers:
            full += [f"#### {name}, {lay.role}: `{lay.layer}` ({LAYER_ROLES[lay.role]})", ""]
            full += ["Made by: " + "; ".join(commands_of(lay)), "", *full_table(lay, shown), ""]
    return "\n".join(full) + "\n", "\n".join(readme)


def plot(root: Path, runs: dict[str, tuple[list[Layer], list[str]]]) -> list[Path]:
    """One figure per model: a panel per headline value, methods on the x axis, one bar per layer."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    for key, (layers, shown) in runs.items():
        name = MODELS[key][0]
        fig, axes = plt.subplots(len(HEADLINE), 1, figsize=(max(8, 0.45 * len(shown)), 2.2 * len(HEADLINE)))
        width = 0.8 / len(layers)
        for ax, (src, value, label, up) in zip(axes, HEADLINE, strict=True):
            for j, lay in enumerate(layers):
                col = lay.column(src, value, shown)
                xs = [i + (j - (len(layers) - 1) / 2) * width for i in range(len(shown))]
                ax.bar(xs, [col[m][0] for m in shown], width, yerr=[col[m][1] for m in shown], label=lay.role)
            ax.set_ylabel(f"{label} {'↑' if up else '↓'}")
            ax.set_xticks(range(len(shown)))
            ax.set_xticklabels(shown if ax is axes[-1] else [], rotation=60, ha="right", fontsize=8)
            ax.grid(axis="y", alpha=0.3)
        axes[0].legend(fontsize=8, ncol=len(layers))
        axes[0].set_title(f"{name}: mean ± standard error over the sample photos")
        fig.tight_layout()
        path = root / f"{key}.png"
        fig.savefig(path, dpi=90)
        plt.close(fig)
        paths.append(path)
    return paths


def write_html(root: Path, tables: str, figures: list[Path]) -> None:
    import markdown  # the docs extra's dependency (mkdocs)

    body = markdown.markdown(tables, extensions=["tables"])
    images = "".join(f'<p><img src="{html.escape(p.name)}" style="max-width:100%"></p>' for p in figures)
    page = (
        "<!doctype html><html><head><meta charset='utf-8'><title>liftcam: the paper's table</title>"
        "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse;font-size:12px}"
        "td,th{border:1px solid #ccc;padding:2px 6px;text-align:right}</style></head><body>"
        f"{images}{body}</body></html>"
    )
    (root / "report.html").write_text(page, encoding="utf-8")


def publish(tables: str, part: str, figures: list[Path]) -> None:
    """The headline tables into README.md (between its ``paper-table`` markers); the full tables and the
    figures into docs/evaluation/ (the documentation site)."""
    readme = Path("README.md")
    start, end = "<!-- paper-table:start -->", "<!-- paper-table:end -->"
    text = readme.read_text(encoding="utf-8")
    if start not in text or end not in text:
        raise SystemExit(f"{readme} has no {start} ... {end} markers")
    head, rest = text.split(start, 1)
    _, tail = rest.split(end, 1)
    readme.write_text(f"{head}{start}\n{part}\n{end}{tail}", encoding="utf-8")
    docs = Path("docs/evaluation")
    images = []
    for figure in figures:
        target = docs / f"paper-table-{figure.name}"
        shutil.copyfile(figure, target)
        images.append(f"![{figure.stem}]({target.name})")
    (docs / "paper-table.md").write_text(tables.replace("\n\n", "\n\n" + "\n\n".join(images) + "\n\n", 1))


def run_all(args: argparse.Namespace, methods: list[str]) -> None:
    """Every run of ``--models`` x ``--layers``: the table's methods together, each other method alone."""
    for key in args.models:
        model, layer_names = MODELS[key]
        for role in args.layers:
            folder = args.out / key / role
            log = folder / "commands.txt"
            layer = layer_names[role]
            at = partial(command, model=model, layer=layer, step=args.step, threads=args.threads, device=args.device)
            here, notes = applicable(model, layer, methods)
            for note in notes:
                print(f"{key} {role}: {note}")
            table = [m for m in here if m in TABLE_METHODS]
            jobs: list[tuple[str | None, list[str]]] = [(None, table)] if table else []
            jobs += [(m, [m]) for m in here if m not in TABLE_METHODS]
            for alone, group in jobs:
                out = run_folder(folder, "evaluate", alone)
                split = alone is not None and not made_whole(out)
                metrics = ALL_BUT_SPLIT if split else None
                size = started_batch_size(out, args.batch_size)
                if "evaluate" in args.only:
                    run(at("evaluate", group, out=out, metrics=metrics, batch_size=size), log)
                with_coefficients = [m for m in group if m in FIDELITY_METHODS]
                if with_coefficients and "fidelity" in args.only:
                    out = run_folder(folder, "fidelity", alone)
                    fidelity = at("fidelity", with_coefficients, out=out)
                    shared = folder / "fidelity"
                    if alone and (shared / "settings.json").exists():
                        # the layer's reference Shapley values, computed once: every method rated against the same
                        fidelity += ["--shapley-from", str(shared)]
                    run(fidelity, log)
                if split and SPLIT_NAME in args.only and SPLIT_NAME not in args.later:
                    out = run_folder(folder, "evaluate", f"{alone}-{SPLIT_NAME}")
                    only = [SPLIT_METRIC]
                    size = started_batch_size(out, args.batch_size)
                    run(at("evaluate", group, out=out, metrics=only, batch_size=size), log)


def started_batch_size(out: Path, wanted: int) -> int:
    """The batch size of the evaluate run in ``out``: the stored one if it was started (a resume must keep it),
    else ``wanted``."""
    settings = read_settings(out)
    return int(settings["batch_size"]) if settings is not None else wanted


def made_whole(out: Path) -> bool:
    """Whether a costly method's run was started with every metric in one folder (before the split)."""
    settings = read_settings(out)
    return settings is not None and SPLIT_METRIC in settings.get("metrics", [])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", choices=list(MODELS), default=list(MODELS))
    parser.add_argument("--layers", nargs="+", choices=list(LAYER_ROLES), default=list(LAYER_ROLES))
    parser.add_argument("--methods", nargs="+", default=["table"])
    parser.add_argument("--step", type=float, default=0.05)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu", help="where the runs compute: cpu, cuda (see gpu_costly.sh)")
    parser.add_argument(
        "--later",
        nargs="*",
        choices=[SPLIT_NAME],
        default=[],
        help="leave the costly methods' Max-Sensitivity runs for another time (a short GPU lease)",
    )
    parser.add_argument(
        "--only",
        nargs="+",
        choices=RUN_KINDS,
        default=list(RUN_KINDS),
        help="run only these of each cell's runs (default all; e.g. max-sensitivity on a GPU lease for cells "
        "whose other runs were computed on the CPU)",
    )
    parser.add_argument(
        "--batch-size",
        type=int,
        default=DEFAULT_BATCH_SIZE,
        help="images per batch of the evaluate runs this call starts (1: a CPU run of a costly method keeps each "
        "finished photo through an interruption)",
    )
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/paper-table"))
    parser.add_argument("--assemble-only", action="store_true", help="only write the tables of what has run")
    parser.add_argument("--publish", action="store_true", help="write README.md's tables and docs/evaluation/")
    args = parser.parse_args()
    groups = {"table": list(TABLE_METHODS), "all": list(METHODS)}
    methods = [m for name in args.methods for m in groups.get(name, [name])]
    for m in methods:
        method_class(m)  # an unknown name fails here, not after an hour
    if not args.assemble_only:
        try:
            run_all(args, methods)
        except KeyboardInterrupt:  # gpu_costly.sh's time limit: what finished is on disk, a rerun resumes
            print("paper_table: interrupted; the finished runs are kept, a rerun resumes the others", flush=True)
            return 130
    runs = read_models(args.out, list(MODELS), list(METHODS))  # every method that has run, whatever --methods
    tables, readme_part = assemble(runs)
    (args.out / "tables.md").write_text(tables, encoding="utf-8")
    figures = plot(args.out, runs)
    write_html(args.out, tables, figures)
    print(f"{args.out / 'tables.md'}, {args.out / 'report.html'}")
    if args.publish:
        publish(tables, readme_part, figures)
    return 0


if __name__ == "__main__":
    sys.exit(main())
