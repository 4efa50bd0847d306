"""Output folders and files: checked before any work, written atomically, file names kept losslessly.

File names that are not valid UTF-8 reach Python as strings with lone surrogates (``os.fsdecode``).
JSON escapes them (``"\\udce9"``) and reads them back unchanged; text files (CSV, Markdown, HTML) are
written with the ``surrogateescape`` handler, which writes the name's original bytes back.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

from ..errors import LiftCamError

# Pseudo file systems: writing results there is never what the user meant.
_SYSTEM_ROOTS = (Path("/proc"), Path("/sys"), Path("/dev"))


def prepare_output_dir(path: str | Path, option: str = "--out") -> Path:
    """Create ``path`` (and its parents) and check that files can be written in it.

    Refused with one line naming ``option``: an existing file that is not a folder, a path under a
    regular file, a path in ``/proc``, ``/sys`` or ``/dev``, a folder that cannot be created or written.
    """
    if not str(path).strip():
        raise LiftCamError(f"{option}: an empty path; name a folder")
    path = Path(path)
    try:
        resolved = path.resolve()
    except (OSError, RuntimeError) as exc:  # a symbolic link loop
        raise LiftCamError(f"{option} {path}: cannot resolve ({exc})") from None
    if any(resolved == root or root in resolved.parents for root in _SYSTEM_ROOTS):
        raise LiftCamError(f"{option} {path}: is in a system folder ({resolved}); choose another folder")
    if path.exists() and not path.is_dir():
        raise LiftCamError(f"{option} {path}: exists and is not a folder")
    for parent in resolved.parents:
        if parent.exists():
            if not parent.is_dir():
                raise LiftCamError(f"{option} {path}: {parent} is a file, not a folder")
            break
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as exc:
        raise LiftCamError(f"{option} {path}: cannot write there ({exc.strerror or exc})") from None
    return path


def write_text_atomic(path: Path, text: str) -> None:
    """Replace ``path`` by ``text`` in one step (a kill leaves the old or the new file, never half of one)."""
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", encoding="utf-8", errors="surrogateescape", newline="") as f:
        f.write(text)
    os.replace(tmp, path)


def write_json_atomic(path: Path, data: Any) -> None:
    """``data`` as indented JSON, atomically (non-UTF-8 file names escaped, read back unchanged)."""
    write_text_atomic(path, json.dumps(data, indent=2, allow_nan=True))


def open_text(path: Path, mode: str = "w") -> Any:
    """A text file for CSV/Markdown/HTML output that stores any file name losslessly."""
    return path.open(mode, encoding="utf-8", errors="surrogateescape", newline="")


def shown(text: str) -> str:
    """``text`` safe on any terminal stream: the bytes of a file name that is not UTF-8 escaped (``\\xff``)."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def tell(message: str, bar: Any = None) -> None:
    """One ``liftcam:`` line on stderr (through the progress bar ``bar`` when one is showing)."""
    if bar is not None:
        bar.write(shown(message), file=sys.stderr)
    else:
        print(shown(message), file=sys.stderr)
