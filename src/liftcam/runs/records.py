"""An append-only JSON-lines record file that survives being killed, and resumes.

Every record is one line, flushed and synced as soon as it is computed. On opening, a last line cut
short by a killed process is dropped (the file is truncated to its last complete line), so at most the
record in flight is lost and the file is never corrupt. A complete line that is not a record (edited
by hand, a disk error) is skipped and counted, never a reason to drop the records after it. A run's
settings are stored beside it; opening the same folder with different settings is refused, so results
of different settings never mix. Where a run computes is one of its settings (:func:`compute_settings`): the
device type and, on the CPU, torch's thread count, by which CPU kernels round (a resumed run takes the thread
count it started with, :func:`stored_threads`).
"""

from __future__ import annotations

import itertools
import json
import os
from collections.abc import Hashable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import LiftCamError

SETTINGS_FILE = "settings.json"
#: Where a run computes, stored with its settings: the same images on another device, or on the CPU with
#: another thread count, round differently (a model's convolutions split their sums by thread: activations
#: differ by about 1e-5 between one and two threads), so a resumed run must compute where it started. Runs
#: stored before these were kept lack them and match any.
COMPUTE_FIELDS = ("device", "threads")


@dataclass
class _Lines:
    records: list[dict[str, Any]]  # every complete line that is a record
    complete: int  # bytes up to the end of the last complete line
    junk: int  # complete lines that are not records


def _is_record(value: Any) -> bool:
    return isinstance(value, dict) and isinstance(value.get("image"), str) and isinstance(value.get("method"), str)


def _read_lines(path: Path) -> _Lines:
    records: list[dict[str, Any]] = []
    complete = junk = 0
    with path.open("rb") as f:
        for raw in f:
            if not raw.endswith(b"\n"):
                break  # cut short by a kill: the only line ever dropped
            complete += len(raw)
            try:
                value = json.loads(raw)
            except (json.JSONDecodeError, UnicodeDecodeError):
                value = None
            if _is_record(value):
                records.append(value)
            elif raw.strip():
                junk += 1
    return _Lines(records, complete, junk)


def compute_settings(model: nn.Module) -> dict[str, Any]:
    """Where a run of ``model`` computes (:data:`COMPUTE_FIELDS`): the device type of its parameters and, on
    the CPU, torch's thread count."""
    first = next(itertools.chain(model.parameters(), model.buffers()), None)
    kind = first.device.type if first is not None else "cpu"
    return {"device": kind, "threads": torch.get_num_threads() if kind == "cpu" else None}


def run_settings(settings: dict[str, Any], model: nn.Module) -> dict[str, Any]:
    """What a run of ``model`` stores and compares: its ``settings`` and where it computes."""
    return {**settings, **compute_settings(model)}


def settings_differences(stored: dict[str, Any], wanted: dict[str, Any]) -> list[str]:
    """The names of the settings in which two runs differ (``wanted`` as JSON stores it: tuples as lists); a
    compute field the stored settings lack (a run stored before it was kept) matches any."""
    wanted = json.loads(json.dumps(wanted))
    return sorted(
        k
        for k in set(stored) | set(wanted)
        if stored.get(k) != wanted.get(k) and (k in stored or k not in COMPUTE_FIELDS)
    )


def stored_threads(directory: Path) -> int | None:
    """The CPU thread count of the run stored in ``directory``, None where there is none (no run, a run on
    another device, or one stored before thread counts were kept)."""
    stored = read_settings(directory)
    threads = stored.get("threads") if stored is not None and stored.get("device") == "cpu" else None
    return threads if isinstance(threads, int) and threads > 0 else None


def read_settings(directory: Path) -> dict[str, Any] | None:
    """The stored settings of a run folder, None if there are none; a broken file is refused clearly."""
    path = Path(directory) / SETTINGS_FILE
    if not path.exists():
        return None
    try:
        stored = json.loads(path.read_bytes())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise LiftCamError(f"{path}: broken settings file ({exc}); restore it or use another folder") from None
    if not isinstance(stored, dict):
        raise LiftCamError(f"{path}: broken settings file (not a JSON object); restore it or use another folder")
    return stored


def failed_records(records: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """The records of files that could not be used (``method == "error"``), by file, each with a
    ``reason`` (records written before reasons were stored give their error message)."""
    failed = ({**r, "reason": str(r.get("reason", r.get("error", "?")))} for r in records if r["method"] == "error")
    return sorted(failed, key=lambda r: str(r["image"]))


class RecordStore:
    """``directory/records.jsonl`` (or ``name``) with resume and a settings guard.

    Args:
        directory: the run's folder (created).
        settings: what determines the results; compared with the stored settings.
        key_fields: the fields that identify a record (e.g. image and method).
        name: the records file's name (one per process in a distributed run).
        shards: a glob of the run's other record files; their records count as done too (a run
            resumed with another number of processes computes nothing twice).
        write_settings: store the settings if absent (only one process of a distributed run does).

    A folder whose settings differ but which holds no record yet (a run that failed before its first
    record) takes the new settings.
    """

    def __init__(
        self,
        directory: Path,
        settings: dict[str, Any],
        key_fields: Iterable[str],
        name: str = "records.jsonl",
        shards: str | None = None,
        write_settings: bool = True,
    ) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.key_fields = tuple(key_fields)
        self.settings = json.loads(json.dumps(settings))  # normalised: tuples become lists
        stored_path = self.directory / SETTINGS_FILE
        stored = read_settings(self.directory)
        changed = settings_differences(stored, self.settings) if stored is not None else []
        if changed and not self._holds_records(shards or name):
            stored = None  # a run that stopped before its first record: nothing to protect, start afresh
        if stored is not None and changed:
            hint = f" (--threads {stored['threads']} resumes it)" if changed == ["threads"] else ""
            raise LiftCamError(
                f"{self.directory} holds a run with other settings (differs in: {', '.join(changed)}){hint}; "
                "use another output folder or the same settings"
            )
        #: True when the settings were (re)written: files a run caches beside its records are stale
        self.started_afresh = stored is None
        if stored is None and write_settings:
            tmp = stored_path.with_suffix(".tmp")
            tmp.write_text(json.dumps(self.settings, indent=2))
            os.replace(tmp, stored_path)
        self.path = self.directory / name
        self.records: list[dict[str, Any]] = []
        self.junk = 0
        if self.path.exists():
            lines = _read_lines(self.path)
            self.records, self.junk = lines.records, lines.junk
            if lines.complete != self.path.stat().st_size:
                with self.path.open("r+b") as f:
                    f.truncate(lines.complete)
        self._keys = {self.key(r) for r in self.records}
        for other in sorted(self.directory.glob(shards)) if shards else []:
            if other != self.path:
                self._keys.update(self.key(r) for r in _read_lines(other).records)

    def _holds_records(self, pattern: str) -> bool:
        return any(_read_lines(path).records for path in self.directory.glob(pattern))

    @staticmethod
    def read_all(directory: Path, pattern: str = "records*.jsonl") -> tuple[list[dict[str, Any]], int]:
        """Every complete record of every record file matching ``pattern`` in ``directory``, and the
        number of complete lines that were not records (skipped)."""
        records: list[dict[str, Any]] = []
        junk = 0
        for path in sorted(Path(directory).glob(pattern)):
            lines = _read_lines(path)
            records.extend(lines.records)
            junk += lines.junk
        return records, junk

    def key(self, record: dict[str, Any]) -> Hashable:
        return tuple(record.get(f) for f in self.key_fields)

    def done(self, **key: Any) -> bool:
        return tuple(key.get(f) for f in self.key_fields) in self._keys

    def append(self, record: dict[str, Any]) -> None:
        line = json.dumps(record, allow_nan=True) + "\n"
        with self.path.open("a") as f:
            f.write(line)
            f.flush()
            os.fsync(f.fileno())
        self.records.append(json.loads(line))
        self._keys.add(self.key(record))
