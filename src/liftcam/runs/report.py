"""Reports of an evaluation run: ``summary.md``, ``summary.csv``, ``curves.png`` and ``report.html``.

Per method and metric: the mean over images and its 95% confidence interval (Student's t, from the
per-image values), the best mean of each column marked; the mean deletion and insertion curves; a
few images with every method's overlay. Written at the end of ``liftcam evaluate`` and by
``liftcam report RUN_DIR`` at any time (also on a run still in progress).
"""

from __future__ import annotations

import csv
import html
import json
import math
import os
import statistics
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import LiftCamError
from ..metrics import get_metric
from .files import open_text, write_text_atomic
from .records import RecordStore, failed_records, read_settings

_SETTINGS_KEYS = ("data", "model", "weights", "layer", "methods", "metrics", "metric_parameters", "target", "score")

# Two-sided 95% quantiles of Student's t for 1..30 degrees of freedom.
_T95 = (
    12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131,
    2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042,
)  # fmt: skip


def t95(df: int) -> float:
    """Two-sided 95% Student-t quantile (beyond 30 degrees of freedom: 1.96 + 2.5 / df, within 0.2%)."""
    if df < 1:
        return math.nan
    return _T95[df - 1] if df <= 30 else 1.96 + 2.5 / df


def numeric(values: list[Any]) -> list[float]:
    """The numeric, non-NaN values (``None``, NaN, booleans and lists left out)."""
    return [float(v) for v in values if isinstance(v, (int, float)) and not isinstance(v, bool) and not math.isnan(v)]


def mean_se(values: list[Any]) -> tuple[float, float, int]:
    """Mean, standard error (``stdev / sqrt(n)``, NaN for one value) and count of the numeric, non-NaN values."""
    clean = numeric(values)
    n = len(clean)
    if n == 0:
        return math.nan, math.nan, 0
    mean = statistics.fmean(clean)
    return mean, statistics.stdev(clean) / math.sqrt(n) if n > 1 else math.nan, n


def mean_ci(values: list[Any]) -> tuple[float, float, int]:
    """Mean, half-width of the 95% confidence interval (``t95(n - 1)`` standard errors), and count of the
    numeric, non-NaN values."""
    mean, se, n = mean_se(values)
    return mean, t95(n - 1) * se if n > 1 else math.nan, n


def value_columns(metrics: list[str]) -> list[tuple[str, bool | None]]:
    """(value name, higher is better or None for secondary values) in display order."""
    columns: list[tuple[str, bool | None]] = []
    for name in metrics:
        metric = get_metric(name)
        for value in metric.values:
            if value.endswith("_curve"):
                continue
            columns.append((value, metric.higher_is_better if value == metric.name else None))
    return columns


def summarize(directory: Path) -> dict[str, Any]:
    """Summary of every record in the run directory: per method and value, mean, CI and count."""
    if not directory.is_dir():
        raise LiftCamError(f"{directory}: not a folder")
    settings = read_settings(directory)
    if settings is None:
        raise LiftCamError(f"{directory} is not an evaluation run (no settings.json)")
    missing = [k for k in _SETTINGS_KEYS if k not in settings]
    if missing or not isinstance(settings.get("methods"), list) or not isinstance(settings.get("metrics"), list):
        raise LiftCamError(
            f"{directory / 'settings.json'}: broken settings file (missing or malformed: "
            f"{', '.join(missing) or 'methods/metrics'}); restore it or use another folder"
        )
    records, junk = RecordStore.read_all(directory)
    methods = settings["methods"]
    try:
        columns = value_columns(settings["metrics"])
    except LiftCamError as exc:
        raise LiftCamError(f"{directory / 'settings.json'}: {exc}") from None
    table: dict[str, dict[str, tuple[float, float, int]]] = {}
    for method in methods:
        rows = [r for r in records if r["method"] == method]
        table[method] = {value: mean_ci([r.get(value) for r in rows]) for value, _ in columns}
    best: dict[str, float] = {}  # compared as displayed: equal-looking means are equally best
    for value, higher in columns:
        means = [_rounded(value, table[m][value][0]) for m in methods if not math.isnan(table[m][value][0])]
        if higher is not None and means:
            best[value] = max(means) if higher else min(means)
    images = {r["image"] for r in records if r["method"] in methods}
    return {
        "settings": settings,
        "columns": columns,
        "table": table,
        "best": best,
        "images": len(images),
        "failed": failed_records(records),
        "records": records,
        "junk": junk,
    }


_AUCS = frozenset({"deletion", "insertion"})


def _rounded(value: str, mean: float) -> float:
    """As displayed: AUCs (in [0, 1]) with 3 decimals, percentages with 2."""
    return round(mean, 3 if value in _AUCS else 2)


def _is_best(summary: dict[str, Any], value: str, mean: float) -> bool:
    return value in summary["best"] and not math.isnan(mean) and _rounded(value, mean) == summary["best"][value]


def _cell(value: str, stat: tuple[float, float, int]) -> str:
    mean, ci, _ = stat
    if math.isnan(mean):
        return "n/a"
    d = 3 if value in _AUCS else 2
    return f"{mean:.{d}f} ± {ci:.{d}f}" if not math.isnan(ci) else f"{mean:.{d}f}"


def summary_markdown(summary: dict[str, Any]) -> str:
    settings = summary["settings"]
    columns = summary["columns"]
    arrows = {True: " ↑", False: " ↓", None: ""}
    lines = [
        f"{summary['images']} images of `{settings['data']}`, model `{settings['model']}` "
        f"({settings['weights']}), layer `{settings['layer']}`, target `{settings['target']}`, "
        f"score `{settings['score']}`; parameters {json.dumps(settings['metric_parameters'])}.",
        "Mean ± 95% confidence interval over images; best mean in bold.",
        "",
        "| method | " + " | ".join(f"{v}{arrows[h]}" for v, h in columns) + " |",
        "|---" * (len(columns) + 1) + "|",
    ]
    for method, stats in summary["table"].items():
        cells = []
        for value, _ in columns:
            cell = _cell(value, stats[value])
            if _is_best(summary, value, stats[value][0]):
                cell = f"**{cell}**"
            cells.append(cell)
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    if summary["failed"]:
        lines += ["", "Failed: " + ", ".join(f"{f['image']} ({f['reason']})" for f in summary["failed"])]
    if summary["junk"]:
        lines += ["", f"{summary['junk']} record line(s) that could not be read were skipped."]
    return "\n".join(lines) + "\n"


def _mean_curves(records: list[dict[str, Any]], methods: list[str], name: str) -> dict[str, np.ndarray]:
    curves = {}
    for method in methods:
        rows = [
            np.asarray(r[name], dtype=float)  # null (an undefined point, NaN) becomes NaN
            for r in records
            if r["method"] == method
            and isinstance(r.get(name), list)
            and all(v is None or isinstance(v, (int, float)) for v in r[name])
        ]
        if rows and len({len(c) for c in rows}) == 1:
            with warnings.catch_warnings():  # a step undefined for every image stays NaN
                warnings.simplefilter("ignore", RuntimeWarning)
                curves[method] = np.nanmean(rows, axis=0)
    return curves


def _plot_curves(summary: dict[str, Any], path: Path) -> bool:
    methods = summary["settings"]["methods"]
    names = ("deletion", "insertion", "mprt")
    panels = [(n, _mean_curves(summary["records"], methods, f"{n}_curve")) for n in names]
    panels = [(n, c) for n, c in panels if c]
    if not panels:
        return False
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 3.8), squeeze=False)
    try:
        for ax, (name, curves) in zip(axes[0], panels, strict=True):
            for method, curve in curves.items():
                value = summary["table"][method][name][0]
                steps = np.arange(1, len(curve) + 1) if name == "mprt" else np.linspace(0, 1, len(curve))
                ax.plot(steps, curve, label=f"{method} ({value:.3f})")
            if name == "mprt":  # the randomisation test: similarity after each re-initialised layer
                ax.set_xlabel("layers re-initialised")
                ax.set_ylabel("similarity with the trained model's map")
                ax.set_title(f"Randomisation test (mean over {summary['images']} images; mean)")
            else:
                ax.set_xlabel("fraction of pixels " + ("deleted" if name == "deletion" else "inserted"))
                ax.set_ylabel(f"p_c ({summary['settings']['score']})")
                ax.set_title(f"{name.capitalize()} (mean over {summary['images']} images; AUC)")
            ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(path, dpi=110)
    finally:
        plt.close(fig)
    return True


def _html(summary: dict[str, Any], directory: Path, has_curves: bool) -> str:
    settings = summary["settings"]
    columns = summary["columns"]
    head = "".join(f"<th>{html.escape(v)}</th>" for v, _ in columns)
    rows = []
    for method, stats in summary["table"].items():
        cells = []
        for value, _ in columns:
            text = html.escape(_cell(value, stats[value]))
            best = _is_best(summary, value, stats[value][0])
            cells.append(f"<td><b>{text}</b></td>" if best else f"<td>{text}</td>")
        rows.append(f"<tr><th>{html.escape(method)}</th>{''.join(cells)}</tr>")
    examples = sorted((directory / "examples").glob("[0-9][0-9][0-9][0-9].png"))
    gallery = []
    for image in examples:
        cells = [f'<figure><img src="examples/{image.name}"><figcaption>input</figcaption></figure>']
        for method in settings["methods"]:
            overlay = directory / "examples" / f"{image.stem}_{method}.png"
            if overlay.exists():
                caption = html.escape(method)
                cells.append(f'<figure><img src="examples/{overlay.name}"><figcaption>{caption}</figcaption></figure>')
        gallery.append(f'<div class="row">{"".join(cells)}</div>')
    failed = "".join(f"<li>{html.escape(f['image'])}: {html.escape(f['reason'])}</li>" for f in summary["failed"])
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>liftcam evaluation</title>
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:4px 8px;text-align:right}}figure{{display:inline-block;margin:4px}}
img{{width:160px}}figcaption{{text-align:center;font-size:12px}}</style></head><body>
<h1>liftcam evaluation</h1>
<p>{summary["images"]} images of <code>{html.escape(settings["data"])}</code>; model
<code>{html.escape(settings["model"])}</code> ({html.escape(settings["weights"])}), layer
<code>{html.escape(settings["layer"])}</code>, target {html.escape(settings["target"])}, score
{html.escape(settings["score"])}; parameters <code>{html.escape(json.dumps(settings["metric_parameters"]))}</code>.
Mean ± 95% confidence interval over images; best in bold.</p>
<table><tr><th>method</th>{head}</tr>{"".join(rows)}</table>
{'<h2>Curves</h2><img src="curves.png" style="width:auto">' if has_curves else ""}
<h2>Examples</h2>{"".join(gallery) or "<p>none</p>"}
{f"<h2>Failed</h2><ul>{failed}</ul>" if failed else ""}
</body></html>
"""


def write_evaluate_report(directory: str | Path) -> dict[str, Any]:
    """Write ``summary.md``, ``summary.csv``, ``curves.png`` and ``report.html`` into the run directory."""
    directory = Path(directory)
    summary = summarize(directory)
    write_text_atomic(directory / "summary.md", summary_markdown(summary))
    with open_text(directory / "summary.csv.tmp") as f:
        writer = csv.writer(f)
        writer.writerow(["method", "value", "mean", "ci95", "n", "best"])
        for method, stats in summary["table"].items():
            for value, _ in summary["columns"]:
                mean, ci, n = stats[value]
                best = _is_best(summary, value, mean)
                writer.writerow([method, value, mean, ci, n, int(best)])
    os.replace(directory / "summary.csv.tmp", directory / "summary.csv")
    has_curves = _plot_curves(summary, directory / "curves.png")
    write_text_atomic(directory / "report.html", _html(summary, directory, has_curves))
    return summary
