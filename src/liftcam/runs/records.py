"""An append-only JSON-lines record file that survives being killed, and resumes.

Every record is one line, flushed and synced as soon as it is computed. On opening, a last line cut
short by a killed process is dropped (the file is truncated to its last complete line), so at most the
record in flight is lost and the file is never corrupt. A run's settings are stored beside it; opening
the same folder with different settings is refused, so results of different settings never mix.
"""

from __future__ import annotations

import json
import os
from collections.abc import Hashable, Iterable
from pathlib import Path
from typing import Any

from ..errors import LiftCamError

SETTINGS_FILE = "settings.json"


def _complete_lines(path: Path) -> tuple[list[dict[str, Any]], int]:
    """Records of every complete, valid line, and the byte length those lines take."""
    records: list[dict[str, Any]] = []
    good = 0
    with path.open("rb") as f:
        for raw in f:
            if not raw.endswith(b"\n"):
                break
            try:
                records.append(json.loads(raw))
            except json.JSONDecodeError:
                break
            good += len(raw)
    return records, good


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
        if stored_path.exists():
            stored = json.loads(stored_path.read_text())
            if stored != self.settings:
                changed = sorted(k for k in set(stored) | set(self.settings) if stored.get(k) != self.settings.get(k))
                raise LiftCamError(
                    f"{self.directory} holds a run with other settings (differs in: {', '.join(changed)}); "
                    "use another output folder or the same settings"
                )
        elif write_settings:
            tmp = stored_path.with_suffix(".tmp")
            tmp.write_text(json.dumps(self.settings, indent=2))
            os.replace(tmp, stored_path)
        self.path = self.directory / name
        self.records: list[dict[str, Any]] = []
        if self.path.exists():
            self.records, good = _complete_lines(self.path)
            if good != self.path.stat().st_size:
                with self.path.open("r+b") as f:
                    f.truncate(good)
        self._keys = {self.key(r) for r in self.records}
        for other in sorted(self.directory.glob(shards)) if shards else []:
            if other != self.path:
                self._keys.update(self.key(r) for r in _complete_lines(other)[0])

    @staticmethod
    def read_all(directory: Path, pattern: str = "records*.jsonl") -> list[dict[str, Any]]:
        """Every complete record of every record file matching ``pattern`` in ``directory``."""
        records: list[dict[str, Any]] = []
        for path in sorted(Path(directory).glob(pattern)):
            records.extend(_complete_lines(path)[0])
        return records

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
