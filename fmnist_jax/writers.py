"""Metric writers, kept apart from training (CLU style): JSON lines always, more via `MultiWriter`; and the one
way the project writes a JSON file.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Protocol
from collections.abc import Sequence


class MetricWriter(Protocol):
    def write(self, rows: Sequence[dict[str, Any]]) -> None:
        """One row per member: {'member', 'fold', 'seed', 'epoch', metric: value, ...}."""

    def close(self) -> None: ...


class JsonlWriter:
    """Appends rows to `path`, flushed per call, so an interrupted run keeps every finished epoch."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._f = self.path.open("a")

    def write(self, rows: Sequence[dict[str, Any]]) -> None:
        for row in rows:
            self._f.write(json.dumps(row, allow_nan=False) + "\n")
        self._f.flush()

    def close(self) -> None:
        self._f.close()


class MultiWriter:
    def __init__(self, writers: Sequence[MetricWriter]):
        self.writers = list(writers)

    def write(self, rows: Sequence[dict[str, Any]]) -> None:
        for w in self.writers:
            w.write(rows)

    def close(self) -> None:
        for w in self.writers:
            w.close()


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


_UMASK = os.umask(0)
os.umask(_UMASK)  # read once (umask can only be read by setting it)


def write_json(path: str | Path, obj: Any, indent: int | None = 2, default: Any = None) -> None:
    """Write `obj` as strict JSON (NaN/inf refused: other readers reject them) atomically (`write_text`)."""
    write_text(path, json.dumps(obj, indent=indent, default=default, allow_nan=False))


def write_text(path: str | Path, text: str) -> None:
    """Write `text` as UTF-8 atomically (`write_bytes`)."""
    write_bytes(path, text.encode())


def write_bytes(path: str | Path, data: bytes) -> None:
    """Write `data` atomically: a kill mid-write leaves the previous file or none, never a truncated one (temp
    file in the same folder, then rename)."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; the file gets the mode open() would have given it
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
