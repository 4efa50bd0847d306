"""Every bad input gets one ``liftcam:`` line with its reason; the good inputs of the same run are kept.

The corpus (``corpus.py``) is generated at test time: broken, hostile and awkward image files, bad
weights files. Each is tried through the reader, ``explain``, ``evaluate`` and ``fidelity``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image

from corpus import ACCEPTED, REFUSED, make_bad_weights, make_corpus
from liftcam.cli import EXIT_BAD_INPUT, EXIT_ERROR, main
from liftcam.data import sample_photos
from liftcam.data.images import ORIGINAL_SIZE, Preprocessing, load_image, original_size
from liftcam.errors import ImageError


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return make_corpus(tmp_path_factory.mktemp("corpus"), sample_photos()["coffee"])


def _clean(stderr: str) -> list[str]:
    """stderr's lines, after checking that each is liftcam's own and none is a warning (Python's warnings
    of a run become ``liftcam: warning:`` lines; bad input must not cause any)."""
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert "Traceback" not in stderr, stderr[-2000:]
    assert not [line for line in lines if not line.startswith("liftcam:")], stderr[-2000:]
    assert not [line for line in lines if line.startswith("liftcam: warning")], stderr[-2000:]
    return lines


# --- the reader -----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_reader_refuses_with_the_reason(corpus: dict[str, Path], name: str) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no raw Pillow or numpy warning gets through
        with pytest.raises(ImageError) as info:
            load_image(corpus[name])
    assert REFUSED[name] in info.value.reason, info.value.reason
    assert info.value.path == str(corpus[name])


@pytest.mark.parametrize("name", ACCEPTED)
def test_reader_accepts_awkward_images(corpus: dict[str, Path], name: str) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        image = load_image(corpus[name])
    assert image.mode == "RGB" and min(image.size) >= 1
    crop = Preprocessing().crop_image(image)
    assert crop.size == (224, 224)


def test_large_jpeg_is_decoded_reduced_and_other_formats_refused(tmp_path: Path) -> None:
    photo = Image.open(sample_photos()["coffee"]).convert("RGB").resize((800, 600))
    photo.save(tmp_path / "big.jpg", quality=95)
    photo.save(tmp_path / "big.png")
    reduced = load_image(tmp_path / "big.jpg", max_pixels=200_000)
    assert reduced.size == (400, 300) and reduced.info[ORIGINAL_SIZE] == (800, 600)
    assert original_size(reduced) == (800, 600)  # boxes are mapped through the file's size
    full = np.asarray(load_image(tmp_path / "big.jpg").resize((400, 300)), dtype=float)
    assert np.abs(np.asarray(reduced, dtype=float) - full).mean() < 4  # the same picture
    with pytest.raises(ImageError, match="too large: 800 x 600 pixels"):
        load_image(tmp_path / "big.png", max_pixels=200_000)
    assert load_image(tmp_path / "big.png").size == (800, 600)


def test_extreme_aspect_ratio_resizes_only_the_central_band(monkeypatch: pytest.MonkeyPatch) -> None:
    import liftcam.data.images as images

    rng = np.random.default_rng(0)
    for shape in [(40, 500, 3), (500, 41, 3)]:
        picture = Image.fromarray((rng.random(shape) * 255).astype(np.uint8))
        band = np.asarray(Preprocessing().crop_image(picture), dtype=int)
        monkeypatch.setattr(images, "_MAX_ASPECT", 10**9)  # the plain resize of the whole image
        whole = np.asarray(Preprocessing().crop_image(picture), dtype=int)
        monkeypatch.undo()
        assert band.shape == whole.shape and np.abs(band - whole).max() <= 1


# --- explain ------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_explain_one_bad_file_alone(
    corpus: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str
) -> None:
    code = main(["explain", str(corpus[name]), "--out", str(tmp_path / "out"), "--quiet"])
    lines = _clean(capsys.readouterr().err)
    if name == "folder.png":  # a folder is searched for images: none there
        assert code == EXIT_ERROR and lines == [f"liftcam: error: no image files found in {corpus[name]}"]
        return
    assert code == EXIT_BAD_INPUT
    skipped = [line for line in lines if line.startswith("liftcam: skipped")]
    assert len(skipped) == 1 and REFUSED[name] in skipped[0]
    failed = [line for line in lines if "file(s) failed" in line]
    assert len(failed) == 1 and REFUSED[name] in failed[0]
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["images"] == [] and REFUSED[name] in summary["failed"][0]["reason"]


def test_explain_corpus_between_good_photos_in_a_fresh_process(corpus: dict[str, Path], tmp_path: Path) -> None:
    """As a user runs it: a real process, raw warnings would reach stderr, a FIFO would hang it."""
    photos = sample_photos()
    files = [str(photos["chelsea"]), *(str(corpus[n]) for n in (*sorted(REFUSED), *ACCEPTED)), str(photos["coffee"])]
    out = tmp_path / "out"
    command = [sys.executable, "-m", "liftcam", "explain", *files, "--out", str(out), "--quiet", "--batch-size", "4"]
    command += ["--method", "lift-cam", "grad-cam", "--grid"]  # the grid's title names the file
    result = subprocess.run(command, capture_output=True, timeout=300, env={**os.environ, "PYTHONWARNINGS": "always"})
    stderr = os.fsdecode(result.stderr)
    lines = _clean(stderr)
    assert result.returncode == EXIT_BAD_INPUT, stderr[-2000:]
    summary = json.loads((out / "summary.json").read_text())
    explained = {Path(e["file"]).name for e in summary["images"]}
    assert explained == {"chelsea.png", "coffee.png", *ACCEPTED}
    reasons = {Path(f["file"]).name: f["reason"] for f in summary["failed"]}
    assert set(reasons) == set(REFUSED) - {"folder.png"}  # the empty folder holds no files
    for name, reason in reasons.items():
        assert REFUSED[name] in reason
        assert any(line.startswith("liftcam: skipped") and name in line and reason in line for line in lines)
    # the non-UTF-8 name is stored losslessly: JSON escapes it, and it names the real file
    odd = next(e for e in summary["images"] if Path(e["file"]).name == "caf\udce9.png")
    assert os.fsencode(odd["file"]).endswith(b"caf\xe9.png") and Path(odd["file"]).is_file()
    assert (Path(odd["output_dir"]) / "lift-cam.png").is_file() and (Path(odd["output_dir"]) / "grid.png").is_file()


# --- evaluate and fidelity ------------------------------------------------------------------------


def _folder_with_bad_files(corpus: dict[str, Path], folder: Path) -> Path:
    folder.mkdir()
    shutil.copy(sample_photos()["coffee"], folder / "coffee.png")
    for name in ("zero.png", "truncated.png", "text.png", "bomb.png", "nan.tiff"):
        shutil.copy(corpus[name], folder / name)
    shutil.copy(corpus["caf\udce9.png"], folder / "caf\udce9.png")
    (folder / "bad\udcff.png").write_bytes(b"not an image, and a name that is not UTF-8")
    return folder


def test_evaluate_skips_bad_files_with_reasons(
    corpus: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = _folder_with_bad_files(corpus, tmp_path / "data")
    out = tmp_path / "run"
    args = ["evaluate", str(data), "--out", str(out), "--methods", "grad-cam", "--metrics", "average_drop", "--quiet"]
    assert main(args) == EXIT_BAD_INPUT
    lines = _clean(capsys.readouterr().err)
    records = [json.loads(line) for line in (out / "records.jsonl").read_text().splitlines()]
    done = {Path(r["image"]).name for r in records if r["method"] == "grad-cam"}
    assert done == {"coffee.png", "caf\udce9.png"}
    failed = {Path(r["image"]).name: r["reason"] for r in records if r["method"] == "error"}
    assert set(failed) == {"zero.png", "truncated.png", "text.png", "bomb.png", "nan.tiff", "bad\udcff.png"}
    assert all(REFUSED.get(name, "not an image") in reason for name, reason in failed.items())
    assert any("6 file(s) failed" in line and "nan.tiff (contains NaN" in line for line in lines)
    summary_md = (out / "summary.md").read_bytes()
    assert b"caf\xe9.png" not in summary_md  # good files are not listed; failed ones are, with reasons
    assert b"zero.png (empty file)" in summary_md and b"bad\xff.png (not an image" in summary_md
    assert b"bad\xff.png" in (out / "report.html").read_bytes()
    assert main(["report", str(out)]) == 0


def test_fidelity_skips_bad_files_and_stores_odd_names_losslessly(
    corpus: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    files = [str(sample_photos()["coffee"]), str(corpus["fifo.png"]), str(corpus["bomb.png"])]
    files.append(str(corpus["caf\udce9.png"]))
    out = tmp_path / "fid"
    args = ["fidelity", *files, "--methods", "lift-cam", "grad-cam", "--out", str(out), "--quiet"]
    assert main(args) == EXIT_BAD_INPUT
    captured = capsys.readouterr()
    lines = _clean(captured.err)
    assert any("2 file(s) failed" in line and "(not a regular file (a FIFO))" in line for line in lines)
    table = (out / "fidelity.csv").read_bytes()
    assert b"caf\xe9.png,lift-cam" in table and b"coffee.png,grad-cam" in table
    records = [json.loads(line) for line in (out / "records.jsonl").read_text().splitlines()]
    assert {os.fsencode(r["image"]) for r in records if r["method"] == "lift-cam"} == {
        os.fsencode(files[0]),
        os.fsencode(files[3]),
    }


# --- weights --------------------------------------------------------------------------------------


@pytest.mark.parametrize("model", ["resnet18", "efficientnet-lite0"])
def test_bad_weights_files_are_refused_in_one_line(
    model: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from liftcam.models import load_model

    net = torchvision.models.resnet18() if model == "resnet18" else load_model(model).model
    weights = make_bad_weights(tmp_path / "w", net)
    photo = str(sample_photos()["coffee"])
    expected = {
        "payload": "refused: it holds Python objects",
        "fc10": "has shape (10, ",
        "conv3": "has shape (",
    }
    for kind, path in weights.items():
        code = main(["explain", photo, "--model", model, "--weights", str(path), "--out", str(tmp_path / "o")])
        lines = _clean(capsys.readouterr().err)
        assert code == EXIT_ERROR and len(lines) == 1 and expected[kind] in lines[0], lines
        assert "the model's is" in lines[0] or kind == "payload"
    assert not Path("/tmp/liftcam-pwned").exists()


def test_weights_with_nan_are_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    state = torchvision.models.resnet18().state_dict()
    state["fc.bias"] = torch.full_like(state["fc.bias"], float("nan"))
    torch.save(state, tmp_path / "nan.pth")
    args = ["fidelity", str(sample_photos()["coffee"]), "--model", "resnet18", "--weights", str(tmp_path / "nan.pth")]
    assert main([*args, "--methods", "grad-cam", "--out", str(tmp_path / "f"), "--quiet"]) == EXIT_ERROR
    lines = _clean(capsys.readouterr().err)
    assert len(lines) == 1 and "tensor fc.bias contains NaN" in lines[0]
    assert not (tmp_path / "f" / "records.jsonl").exists()
