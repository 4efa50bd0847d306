"""Shapley-fidelity metrics and the resumable ``liftcam fidelity`` run."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from scipy import stats

from liftcam.data import Preprocessing
from liftcam.errors import LiftCamError
from liftcam.metrics.shapley_fidelity import cosine, fidelity, sign_agreement, top_k_overlap
from liftcam.metrics.similarity import pearson, spearman
from liftcam.models import LoadedModel
from liftcam.runs.fidelity import REFERENCE, run_fidelity, shapley_cache


def test_correlations_match_scipy() -> None:
    rng = np.random.default_rng(0)
    a = rng.normal(size=50)
    b = a + rng.normal(size=50)
    b[:5] = b[5]  # ties
    ta, tb = torch.from_numpy(a), torch.from_numpy(b)
    assert abs(pearson(ta, tb) - stats.pearsonr(a, b).statistic) < 1e-12
    assert abs(spearman(ta, tb) - stats.spearmanr(a, b).statistic) < 1e-12
    assert abs(cosine(ta, tb) - float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))) < 1e-12
    assert np.isnan(pearson(torch.ones(5), ta[:5]))


def test_sign_agreement_and_top_k() -> None:
    phi = torch.tensor([3.0, -1.0, 0.0, 0.0, 2.0])
    alpha = torch.tensor([1.0, 1.0, 1e-9, 0.0, 5.0])  # 1e-9 is float noise next to 5: counted as zero
    assert sign_agreement(alpha, phi) == 0.8
    assert top_k_overlap(torch.arange(20.0), torch.arange(20.0).flip(0), k=10) == 0.0
    assert top_k_overlap(torch.arange(20.0), torch.arange(20.0) * 2, k=10) == 1.0
    a = torch.rand(5, 4, 4)
    scores = fidelity(phi, phi, a, (8, 8))
    assert all(abs(v - 1.0) < 1e-9 for v in scores.values())


def _tiny_loaded(tiny) -> LoadedModel:  # type: ignore[no-untyped-def]
    return LoadedModel("tiny", tiny, "act", Preprocessing(resize=12, crop=10), ["a", "b", "c"], "random")


def _images(folder: Path, n: int) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    paths = []
    for i in range(n):
        path = folder / f"img{i}.png"
        Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(path)
        paths.append(path)
    return paths


METHODS = ["lift-cam", "grad-cam", "ablation-cam", "cam"]


def test_run_writes_records_and_reports(tmp_path: Path, tiny) -> None:  # type: ignore[no-untyped-def]
    files = _images(tmp_path / "in", 3)
    bad = tmp_path / "in" / "bad.png"
    bad.write_text("no")
    out = tmp_path / "run"
    summary = run_fidelity(_tiny_loaded(tiny), [*files, bad], out, methods=METHODS, progress=False)
    records = [json.loads(line) for line in (out / "records.jsonl").read_text().splitlines()]
    assert len([r for r in records if r["method"] == REFERENCE]) == 3
    assert {(r["image"], r["method"]) for r in records if r["method"] in METHODS} == {
        (str(f), m) for f in files for m in METHODS
    }
    assert [r["image"] for r in summary["failed"]] == [str(bad)]
    # on a linear head LIFT-CAM's coefficients are the Shapley values, and Ablation-CAM's are proportional
    for method in ("lift-cam", "ablation-cam", "cam"):
        assert summary["methods"][method]["images"] == 3
    assert summary["methods"]["lift-cam"]["pearson"][0] > 1 - 1e-6
    assert summary["methods"]["ablation-cam"]["pearson"][0] > 1 - 1e-6
    table = (out / "summary.md").read_text()
    assert "| lift-cam | 3 | **1.000" in table
    assert (out / "fidelity.png").stat().st_size > 1000
    assert len((out / "fidelity.csv").read_text().splitlines()) == 1 + 3 * len(METHODS)


def test_resume_recomputes_only_what_is_missing(tmp_path: Path, tiny) -> None:  # type: ignore[no-untyped-def]
    files = _images(tmp_path / "in", 3)
    out = tmp_path / "run"
    loaded = _tiny_loaded(tiny)
    run_fidelity(loaded, files, out, methods=METHODS, progress=False)
    path = out / "records.jsonl"
    full = path.read_text().splitlines()
    # drop the last two records and leave half a line, as a killed process would
    kept = full[:-2]
    path.write_text("\n".join(kept) + "\n" + full[-2][: len(full[-2]) // 2])
    run_fidelity(loaded, files, out, methods=METHODS, progress=False)
    again = path.read_text().splitlines()
    assert len(again) == len(full)
    assert again[: len(kept)] == kept  # nothing recomputed
    key = lambda line: (json.loads(line)["image"], json.loads(line)["method"])  # noqa: E731
    assert sorted(map(key, again)) == sorted(map(key, full))  # nothing duplicated or lost
    run_fidelity(loaded, files, out, methods=METHODS, progress=False)
    assert path.read_text().splitlines() == again


def test_other_settings_are_refused(tmp_path: Path, tiny) -> None:  # type: ignore[no-untyped-def]
    files = _images(tmp_path / "in", 1)
    out = tmp_path / "run"
    run_fidelity(_tiny_loaded(tiny), files, out, methods=["lift-cam"], progress=False)
    with pytest.raises(LiftCamError, match="differs in: methods"):
        run_fidelity(_tiny_loaded(tiny), files, out, methods=["grad-cam"], progress=False)


# a fidelity run of the tiny model in a process of its own (argv[1]: the output folder), which the
# script's BODY may change before it runs
PREAMBLE = textwrap.dedent(
    """
    import os, signal, sys, time, torch
    sys.path.insert(0, {tests!r})
    from conftest import TinyCnn
    from liftcam.data import Preprocessing
    from liftcam.models import LoadedModel
    from liftcam.runs import fidelity as run
    from liftcam.runs.records import RecordStore
    from pathlib import Path
    torch.manual_seed(0)
    loaded = LoadedModel("tiny", TinyCnn().eval(), "act", Preprocessing(resize=12, crop=10), ["a", "b", "c"], "random")
    """
)
RUN = textwrap.dedent(
    """
    files = sorted(Path({folder!r}).glob("*.png"))
    run.run_fidelity(loaded, files, Path(sys.argv[1]), methods={methods!r}, progress=False)
    """
)
SLOW = textwrap.dedent(
    """
    original = run._explain_image
    def slow(*args, **kwargs):
        time.sleep(0.3)
        return original(*args, **kwargs)
    run._explain_image = slow
    """
)


def _script(path: Path, folder: Path, body: str) -> Path:
    values = {"tests": str(Path(__file__).parent), "folder": str(folder), "methods": METHODS}
    path.write_text(PREAMBLE.format(**values) + body + RUN.format(**values))
    return path


def test_killed_run_resumes_to_the_uninterrupted_result(tmp_path: Path) -> None:
    _images(tmp_path / "in", 8)
    script = _script(tmp_path / "run.py", tmp_path / "in", SLOW)
    killed, clean = tmp_path / "killed", tmp_path / "clean"
    process = subprocess.Popen([sys.executable, str(script), str(killed)])
    records = killed / "records.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and (not records.exists() or len(records.read_text().splitlines()) < 7):
        time.sleep(0.05)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    partial = len(records.read_text().splitlines())
    assert 0 < partial < 8 * (len(METHODS) + 1)
    subprocess.run([sys.executable, str(script), str(killed)], check=True)
    subprocess.run([sys.executable, str(script), str(clean)], check=True)

    def table(folder: Path) -> dict[tuple[str, str], dict[str, object]]:
        rows = [json.loads(line) for line in (folder / "records.jsonl").read_text().splitlines()]
        keys = [(Path(r["image"]).name, r["method"]) for r in rows]
        assert len(keys) == len(set(keys)), "duplicated records"
        return {
            k: {m: v for m, v in r.items() if m not in ("ms", "body_ms", "image")}
            for k, r in zip(keys, rows, strict=True)
        }

    assert table(killed) == table(clean)

    def csv_without_timing(folder: Path) -> list[list[str]]:
        lines = (folder / "fidelity.csv").read_text().splitlines()
        return sorted([Path(row[0]).name, *row[1:-1]] for row in (line.split(",") for line in lines[1:]))

    assert csv_without_timing(killed) == csv_without_timing(clean)


DIE_AFTER_CACHE = textwrap.dedent(
    """
    append = RecordStore.append
    def append_or_die(self, record):
        # the second image's Shapley values are cached: die before their record is written
        if record["method"] == run.REFERENCE and len(list((self.directory / "shapley").glob("*.npz"))) == 2:
            os.kill(os.getpid(), signal.SIGKILL)
        append(self, record)
    if sys.argv[2] == "die":
        RecordStore.append = append_or_die
    """
)


def test_kill_between_the_cache_and_its_record_leaves_a_consistent_folder(tmp_path: Path) -> None:
    _images(tmp_path / "in", 3)
    script = _script(tmp_path / "run.py", tmp_path / "in", DIE_AFTER_CACHE)
    killed, clean = tmp_path / "killed", tmp_path / "clean"
    died = subprocess.run([sys.executable, str(script), str(killed), "die"])
    assert died.returncode == -signal.SIGKILL  # a real SIGKILL, right after the cache file was written
    assert len(list((killed / "shapley").glob("*.npz"))) == 2
    references = [r for r in map(json.loads, (killed / "records.jsonl").read_text().splitlines())]
    assert len([r for r in references if r["method"] == REFERENCE]) == 1  # the second image's record is missing
    subprocess.run([sys.executable, str(script), str(killed), "live"], check=True)
    subprocess.run([sys.executable, str(script), str(clean), "live"], check=True)
    rows = [json.loads(line) for line in (killed / "records.jsonl").read_text().splitlines()]
    assert len([r for r in rows if r["method"] == REFERENCE]) == 3  # the record came back from the cache
    # bit-identical to an uninterrupted run, timings apart (they are the last line of the summary)
    assert (killed / "fidelity.csv").read_text().count("\n") == 1 + 3 * len(METHODS)

    def without_timings(folder: Path) -> tuple[list[str], str]:
        table = [line.rsplit(",", 1)[0] for line in (folder / "fidelity.csv").read_text().splitlines()]
        summary = (folder / "summary.md").read_text().splitlines()
        assert summary[-1].startswith("Time per image (ms): ")
        return table, "\n".join(summary[:-1])

    assert without_timings(killed) == without_timings(clean)


def test_a_junk_line_in_the_middle_loses_no_record(tmp_path: Path) -> None:
    from liftcam.runs.records import RecordStore

    store = RecordStore(tmp_path, {"a": 1}, ("image", "method"))
    for i in range(3):
        store.append({"image": f"{i}.png", "method": "m", "value": i})
    lines = (tmp_path / "records.jsonl").read_text().splitlines()
    junk = [lines[0], "this is not json", '{"no": "method"}', "[1, 2]", *lines[1:]]
    (tmp_path / "records.jsonl").write_text("\n".join(junk) + "\n" + '{"image": "3.png", "meth')
    again = RecordStore(tmp_path, {"a": 1}, ("image", "method"))
    assert [r["value"] for r in again.records] == [0, 1, 2] and again.junk == 3
    assert all(again.done(image=f"{i}.png", method="m") for i in range(3))
    text = (tmp_path / "records.jsonl").read_text()
    assert text.endswith(lines[-1] + "\n") and "this is not json" in text  # only the cut-off line is dropped
    records, junk = RecordStore.read_all(tmp_path)
    assert len(records) == 3 and junk == 3


def test_mean_reference_is_the_mean_over_the_run_images(tmp_path: Path, tiny) -> None:  # type: ignore[no-untyped-def]
    """Per image, a batch mean would be the image itself (every game trivial): the run's mean is used."""
    from liftcam import Explainer

    files = _images(tmp_path / "in", 3)
    loaded = _tiny_loaded(tiny)
    out = tmp_path / "run"
    summary = run_fidelity(loaded, files, out, methods=["lift-cam", "ablation-cam"], reference="mean", progress=False)
    explainer = Explainer(tiny, "act")
    activations = [
        explainer.capture(loaded.preprocessing(Image.open(f).convert("RGB"))[None]).activations for f in files
    ]
    mean = torch.cat(activations).double().mean(dim=0).float()
    with np.load(out / "reference_mean.npz") as saved:
        torch.testing.assert_close(torch.from_numpy(saved["mean"]), mean)
    records = [json.loads(line) for line in (out / "records.jsonl").read_text().splitlines()]
    gaps = [r["efficiency_gap"] for r in records if r["method"] == REFERENCE]
    assert len(gaps) == 3 and max(abs(g) for g in gaps) < 1e-5
    # on the linear head LIFT-CAM under the same reference gives the exact Shapley values
    assert summary["methods"]["lift-cam"]["pearson"][0] > 1 - 1e-6
    assert summary["methods"]["ablation-cam"]["images"] == 3
    with pytest.raises(LiftCamError, match="over other images"):
        run_fidelity(loaded, files[:2], out, methods=["lift-cam", "ablation-cam"], reference="mean", progress=False)


def test_shapley_from_reuses_another_runs_reference_values(
    tmp_path: Path, tiny, monkeypatch: pytest.MonkeyPatch
) -> None:  # type: ignore[no-untyped-def]
    """Adding a method to a finished study: the reference values are copied, not recomputed, and every
    record is the one a run from scratch writes; an image the source lacks is computed."""
    from liftcam.runs import fidelity as module

    files = _images(tmp_path / "in", 3)
    loaded = _tiny_loaded(tiny)
    source = tmp_path / "first"
    run_fidelity(loaded, files[:2], source, methods=["lift-cam", "grad-cam"], samples=8, progress=False)
    scratch = tmp_path / "scratch"
    run_fidelity(loaded, files, scratch, methods=["ablation-cam"], samples=8, progress=False)

    computed: list[int] = []
    original = module.shapley_values

    def counted(*args, **kwargs):  # type: ignore[no-untyped-def]
        computed.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(module, "shapley_values", counted)
    # the same photos under other paths (another machine, another folder): matched by content
    moved = tmp_path / "moved"
    moved.mkdir()
    copies = [Path(shutil.copy(f, moved / f.name)) for f in files]
    out = tmp_path / "added"
    run_fidelity(loaded, copies, out, methods=["ablation-cam"], samples=8, progress=False, shapley_from=source)
    assert len(computed) == 1  # the third image only

    def values(folder: Path) -> list[dict[str, object]]:
        records = [json.loads(line) for line in (folder / "records.jsonl").read_text().splitlines()]
        return sorted(({k: v for k, v in r.items() if k not in ("ms", "body_ms")} for r in records), key=str)

    renamed = [{**r, "image": r["image"].replace(str(tmp_path / "in"), str(moved))} for r in values(scratch)]
    assert values(out) == sorted(renamed, key=str)  # the records a run from scratch writes, under this run's paths
    for f, copy in zip(files, copies, strict=True):
        with (
            np.load(shapley_cache(scratch / "shapley", str(f))) as theirs,
            np.load(shapley_cache(out / "shapley", str(copy))) as mine,
        ):
            np.testing.assert_array_equal(mine["values"], theirs["values"])
            assert json.loads(str(mine["record"]))["image"] == str(copy)


def _not_called(*args, **kwargs):  # type: ignore[no-untyped-def]
    raise AssertionError("reference Shapley values recomputed")


def test_shapley_from_refuses_values_of_other_settings(
    tmp_path: Path, tiny: torch.nn.Module, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Refused: values of other settings (but where they were computed); accepted: those of another machine."""
    from liftcam.runs import fidelity as module

    files = _images(tmp_path / "in", 2)
    loaded = _tiny_loaded(tiny)
    source = tmp_path / "first"
    run_fidelity(loaded, files, source, methods=["lift-cam"], samples=8, progress=False)
    out = tmp_path / "added"
    cases = [
        ({"samples": 16, "shapley_from": source}, "differs in: samples"),
        ({"samples": 8, "seed": 1, "shapley_from": source}, "differs in: seed"),
        ({"samples": 8, "shapley_from": tmp_path / "in"}, "no fidelity run there"),
        ({"samples": 8, "shapley_from": out}, "this run's own folder"),
    ]
    for options, message in cases:
        with pytest.raises(LiftCamError, match=message):
            run_fidelity(loaded, files, out, methods=["grad-cam"], progress=False, **options)  # type: ignore[arg-type]
        assert not out.exists() or not any(out.iterdir())  # refused before anything is written
    # computed elsewhere (another device, another thread count): reused, as across machines
    stored = json.loads((source / "settings.json").read_text())
    assert (stored["device"], stored["threads"]) == ("cpu", torch.get_num_threads())
    (source / "settings.json").write_text(json.dumps({**stored, "device": "cuda", "threads": None}))
    with monkeypatch.context() as patch:
        patch.setattr(module, "shapley_values", _not_called)
        run_fidelity(loaded, files, out, methods=["grad-cam"], samples=8, progress=False, shapley_from=source)
    mean = tmp_path / "mean"
    run_fidelity(loaded, files[:1], mean, methods=["lift-cam"], reference="mean", progress=False)
    with pytest.raises(LiftCamError, match="mean reference was taken over other images"):
        run_fidelity(loaded, files, out, methods=["grad-cam"], reference="mean", progress=False, shapley_from=mean)
