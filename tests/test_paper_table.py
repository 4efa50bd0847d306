"""benchmarks/paper_table.py's bookkeeping: what a costly cell spanning sessions relies on."""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "paper_table.py"


@pytest.fixture(scope="module")
def paper_table() -> ModuleType:
    spec = importlib.util.spec_from_file_location("paper_table", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def write_run(folder: Path, photos: list[str], method: str, batch_size: int = 8) -> None:
    folder.mkdir(parents=True)
    (folder / "settings.json").write_text(json.dumps({"model": "m", "batch_size": batch_size}))
    records: list[dict[str, Any]] = [
        {"image": f"/photos/{p}", "method": method, "index": i, "average_drop": 10.0 * (i + 1)}
        for i, p in enumerate(photos)
    ]
    (folder / "records.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))


def test_command_names_batch_size_and_device_only_where_not_the_defaults(paper_table: ModuleType) -> None:
    from liftcam.runs import DEFAULT_BATCH_SIZE

    base = {"model": "efficientnet-lite0", "layer": "features.16", "step": 0.05, "threads": 2, "out": Path("o")}
    plain = paper_table.command("evaluate", ["is-cam"], **base)
    assert "--batch-size" not in plain and "--device" not in plain
    assert plain[plain.index("--metrics") + 1] == "all"
    one = paper_table.command("evaluate", ["is-cam"], **base, batch_size=1, device="cuda", metrics=["road"])
    assert one[one.index("--batch-size") + 1] == "1" and one[one.index("--device") + 1] == "cuda"
    assert one[one.index("--metrics") + 1 : one.index("--step")] == ["road"]
    same = paper_table.command("evaluate", ["is-cam"], **base, batch_size=DEFAULT_BATCH_SIZE)
    assert same == plain
    # fidelity has no batch size or metrics of its own
    assert "--batch-size" not in paper_table.command("fidelity", ["lift-cam"], **base, batch_size=1)


def test_a_started_run_keeps_its_stored_batch_size(paper_table: ModuleType, tmp_path: Path) -> None:
    assert paper_table.started_batch_size(tmp_path / "new", 1) == 1
    write_run(tmp_path / "started", ["a.jpg"], "is-cam", batch_size=1)
    assert paper_table.started_batch_size(tmp_path / "started", 8) == 1


def test_a_single_methods_run_joins_the_tables_only_with_every_photo(
    paper_table: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    layer = tmp_path / "lite2" / "block"
    write_run(layer / "evaluate", ["a.jpg", "b.jpg", "c.jpg"], "lift-cam")
    write_run(layer / "evaluate-is-cam", ["a.jpg", "b.jpg"], "is-cam", batch_size=1)
    settings, records = paper_table.read_runs(layer, "evaluate")
    assert settings is not None and settings["batch_size"] == 8
    assert {r["method"] for r in records} == {"lift-cam"}
    assert "evaluate-is-cam: 2 of 3 photos, left out of the tables until it has them all" in capsys.readouterr().out

    with (layer / "evaluate-is-cam" / "records.jsonl").open("a") as f:
        f.write(json.dumps({"image": "/elsewhere/c.jpg", "method": "is-cam", "index": 2, "average_drop": 1.0}) + "\n")
    _, records = paper_table.read_runs(layer, "evaluate")
    assert sorted(r["method"] for r in records) == ["is-cam"] * 3 + ["lift-cam"] * 3
    assert "left out" not in capsys.readouterr().out


def test_a_fidelity_run_counts_a_photo_only_once_its_methods_explained_it(
    paper_table: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A fidelity run stores a photo's reference Shapley values before its methods' records: an interrupted
    run holds a reference for a photo not yet explained, which must not let the run join the tables."""
    layer = tmp_path / "lite1" / "final"
    write_run(layer / "fidelity", ["a.jpg", "b.jpg"], "lift-cam")
    run = layer / "fidelity-ss-cam"
    write_run(run, ["a.jpg"], "ss-cam", batch_size=1)
    (run / "settings.json").write_text(json.dumps({"model": "m", "methods": ["ss-cam"]}))
    with (run / "records.jsonl").open("a") as f:
        for p in ("a.jpg", "b.jpg"):
            f.write(json.dumps({"image": f"/photos/{p}", "method": paper_table.REFERENCE}) + "\n")
    _, records = paper_table.read_runs(layer, "fidelity")
    assert {r["method"] for r in records} == {"lift-cam"}
    assert "fidelity-ss-cam: 1 of 2 photos, left out" in capsys.readouterr().out

    with (run / "records.jsonl").open("a") as f:
        f.write(json.dumps({"image": "/photos/b.jpg", "method": "ss-cam", "index": 1}) + "\n")
    _, records = paper_table.read_runs(layer, "fidelity")
    assert (
        sorted(r["method"] for r in records if r["method"] != paper_table.REFERENCE)
        == ["lift-cam"] * 2 + ["ss-cam"] * 2
    )
    assert "left out" not in capsys.readouterr().out


def test_a_failed_run_is_not_noted_as_having_made_the_folder(paper_table: ModuleType, tmp_path: Path) -> None:
    log = tmp_path / "commands.txt"
    with pytest.raises(subprocess.CalledProcessError):
        paper_table.run(["evaluate", "--no-such-option"], log)
    assert not log.exists()
    paper_table.run(["--version"], log)
    paper_table.run(["--version"], log)
    assert log.read_text().splitlines() == ["liftcam --version"]


def test_only_max_sensitivity_runs_nothing_else(
    paper_table: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A GPU lease fills the Max-Sensitivity run of a cell whose other runs the CPU made (a CUDA run would
    refuse to resume those): ``--only max-sensitivity`` starts that run alone, with the split's metric."""
    started: list[list[str]] = []
    monkeypatch.setattr(paper_table, "run", lambda args, log: started.append(args))
    monkeypatch.setattr(paper_table, "applicable", lambda model, layer, methods: (methods, []))
    layer = tmp_path / "lite2" / "block"
    write_run(layer / "evaluate-is-cam", ["a.jpg"], "is-cam", batch_size=1)  # made without max_sensitivity
    options = {"models": ["lite2"], "layers": ["block"], "step": 0.05, "threads": 8, "device": "cuda"}
    args = argparse.Namespace(**options, out=tmp_path, later=[], batch_size=1, only=["max-sensitivity"])
    paper_table.run_all(args, ["lift-cam", "is-cam"])
    assert len(started) == 1
    one = started[0]
    assert one[one.index("--metrics") + 1 : one.index("--step")] == ["max_sensitivity"]
    assert one[one.index("--out") + 1] == str(layer / "evaluate-is-cam-max-sensitivity")
    assert one[one.index("--device") + 1] == "cuda" and one[one.index("--methods") + 1] == "is-cam"

    started.clear()  # by default every run of the cell, in order; --later leaves the split's out
    paper_table.run_all(argparse.Namespace(**{**vars(args), "only": list(paper_table.RUN_KINDS)}), ["is-cam"])
    assert [a[a.index("--out") + 1].rsplit("/", 1)[1] for a in started] == [
        "evaluate-is-cam",
        "fidelity-is-cam",
        "evaluate-is-cam-max-sensitivity",
    ]
    started.clear()
    paper_table.run_all(
        argparse.Namespace(**{**vars(args), "only": ["fidelity"], "later": ["max-sensitivity"]}), ["is-cam"]
    )
    assert [a[0] for a in started] == ["fidelity"]


FAULTS = """
import resource, numpy as np
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(10):
    np.empty(100_000_000, dtype=np.uint8).fill(1)  # a batch's activations: over glibc's 32 MiB mmap cut
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="GLIBC_TUNABLES needs glibc")
def test_runs_keep_freed_memory_instead_of_faulting_it_in_again(paper_table: ModuleType) -> None:
    assert paper_table.child_environment({"GLIBC_TUNABLES": "mine"})["GLIBC_TUNABLES"] == "mine"

    def faults(environ: dict[str, str]) -> int:
        done = subprocess.run([sys.executable, "-c", FAULTS], env=environ, check=True, capture_output=True)
        return int(done.stdout)

    plain = {key: value for key, value in os.environ.items() if key != "GLIBC_TUNABLES"}
    # ten 100 MB buffers: ~24,000 page faults each when handed back to the kernel, once when kept
    assert faults(paper_table.child_environment(plain)) * 4 < faults(plain)
