"""Bad parameters and bad side files: one ``liftcam: error:`` line naming what is wrong, exit 2, no work done."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from liftcam.cli import EXIT_ERROR, main
from liftcam.data import sample_photos
from liftcam.errors import LiftCamError
from liftcam.metrics import get_metric


def _one_error(stderr: str) -> str:
    assert "Traceback" not in stderr, stderr[-2000:]
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("liftcam: error: "), lines
    return lines[0]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["evaluate", "samples", "--limit", "-1"], "argument --limit: must be at least 1, not -1"),
        (["evaluate", "samples", "--limit", "x"], "argument --limit: 'x' is not a whole number"),
        (["evaluate", "samples", "--threads", "-1"], "argument --threads: must be at least 0"),
        (["evaluate", "samples", "--blur-kernel", "0"], "argument --blur-kernel: must be at least 1"),
        (["evaluate", "samples", "--blur-kernel", "4"], "argument --blur-kernel: must be odd"),
        (["evaluate", "samples", "--blur-sigma", "0"], "argument --blur-sigma: must be a finite number > 0"),
        (["evaluate", "samples", "--blur-sigma", "nan"], "argument --blur-sigma: must be a finite number > 0"),
        (["evaluate", "samples", "--tolerance", "-2"], "argument --tolerance: must be a finite number >= 0"),
        (["evaluate", "samples", "--fill", "inf"], "argument --fill: must be a finite number"),
        (["evaluate", "samples", "--batch-size", "0"], "argument --batch-size: must be at least 1"),
        (["explain", "--threads", "-1"], "argument --threads: must be at least 0"),
        (["explain", "--samples", "1"], "argument --samples: must be at least 2"),
        (["explain", "--max-pixels", "0"], "argument --max-pixels: must be at least 1"),
        (["fidelity", "--threads", "-1"], "argument --threads: must be at least 0"),
        (["fidelity", "--methods", "hires-cam"], "hires-cam define a map, not channel coefficients"),
        (["fidelity", "--methods", "lift-cam", "layer-cam"], "methods with coefficients: lift-cam, cam"),
        (["fidelity", "--shapley-from", "/proc"], "--shapley-from /proc: no fidelity run there"),
        (["explain", "--bogus"], "unrecognized arguments: --bogus"),
    ],
)
def test_bad_parameter_is_one_line(
    args: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    assert main([*args, "--out", str(out)]) == EXIT_ERROR
    assert message in _one_error(capsys.readouterr().err)
    assert not out.exists() or not any(out.iterdir())  # nothing written


@pytest.mark.parametrize("command", ["explain", "fidelity", "evaluate"])
def test_bad_output_folders(command: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    existing = tmp_path / "file.txt"
    existing.write_text("keep me")
    prefix = [command, "samples"] if command == "evaluate" else [command, str(sample_photos()["coffee"])]
    cases = [
        (existing, "exists and is not a folder"),
        (existing / "sub", "is a file, not a folder"),
        (Path("/proc/liftcam-out"), "is in a system folder"),
        (Path("/sys/liftcam-out"), "is in a system folder"),
    ]
    for out, message in cases:
        assert main([*prefix, "--out", str(out), "--quiet"]) == EXIT_ERROR
        assert f"--out {out}: " in (line := _one_error(capsys.readouterr().err)) and message in line
    assert existing.read_text() == "keep me"


def test_report_refuses_what_is_not_a_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["report", str(tmp_path / "missing")]) == EXIT_ERROR
    assert "not a folder" in _one_error(capsys.readouterr().err)
    (tmp_path / "settings.json").write_text("{broken")
    assert main(["report", str(tmp_path)]) == EXIT_ERROR
    assert "settings.json: broken settings file" in _one_error(capsys.readouterr().err)
    (tmp_path / "settings.json").write_text(json.dumps({"methods": ["grad-cam"]}))
    assert main(["report", str(tmp_path)]) == EXIT_ERROR
    assert "missing or malformed: data" in _one_error(capsys.readouterr().err)


def _boxes(tmp_path: Path) -> dict[str, tuple[Path, str]]:
    files = {
        "three": ("image,class,x0,y0,x1,y1\ncoffee.png,967,1,2,3\n", "line 2: a box needs 4 coordinates"),
        "words": ("image,class,x0,y0,x1,y1\ncoffee.png,967,a,b,c,d\n", "line 2: box coordinates 'a b c d'"),
        "inverted": ("image,class,x0,y0,x1,y1\ncoffee.png,967,50,2,10,30\n", "has no area"),
        "loc": ("ImageId,PredictionString\ncoffee,n07920052 1 2 3\n", "line 2: PredictionString must repeat"),
        "loc_words": ("ImageId,PredictionString\ncoffee,967 1 2 x 4\n", "are not all numbers"),
        "header": ("a,b,c\n1,2,3\n", "expected the header"),
    }
    out = {}
    for name, (text, message) in files.items():
        (tmp_path / f"{name}.csv").write_text(text)
        out[name] = (tmp_path / f"{name}.csv", message)
    (tmp_path / "binary.csv").write_bytes(bytes(range(256)) * 4)
    out["binary"] = (tmp_path / "binary.csv", "not a text file")
    (tmp_path / "nul.csv").write_bytes(b"image,class\x00,x0\n")
    out["nul"] = (tmp_path / "nul.csv", "not a text file (binary data)")
    out["missing"] = (tmp_path / "missing.csv", "boxes file " + str(tmp_path / "missing.csv") + ": no such file")
    return out


def test_bad_boxes_and_synsets_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for name, (path, message) in _boxes(tmp_path).items():
        args = ["evaluate", "samples", "--boxes", str(path), "--out", str(tmp_path / f"run_{name}"), "--quiet"]
        assert main(args) == EXIT_ERROR, name
        assert message in _one_error(capsys.readouterr().err), name
        assert not (tmp_path / f"run_{name}" / "records.jsonl").exists()
    args = ["evaluate", "samples", "--synsets", str(tmp_path / "nope.txt"), "--out", str(tmp_path / "r"), "--quiet"]
    assert main(args) == EXIT_ERROR
    assert "synset list" in (line := _one_error(capsys.readouterr().err)) and "no such file" in line


def test_get_metric_refuses_unknown_parameters() -> None:
    assert get_metric("deletion", step=0.1).step == 0.1  # type: ignore[attr-defined]
    with pytest.raises(LiftCamError, match="metric 'deletion' has no parameter stpe; its parameters: step, fill"):
        get_metric("deletion", stpe=0.1)
    with pytest.raises(LiftCamError, match="unknown metric"):
        get_metric("deletoin")


def test_methods_with_a_game_honour_the_reference(tiny) -> None:  # type: ignore[no-untyped-def]
    """Ablation-CAM and LIME-CAM replace absent channels by the reference, as Shapley values do."""
    from liftcam import Explainer

    explainer = Explainer(tiny, "body")
    x = torch.randn(3, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    captured = explainer.capture(x)
    a = captured.activations
    reference = a.mean(dim=0, keepdim=True).expand_as(a)
    exp = explainer.explain_captured(captured, ["ablation-cam", "lime-cam"], targets=[0, 1, 2], reference="mean")
    with torch.no_grad():
        for b in range(3):
            s = float(tiny.fc(tiny.pool(tiny.act(a[b : b + 1])).flatten(1))[0, b])
            for k in range(a.shape[1]):
                ablated = a[b : b + 1].clone()
                ablated[0, k] = reference[b, k]
                s_k = float(tiny.fc(tiny.pool(tiny.act(ablated)).flatten(1))[0, b])
                assert float(exp["ablation-cam"].weights[b, k]) == pytest.approx((s - s_k) / s, rel=1e-4, abs=1e-6)
    # the reference equal to A: every coalition is the same, so every coefficient is zero
    same = explainer.explain_captured(captured, ["ablation-cam", "lime-cam"], targets=[0, 1, 2], reference=a)
    assert torch.all(same["ablation-cam"].weights == 0) and torch.all(same["lime-cam"].weights == 0)
    zero = explainer.explain_captured(captured, ["lime-cam"], targets=[0, 1, 2])
    assert not torch.allclose(zero["lime-cam"].weights, exp["lime-cam"].weights)


def test_report_skips_and_counts_junk_records(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    args = ["evaluate", "samples", "--limit", "2", "--methods", "grad-cam", "--metrics", "average_drop"]
    assert main([*args, "--out", str(out), "--quiet"]) == 0
    summary = (out / "summary.csv").read_bytes()
    with (out / "records.jsonl").open("a") as f:
        f.write('{"junk": 1}\nnot json at all\n{"image": "x.png", "method": "grad-cam", "average_drop": "high"}\n')
    capsys.readouterr()
    assert main(["report", str(out)]) == 0
    err = capsys.readouterr().err
    assert "Traceback" not in err and "liftcam: warning: 2 unreadable record line(s) skipped" in err
    assert "2 record line(s) that could not be read were skipped" in (out / "summary.md").read_text()
    # a record with a non-numeric value adds nothing to the means and counts
    assert summary == (out / "summary.csv").read_bytes()


def test_labels_out_of_range_are_skipped_with_the_reason(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import shutil

    data = tmp_path / "data"
    for folder, photo in (("967", "coffee"), ("5000", "chelsea")):
        (data / folder).mkdir(parents=True)
        shutil.copy(sample_photos()[photo], data / folder / f"{photo}.png")
    args = ["evaluate", str(data), "--target", "label", "--methods", "grad-cam", "--metrics", "average_drop"]
    assert main([*args, "--out", str(tmp_path / "run"), "--quiet"]) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert "chelsea.png (label 5000 is out of range for a model with 1000 classes)" in err
    records = [json.loads(line) for line in (tmp_path / "run" / "records.jsonl").read_text().splitlines()]
    assert [r["target"] for r in records if r["method"] == "grad-cam"] == [967]


def test_a_large_jpeg_is_explained_reduced_with_a_note(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from PIL import Image

    Image.open(sample_photos()["coffee"]).convert("RGB").resize((1200, 800)).save(tmp_path / "big.jpg")
    args = ["explain", str(tmp_path / "big.jpg"), "--max-pixels", "300000", "--out", str(tmp_path / "o"), "--quiet"]
    assert main(args) == 0
    err = capsys.readouterr().err
    assert "liftcam: note: " in err and "1200 x 800 pixels exceed --max-pixels: decoded at 600 x 400" in err
    summary = json.loads((tmp_path / "o" / "summary.json").read_text())
    assert summary["images"][0]["top5"][0]["name"] == "espresso"


def test_a_run_that_failed_before_its_first_record_does_not_block_the_corrected_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    photo = str(sample_photos()["coffee"])
    out = str(tmp_path / "fid")
    args = ["fidelity", photo, "--methods", "lift-cam", "--out", out, "--quiet"]
    assert main([*args, "--estimator", "exact"]) == EXIT_ERROR  # K = 1280 cannot be enumerated
    assert "2^1280 coalitions" in _one_error(capsys.readouterr().err)
    assert main(args) == 0  # other settings, accepted: the folder held no record
    settings = json.loads((tmp_path / "fid" / "settings.json").read_text())
    assert settings["estimator"] == "auto"
    capsys.readouterr()
    assert main([*args, "--estimator", "permutation"]) == EXIT_ERROR  # now it holds records
    assert "differs in: estimator" in _one_error(capsys.readouterr().err)


def test_an_empty_output_path_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["explain", str(sample_photos()["coffee"]), "--out", "", "--quiet"]) == EXIT_ERROR
    assert "--out: an empty path" in _one_error(capsys.readouterr().err)
