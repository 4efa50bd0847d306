"""Labelled data, boxes through resize + crop, and the resumable, distributable ``liftcam evaluate``."""

from __future__ import annotations

import csv
import json
import math
import os
import shutil
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from liftcam.cli import EXIT_ERROR, main
from liftcam.data import Preprocessing, sample_photos
from liftcam.data.datasets import SAMPLE_BOXES, load_dataset, read_synsets
from liftcam.errors import LiftCamError
from liftcam.explain import Explainer
from liftcam.models import imagenet_categories
from liftcam.runs.report import mean_ci, mean_se

# Real WordNet ids with their ImageNet class indices (torchvision's category order), from Imagenette.
IMAGENETTE = {"n01440764": 0, "n02102040": 217, "n03394916": 566, "n03888257": 701}


@pytest.mark.parametrize(("width", "height"), [(400, 300), (300, 500), (224, 224), (1000, 257)])
def test_boxes_follow_the_image_through_resize_and_crop(width: int, height: int) -> None:
    """Paint a box into an image, preprocess it, and find the painted box again in the crop."""
    prep = Preprocessing(resize=256, crop=224)
    box = (width * 0.3, height * 0.2, width * 0.55, height * 0.9)
    image = np.zeros((height, width, 3), dtype=np.uint8)
    image[round(box[1]) : round(box[3]), round(box[0]) : round(box[2])] = 255
    crop = np.asarray(prep.crop_image(Image.fromarray(image)))[..., 0] > 127
    rows, cols = np.nonzero(crop)
    found = (cols.min(), rows.min(), cols.max() + 1, rows.max() + 1)
    moved = prep.transform_boxes(torch.tensor([box]), width, height)
    assert moved.shape == (1, 4)
    assert np.allclose(moved[0].numpy(), found, atol=1.5), (moved, found)


def test_boxes_outside_the_crop_are_dropped_and_border_boxes_clipped() -> None:
    prep = Preprocessing(resize=256, crop=224)
    boxes = torch.tensor([[0.0, 0.0, 20.0, 300.0], [0.0, 0.0, 400.0, 300.0], [200, 150, 201, 151]])
    moved = prep.transform_boxes(boxes, 400, 300)  # the left 58 resized pixels are cropped away
    assert moved.shape == (2, 4)
    assert torch.allclose(moved[0], torch.tensor([0.0, 0.0, 224.0, 224.0]))
    assert float(moved[1, 2] - moved[1, 0]) == pytest.approx(341 / 400, rel=1e-4)  # one pixel, rescaled


def _write(folder: Path, name: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    Image.new("RGB", (40, 30), (100, 20, 30)).save(path)
    return path


def test_imagefolder_with_wordnet_ids_and_synsets(tmp_path: Path) -> None:
    synsets = tmp_path / "LOC_synset_mapping.txt"
    wnids = sorted(IMAGENETTE)
    # a full synset list in class order; the ids not known here are placeholders in between
    lines = []
    for index in range(1000):
        wnid = next((w for w, i in IMAGENETTE.items() if i == index), f"n9{index:07d}")
        lines.append(f"{wnid} some name, other name")
    synsets.write_text("\n".join(lines) + "\n")
    assert read_synsets(synsets)[217] == "n02102040"
    for wnid in wnids:
        _write(tmp_path / "data" / wnid, "a.JPEG")
    _write(tmp_path / "data" / "5", "b.png")
    samples = load_dataset(tmp_path / "data", synsets=synsets)
    labels = {p.path.parent.name: p.label for p in samples}
    assert labels == {**IMAGENETTE, "5": 5}
    assert imagenet_categories()[217] == "English springer"
    with pytest.raises(LiftCamError, match="synset list"):
        load_dataset(tmp_path / "data")


def test_voc_xml_and_loc_solution(tmp_path: Path) -> None:
    synsets = tmp_path / "synsets.txt"
    synsets.write_text("".join(f"n9{i:07d}\n" if i not in IMAGENETTE.values() else "" for i in range(0)))
    synsets.write_text("\n".join(next((w for w, i in IMAGENETTE.items() if i == k), f"n9{k:07d}") for k in range(1000)))
    val = tmp_path / "val"
    _write(val, "ILSVRC2012_val_00000001.JPEG")
    _write(val, "ILSVRC2012_val_00000002.JPEG")
    (val / "ILSVRC2012_val_00000001.xml").write_text(
        "<annotation><object><name>n01440764</name><bndbox><xmin>1</xmin><ymin>2</ymin><xmax>30</xmax>"
        "<ymax>20</ymax></bndbox></object><object><name>n01440764</name><bndbox><xmin>5</xmin><ymin>5</ymin>"
        "<xmax>9</xmax><ymax>9</ymax></bndbox></object></annotation>"
    )
    samples = load_dataset(val, synsets=synsets)
    first, second = samples
    assert first.label == 0 and first.boxes == [(1.0, 2.0, 30.0, 20.0), (5.0, 5.0, 9.0, 9.0)]
    assert second.label is None and second.boxes == []
    solution = tmp_path / "LOC_val_solution.csv"
    solution.write_text("ImageId,PredictionString\nILSVRC2012_val_00000002,n03888257 3 4 25 28 n03888257 0 0 5 5 \n")
    samples = load_dataset(val, boxes=solution, synsets=synsets)
    assert samples[1].label == 701 and samples[1].boxes == [(3.0, 4.0, 25.0, 28.0), (0.0, 0.0, 5.0, 5.0)]


def test_limit_and_seed_pick_a_reproducible_subset(tmp_path: Path) -> None:
    for i in range(20):
        _write(tmp_path, f"{i:02d}.png")
    a = load_dataset(tmp_path, limit=5, seed=1)
    b = load_dataset(tmp_path, limit=5, seed=1)
    c = load_dataset(tmp_path, limit=5, seed=2)
    assert [s.path for s in a] == [s.path for s in b] != [s.path for s in c]
    assert len(a) == 5 and [s.path for s in a] == sorted(s.path for s in a)


def _sample_set(folder: Path, names: list[str]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    photos = {p.name: p for p in sample_photos().values()}
    for name in names:
        shutil.copy(photos[name], folder / name)
    return folder


SAMPLES = ["coffee.png", "chelsea.png", "motorcycle_left.png", "rocket.jpg", "flower.jpg"]
FAST = ["--step", "0.1", "--quiet"]


def test_end_to_end_on_the_labelled_sample_photos(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = _sample_set(tmp_path / "data", SAMPLES)
    out = tmp_path / "run"
    args = ["evaluate", str(data), "--boxes", str(SAMPLE_BOXES), "--out", str(out), "--metrics", "all"]
    assert main([*args, "--methods", "lift-cam", "grad-cam", "--target", "label", *FAST]) == 0
    records = [json.loads(line) for line in (out / "records.jsonl").read_text().splitlines()]
    assert len(records) == 2 * len(SAMPLES)
    assert {r["target"] for r in records} == {967, 281, 665, 657, 985}  # the annotated labels
    lift = [r for r in records if r["method"] == "lift-cam"]
    assert sum(r["pointing_game"] for r in lift) >= 300  # at least 3 of 5 objects found
    assert all(len(r["deletion_curve"]) == 11 and 0 <= r["deletion"] <= 1 for r in lift)
    coffee = next(r for r in lift if r["image"].endswith("coffee.png"))
    assert coffee["energy_pointing_game"] > 50 and coffee["average_drop"] < 60
    summary = (out / "summary.md").read_text()
    assert "| lift-cam |" in summary and "pointing_game ↑" in summary and "± " in summary
    with (out / "summary.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert {r["value"] for r in rows} >= {"average_drop", "adcc", "coherency", "insertion", "pointing_game"}
    html = (out / "report.html").read_text()
    assert "<table>" in html and "curves.png" in html and "examples/0000_lift-cam.png" in html
    assert (out / "curves.png").stat().st_size > 1000 and (out / "examples" / "0000_lift-cam.png").exists()
    # the settings are written into the result files
    settings = json.loads((out / "settings.json").read_text())
    assert settings["metric_parameters"] == {
        "blur_kernel": 11,
        "blur_sigma": 5.0,
        "clip": True,
        "fill": 0.0,
        "noise": 0.01,
        "percentiles": [10.0, 20.0, 30.0, 40.0, 50.0, 60.0, 70.0, 80.0, 90.0],
        "step": 0.1,
        "tolerance": 15.0,
    }
    assert main(["report", str(out)]) == 0


def test_a_metric_gives_the_same_values_in_a_run_of_its_own(tmp_path: Path) -> None:
    """Each metric draws from its own seeded generator: Max-Sensitivity run alone, and the others without it,
    give bit for bit the values of one run with them all (paper_table.py splits the costly methods' runs so)."""
    data = _sample_set(tmp_path / "data", SAMPLES[:2])
    others = ["road", "adcc", "random_logit", "faithfulness_correlation", "deletion"]
    args = ["evaluate", str(data), "--methods", "lift-cam", "grad-cam", "--threads", "1", *FAST, "--metrics"]
    runs = {}
    for name, metrics in {"all": [*others, "max_sensitivity"], "others": others, "alone": ["max_sensitivity"]}.items():
        assert main([*args, *metrics, "--out", str(tmp_path / name)]) == 0
        lines = (tmp_path / name / "records.jsonl").read_text().splitlines()
        runs[name] = {(r["image"], r["method"]): r for r in map(json.loads, lines)}
    assert len(runs["all"]) == 4
    for key, whole in runs["all"].items():
        parts = {**runs["others"][key], **runs["alone"][key]}
        for value in whole:
            if value not in ("ms", "body_ms"):
                assert parts[value] == whole[value], (key, value)
    assert all("max_sensitivity" not in r for r in runs["others"].values())


def test_adcc_and_arcc_share_one_reexplanation(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Their coherency term explains each masked input once per batch and method, with the values of each
    metric in a run of its own (a sampled method's re-explanation is seeded per call, so sharing changes nothing)."""
    data = _sample_set(tmp_path / "data", SAMPLES[:2])
    calls: list[int] = []
    original = Explainer.__call__

    def counted(self: Explainer, *args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Explainer, "__call__", counted)
    methods = ["lift-cam", "smoothgrad-cam++", "random-cam"]
    args = ["evaluate", str(data), "--methods", *methods, "--threads", "1", *FAST, "--metrics"]
    runs, counts = {}, {}
    for name, metrics in {"both": ["adcc", "arcc"], "adcc": ["adcc"], "arcc": ["arcc"]}.items():
        calls.clear()
        assert main([*args, *metrics, "--out", str(tmp_path / name)]) == 0
        counts[name] = len(calls)
        runs[name] = _table(tmp_path / name)
    assert counts == {"both": len(methods), "adcc": len(methods), "arcc": len(methods)}  # one batch of 2 photos
    for key, whole in runs["both"].items():
        parts = {**runs["adcc"][key], **runs["arcc"][key]}
        for value in ("adcc", "coherency", "complexity", "arcc", "arcc_road"):
            assert parts[value] == whole[value], (key, value)


def test_the_progress_bar_says_which_stage_a_batch_is_in(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A costly method's batch takes an hour on CPU with the bar at 0: its postfix names the stage."""
    data = _sample_set(tmp_path / "data", SAMPLES[:1])
    args = ["evaluate", str(data), "--methods", "lift-cam", "--step", "0.1", "--out", str(tmp_path / "run")]
    assert main([*args, "--metrics", "adcc", "deletion"]) == 0
    bar = capsys.readouterr().err
    stages = [bar.find(stage) for stage in ("explaining]", "adcc]", "deletion]")]
    assert -1 not in stages and stages == sorted(stages), bar
    assert "1/1" in bar


def _no_constant(name: str) -> None:
    raise AssertionError(f"{name} in a record: not standard JSON")


def test_sanity_metrics_in_a_run_and_its_report(tmp_path: Path) -> None:
    """The randomisation test (named: ``all`` leaves it out), Faithfulness Correlation and the random logit
    test through ``liftcam evaluate``: records, summary and the randomisation curve in the report."""
    data = _sample_set(tmp_path / "data", SAMPLES[:2])
    out = tmp_path / "run"
    metrics = ["mprt", "faithfulness_correlation", "random_logit"]
    args = ["evaluate", str(data), "--out", str(out), "--metrics", *metrics, "--methods", "lift-cam", "grad-cam"]
    assert main([*args, "--model", "resnet18", "--weights", "random", "--quiet"]) == 0
    lines = (out / "records.jsonl").read_text().splitlines()
    records = [json.loads(line, parse_constant=_no_constant) for line in lines]  # NaN is written as null
    assert len(records) == 4
    for record in records:
        assert len(record["mprt_curve"]) == 41  # every layer of ResNet18 with parameters, from the output back
        last = record["mprt_curve"][-1]
        assert record["mprt_last"] == (None if last is None else pytest.approx(last, abs=1e-6))  # curves: 6 decimals
        assert -1 <= record["faithfulness_correlation"] <= 1 and -1 <= record["random_logit"] <= 1
    summary = (out / "summary.md").read_text()
    assert "mprt ↓" in summary and "random_logit ↓" in summary and "faithfulness_correlation ↑" in summary
    assert (out / "curves.png").stat().st_size > 1000


def test_other_settings_into_the_same_run_are_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = _sample_set(tmp_path / "data", ["coffee.png"])
    out = tmp_path / "run"
    assert main(["evaluate", str(data), "--out", str(out), "--methods", "grad-cam", *FAST]) == 0
    capsys.readouterr()
    assert main(["evaluate", str(data), "--out", str(out), "--methods", "lift-cam", *FAST]) == EXIT_ERROR
    err = capsys.readouterr().err
    assert err.count("liftcam: error") == 1 and "differs in: methods" in err and "Traceback" not in err
    assert main(["evaluate", str(tmp_path / "nope"), "--out", str(out), *FAST]) == EXIT_ERROR
    assert main(["report", str(tmp_path)]) == EXIT_ERROR


def test_a_resumed_run_computes_with_the_thread_count_it_started_with(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = _sample_set(tmp_path / "data", ["coffee.png"])
    out = tmp_path / "run"
    args = ["evaluate", str(data), "--out", str(out), "--methods", "grad-cam", "--metrics", "average_drop", *FAST]
    before = torch.get_num_threads()
    try:
        assert main([*args, "--threads", "1"]) == 0
        settings = json.loads((out / "settings.json").read_text())
        assert (settings["device"], settings["threads"]) == ("cpu", 1)
        torch.set_num_threads(2)
        assert main(args) == 0  # resumed without --threads: the run's own count
        assert torch.get_num_threads() == 1
        capsys.readouterr()
        assert main([*args, "--threads", "2"]) == EXIT_ERROR
        err = capsys.readouterr().err
        assert err.count("liftcam: error") == 1 and "differs in: threads) (--threads 1 resumes it)" in err
        # a run stored before thread counts were kept resumes with any
        legacy = {k: v for k, v in settings.items() if k not in ("device", "threads")}
        (out / "settings.json").write_text(json.dumps(legacy))
        assert main([*args, "--threads", "2"]) == 0
        assert json.loads((out / "settings.json").read_text()) == legacy
    finally:
        torch.set_num_threads(before)


# the thread count pinned: CPU kernels may round differently with another number of threads
PINNED = {**os.environ, "OMP_NUM_THREADS": "1"}


# with the seeded metrics (noise, random subsets, a random class): their draws are seeded per image
SPLIT_RUN = [
    "--batch-size", "2", "--methods", "lift-cam", "grad-cam", "--step", "0.02", "--threads", "1", "--quiet",
    "--metrics", "average_drop", "deletion", "road", "faithfulness_correlation", "max_sensitivity", "random_logit",
    "--road-percentiles", "50",
]  # fmt: skip


def _run(out: Path, data: Path, extra: list[str] | None = None) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-m", "liftcam", "evaluate", str(data), "--out", str(out), *SPLIT_RUN, *(extra or [])]
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, env=PINNED)


def _table(folder: Path) -> dict[tuple[str, str], dict[str, object]]:
    rows = []
    for path in sorted(folder.glob("records*.jsonl")):
        rows += [json.loads(line) for line in path.read_text().splitlines()]
    keys = [(Path(r["image"]).name, r["method"]) for r in rows]
    assert len(keys) == len(set(keys)), "duplicated records"
    return {k: {m: v for m, v in r.items() if m not in ("ms", "image")} for k, r in zip(keys, rows, strict=True)}


def _same_summary(a: Path, b: Path) -> None:
    """Bit-identical: every image is computed in the same batch, with the same thread count."""
    assert (a / "summary.csv").read_bytes() == (b / "summary.csv").read_bytes()
    assert (a / "summary.md").read_bytes() == (b / "summary.md").read_bytes()


def test_killed_run_resumes_without_loss_or_duplicates(tmp_path: Path) -> None:
    data = _sample_set(tmp_path / "data", SAMPLES)
    killed, clean = tmp_path / "killed", tmp_path / "clean"
    process = _run(killed, data)
    records = killed / "records.jsonl"
    deadline = time.time() + 300
    while time.time() < deadline and (not records.exists() or len(records.read_text().splitlines()) < 3):
        time.sleep(0.05)
    os.kill(process.pid, signal.SIGKILL)  # a real kill, possibly in the middle of a write
    process.wait()
    partial = len(records.read_text().splitlines())
    assert 0 < partial < 2 * len(SAMPLES)
    assert _run(killed, data).wait() == 0
    assert _run(clean, data).wait() == 0
    assert _table(killed) == _table(clean)
    _same_summary(killed, clean)


def test_torchrun_with_two_processes_equals_one(tmp_path: Path) -> None:
    data = _sample_set(tmp_path / "data", SAMPLES)
    single, double = tmp_path / "single", tmp_path / "double"
    assert _run(single, data).wait() == 0
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m", "liftcam",
        "evaluate", str(data), "--out", str(double), *SPLIT_RUN,
    ]  # fmt: skip
    result = subprocess.run(command, env=PINNED, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    shards = sorted(p.name for p in double.glob("records*.jsonl"))
    assert shards == ["records.rank0.jsonl", "records.rank1.jsonl"]
    rank1 = [json.loads(line)["index"] for line in (double / "records.rank1.jsonl").read_text().splitlines()]
    assert set(rank1) == {2, 3}  # process 1 of 2 took batch 1 of 3: images 2 and 3
    assert _table(double) == _table(single)
    _same_summary(double, single)


def test_bundled_labelled_samples() -> None:
    samples = load_dataset("samples")
    annotated = {s.path.name: s for s in samples if s.boxes}
    assert set(annotated) == {"coffee.png", "chelsea.png", "motorcycle_left.png", "rocket.jpg", "flower.jpg"}
    assert annotated["coffee.png"].label == 967 and imagenet_categories()[967] == "espresso"
    assert len(samples) == len(sample_photos())
    assert [s.path for s in load_dataset("samples", limit=3, seed=4)] == [
        s.path for s in load_dataset("samples", limit=3, seed=4)
    ]


def test_resume_after_a_kill_between_two_methods_of_an_image(tmp_path: Path) -> None:
    """The process died after writing one method's record of an image: the image is explained again,
    and only the missing record is written."""
    data = _sample_set(tmp_path / "data", ["coffee.png", "chelsea.png"])
    out = tmp_path / "run"
    args = ["evaluate", str(data), "--out", str(out), "--methods", "lift-cam", "grad-cam"]
    args += ["--metrics", "average_drop", "--quiet"]
    assert main(args) == 0
    path = out / "records.jsonl"
    lines = path.read_text().splitlines()
    path.write_text("\n".join(lines[:3]) + "\n")  # the second image's second record is missing
    assert main(args) == 0
    again = path.read_text().splitlines()
    assert again[:3] == lines[:3] and len(again) == 4
    assert sorted(json.loads(a)["method"] for a in again[2:]) == ["grad-cam", "lift-cam"]


def test_step_accepts_fractions() -> None:
    from liftcam.cli import build_parser

    args = build_parser().parse_args(["evaluate", "d", "--out", "o", "--step", "1/224"])
    assert args.step == 1 / 224
    with pytest.raises(SystemExit):
        build_parser().parse_args(["evaluate", "d", "--out", "o", "--step", "2"])


def test_mean_standard_error_and_confidence_interval() -> None:
    values = [1.0, 2, 3, 4, None, float("nan"), True, [1.0]]  # only the four numbers count
    mean, se, n = mean_se(values)
    assert (mean, n) == (2.5, 4) and se == pytest.approx(statistics.stdev([1, 2, 3, 4]) / 2)
    assert mean_ci(values) == pytest.approx((2.5, 3.182 * se, 4))
    assert mean_se([5.0])[:1] == (5.0,) and math.isnan(mean_se([5.0])[1]) and math.isnan(mean_ci([5.0])[1])
    assert mean_se([None])[2] == 0 and math.isnan(mean_se([])[0])
