"""The command line: the offline default run, outputs, and one clear line for every bad input."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from liftcam.cli import EXIT_BAD_INPUT, EXIT_ERROR, main
from liftcam.data import sample_photos


def _errors(stderr: str) -> list[str]:
    assert "Traceback" not in stderr
    return [line for line in stderr.splitlines() if line.startswith("liftcam: error")]


def test_default_run_explains_the_sample_photos(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    assert main(["explain", "--out", str(out), "--quiet"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["model"] == "efficientnet-lite0" and summary["layer"] == "features.17"
    assert len(summary["images"]) == len(sample_photos()) >= 8 and summary["failed"] == []
    by_stem = {Path(e["file"]).stem: e for e in summary["images"]}
    coffee = by_stem["coffee"]
    assert coffee["top5"][0]["name"] == "espresso" and len(coffee["top5"]) == 5
    record = coffee["explanations"][0]
    assert record["name"] == "espresso" and record["class"] == 967
    assert abs(record["methods"]["lift-cam"]["delta"]) < 1e-4
    folder = Path(coffee["output_dir"])
    raw = np.load(folder / "lift-cam.npy")
    assert raw.shape == (7, 7)
    overlay = Image.open(folder / "lift-cam.png")
    assert overlay.size == (224, 224) and overlay.mode == "RGB"


def test_fast_methods_write_a_grid(tmp_path: Path) -> None:
    photos = sample_photos()
    out = tmp_path / "out"
    code = main(
        ["explain", str(photos["chelsea"]), str(photos["coffee"]), "--method", "fast", "--out", str(out), "--quiet"]
    )
    assert code == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["methods"] == [
        "lift-cam", "cam", "grad-cam", "grad-cam++", "xgrad-cam", "hires-cam", "layer-cam",
        "grad-cam-elementwise", "eigen-cam", "eigen-grad-cam", "fem", "finer-cam",
    ]  # fmt: skip
    for entry in summary["images"]:
        folder = Path(entry["output_dir"])
        assert Image.open(folder / "grid.png").size[0] > 8 * 150
        assert all((folder / f"{m}.png").is_file() and (folder / f"{m}.npy").is_file() for m in summary["methods"])


def test_all_methods_on_a_nonlinear_head_skip_cam(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    photo = sample_photos()["coffee"]
    out = tmp_path / "out"
    assert (
        main(["explain", str(photo), "--layer", "features.16", "--method", "fast", "--out", str(out), "--quiet"]) == 0
    )
    assert "liftcam: note: cam skipped: cam needs a head that is global average pooling" in capsys.readouterr().err
    summary = json.loads((out / "summary.json").read_text())
    assert "cam" not in summary["methods"] and "lift-cam" in summary["methods"]


def test_bad_files_are_listed_and_good_ones_written(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    shutil.copy(sample_photos()["coffee"], folder / "coffee.png")
    (folder / "notes.png").write_text("this is text")
    data = sample_photos()["chelsea"].read_bytes()
    (folder / "truncated.png").write_bytes(data[: len(data) // 3])
    out = tmp_path / "out"
    missing = tmp_path / "missing.jpg"
    code = main(["explain", str(folder), str(missing), "--out", str(out), "--batch-size", "2", "--quiet"])
    assert code == EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert "Traceback" not in err
    skipped = [line for line in err.splitlines() if line.startswith("liftcam: skipped")]
    assert len(skipped) == 3
    assert any("notes.png: not an image" in s for s in skipped)
    assert any("truncated.png: cannot read image" in s for s in skipped)
    assert any("missing.jpg: no such file" in s for s in skipped)
    summary = json.loads((out / "summary.json").read_text())
    assert [Path(e["file"]).name for e in summary["images"]] == ["coffee.png"]
    assert len(summary["failed"]) == 3
    assert (out / "coffee" / "lift-cam.png").is_file()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--layer", "features.99"], "no layer named 'features.99'"),
        (["--target", "1000"], "class 1000 is out of range for a model with 1000 classes"),
        (["--target", "-3"], "out of range"),
        (["--target", "not-a-class"], "neither a class index"),
        (["--model", "resnet51"], "unknown model 'resnet51'"),
        (["--method", "gradcam"], "unknown method 'gradcam'"),
        (["--layer", "classifier.1"], "not spatial maps"),
        (["--weights", "/nonexistent/w.pth"], "does not exist"),
        (["--device", "tpu9"], "unknown device"),
    ],
)
def test_bad_arguments_give_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    photo = sample_photos()["coffee"]
    code = main(["explain", str(photo), "--out", str(tmp_path / "out"), "--quiet", *args])
    assert code == EXIT_ERROR
    errors = _errors(capsys.readouterr().err)
    assert len(errors) == 1 and message in errors[0], errors


def test_target_by_name_and_topk(tmp_path: Path) -> None:
    photo = sample_photos()["coffee"]
    out = tmp_path / "named"
    assert main(["explain", str(photo), "--target", "cup", "--out", str(out), "--quiet"]) == 0
    record = json.loads((out / "summary.json").read_text())["images"][0]["explanations"][0]
    assert record["name"] == "cup" and record["class"] == 968
    out = tmp_path / "top"
    assert (
        main(
            [
                "explain",
                str(photo),
                "--target",
                "top2",
                "--method",
                "lift-cam",
                "grad-cam",
                "--out",
                str(out),
                "--quiet",
            ]
        )
        == 0
    )
    entry = json.loads((out / "summary.json").read_text())["images"][0]
    assert [r["rank"] for r in entry["explanations"]] == [1, 2]
    assert [r["class"] for r in entry["explanations"]] == [t["class"] for t in entry["top5"][:2]]
    assert (out / "coffee" / "grad-cam_top2.npy").is_file()


def test_layers_command(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["layers"]) == 0
    lines = capsys.readouterr().out.splitlines()
    default = [line for line in lines if "<- default" in line]
    assert len(default) == 1 and default[0].startswith("features.17 ") and "1280 x 7 x 7" in default[0]
    assert any(line.startswith("features.16 ") and "320 x 7 x 7" in line for line in lines)


def test_python_dash_m(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "liftcam", "layers", "resnet18"], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0 and "layer4 " in result.stdout
    bad = subprocess.run(
        [sys.executable, "-m", "liftcam", "explain", str(tmp_path / "x.png"), "--layer", "nope", "--quiet"],
        capture_output=True,
        text=True,
        check=False,
        cwd=tmp_path,
    )
    assert bad.returncode == EXIT_ERROR
    assert len(_errors(bad.stderr)) == 1


def test_a_group_leaves_out_what_the_head_has_no_rule_for(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    photo = sample_photos()["coffee"]
    out = tmp_path / "out"
    code = main(["explain", str(photo), "--model", "convnext_tiny", "--method", "fast", "--out", str(out), "--quiet"])
    assert code == 0
    err = capsys.readouterr().err
    assert "cam skipped: cam needs a head that is global average pooling then one Linear layer" in err
    summary = json.loads((out / "summary.json").read_text())
    assert summary["methods"] == [
        "lift-cam", "grad-cam", "grad-cam++", "xgrad-cam", "hires-cam", "layer-cam",
        "grad-cam-elementwise", "eigen-cam", "eigen-grad-cam", "fem", "finer-cam",
    ]  # fmt: skip
    # ConvNeXt's head (LayerNorm, flatten, linear) has DeepLIFT rules: summation-to-delta holds
    record = summary["images"][0]["explanations"][0]
    assert abs(record["methods"]["lift-cam"]["delta"]) <= 1e-4 * max(1.0, abs(record["score"]))
    # asked for by name, an inapplicable method is an error
    assert (
        main(["explain", str(photo), "--model", "convnext_tiny", "--method", "cam", "--out", str(out), "--quiet"])
        == EXIT_ERROR
    )


def test_segmenter_explains_each_predicted_class_over_its_pixels(tmp_path: Path) -> None:
    photo = sample_photos()["coffee"]
    out = tmp_path / "seg"
    torch.manual_seed(0)  # the random weights: a prediction with a class besides the background
    code = main(
        ["explain", str(photo), "--model", "lraspp_mobilenet_v3_large", "--method", "lift-cam", "grad-cam",
         "--target", "top2", "--out", str(out), "--quiet"]
    )  # fmt: skip
    assert code == 0
    summary = json.loads((out / "summary.json").read_text())
    (entry,) = summary["images"]
    folder = Path(entry["output_dir"])
    assert (folder / entry["segmentation"]).is_file()
    first, second = entry["explanations"]
    assert first["class"] != second["class"]
    assert first["region"] == "predicted" and first["region_pixels"] > 0
    assert abs(first["methods"]["lift-cam"]["delta"]) <= 1e-4 * abs(first["score"])
    for record in (first, second):
        for item in record["methods"].values():
            assert np.load(folder / item["raw"]).ndim == 2
    # a class named as on the model's categories (VOC's for torchvision's segmenters)
    assert main(["explain", str(photo), "--model", "lraspp_mobilenet_v3_large", "--method", "grad-cam",
                 "--target", "cat", "--out", str(tmp_path / "cat"), "--quiet"]) == 0  # fmt: skip
    cat = json.loads((tmp_path / "cat" / "summary.json").read_text())["images"][0]["explanations"]
    assert [r["name"] for r in cat] == ["cat"]


def test_detector_draws_its_detections_and_explains_the_first_ones(tmp_path: Path) -> None:
    photo = sample_photos()["astronaut"]
    out = tmp_path / "det"
    torch.manual_seed(0)
    code = main(
        ["explain", str(photo), "--model", "fasterrcnn_mobilenet_v3_large_320_fpn", "--task", "detection",
         "--method", "lift-cam", "grad-cam", "--target", "top2", "--out", str(out), "--grid", "--quiet"]
    )  # fmt: skip
    assert code == 0
    (entry,) = json.loads((out / "summary.json").read_text())["images"]
    folder = Path(entry["output_dir"])
    assert Image.open(folder / entry["detections_picture"]).size == Image.open(photo).size
    assert len(entry["detections"]) >= 2
    first, second = entry["explanations"]
    assert (first["detection"], second["detection"]) == (0, 1)
    assert first["score"] == entry["detections"][0]["score"]
    lift = first["methods"]["lift-cam"]
    assert abs(lift["delta"]) <= 1e-4 * max(abs(first["score"]), 1e-6)
    assert Image.open(folder / lift["overlay"]).size == Image.open(photo).size
    assert Image.open(folder / first["grid"]).size[0] > 2 * Image.open(folder / first["grid"]).size[1]  # a row
    # every FPN level the box head reads: each level's raw map and residual, and the fused map
    code = main(
        ["explain", str(photo), "--model", "fasterrcnn_mobilenet_v3_large_320_fpn", "--method", "lift-cam",
         "--layer", "backbone.fpn", "--target", "top1", "--out", str(tmp_path / "fpn"), "--quiet"]
    )  # fmt: skip
    assert code == 0
    (fpn,) = json.loads((tmp_path / "fpn" / "summary.json").read_text())["images"]
    assert json.loads((tmp_path / "fpn" / "summary.json").read_text())["layer"] == "backbone.fpn[0]+backbone.fpn[1]"
    item = fpn["explanations"][0]["methods"]["lift-cam"]
    assert list(item["layers"]) == ["backbone.fpn[0]", "backbone.fpn[1]"]
    folder = Path(fpn["output_dir"])
    assert np.load(folder / item["fused"]).ndim == 2
    for level in item["layers"].values():
        assert np.load(folder / level["raw"]).ndim == 2 and abs(level["delta"]) <= 1e-4
    # a detector is not a classifier
    assert main(["explain", str(photo), "--model", "resnet18", "--task", "detection", "--out",
                 str(tmp_path / "bad"), "--quiet"]) == EXIT_ERROR  # fmt: skip


def test_fidelity_rates_each_method_against_sampled_shapley_values(tmp_path: Path) -> None:
    """``--fidelity N`` at the last MBConv block (a nonlinear head): LIFT-CAM's coefficients follow the Shapley
    values of the maps, Grad-CAM's do not; a map-only method has no coefficients to rate."""
    photo = sample_photos()["coffee"]
    out = tmp_path / "fid"
    code = main(["explain", str(photo), "--layer", "features.16", "--method", "lift-cam", "grad-cam", "hires-cam",
                 "--fidelity", "16", "--grid", "--out", str(out), "--quiet"])  # fmt: skip
    assert code == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["methods"] == ["lift-cam", "grad-cam", "hires-cam"]  # the Shapley values are not a method here
    record = summary["images"][0]["explanations"][0]
    methods = record["methods"]
    assert methods["lift-cam"]["shapley_pearson"] > 0.9
    assert methods["grad-cam"]["shapley_pearson"] < methods["lift-cam"]["shapley_pearson"] - 0.3
    assert "shapley_pearson" not in methods["hires-cam"] and "shap" not in methods
    folder = Path(summary["images"][0]["output_dir"])
    assert (folder / record["grid"]).is_file() and not (folder / "shap.png").exists()


def test_several_layers_are_explained_each_and_fused(tmp_path: Path) -> None:
    photo = sample_photos()["coffee"]
    out = tmp_path / "layers"
    code = main(["explain", str(photo), "--layer", "features.15", "features.16", "--method", "lift-cam", "grad-cam",
                 "--grid", "--out", str(out), "--quiet"])  # fmt: skip
    assert code == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["layer"] == "features.15+features.16"
    entry = summary["images"][0]
    folder = Path(entry["output_dir"])
    lift = entry["explanations"][0]["methods"]["lift-cam"]
    assert list(lift["layers"]) == ["features.15", "features.16"]
    assert np.load(folder / lift["fused"]).shape == (224, 224)
    for layer in lift["layers"].values():  # each layer's own residual and raw map
        assert abs(layer["delta"]) <= 1e-4 * max(1.0, abs(entry["explanations"][0]["score"]))
        assert np.load(folder / layer["raw"]).shape == (7, 7)
    assert (folder / entry["explanations"][0]["grid"]).is_file()
    assert main(["explain", str(photo), "--layer", "features.15", "features.16", "--fidelity", "8",
                 "--out", str(tmp_path / "bad"), "--quiet"]) == EXIT_ERROR  # fmt: skip
