"""A bounded local record of served predictions and the true labels fed back for them (SQLite, standard library).

Each prediction gets an id (`<request id>.<position>`) and a row: time, the input's SHA-256 digest, the
predicted class, its probability and the model version; never the raw image unless `keep_images`. Labels
sent back later (`add_labels`) give the live accuracy over the last `accuracy_window` labelled predictions,
overall and per true class. Each request also gets a row (latency, images, the drift assessment after it),
and `event` notes what an operator should see on a timeline (drift raised or cleared, a model reload).

Every table is bounded: once a table holds more than `max_rows` rows the oldest go, so a service that
runs for months keeps a constant-size file. A file store is in WAL mode, so `fmnist-jax monitor` can read
it while the service writes. One connection, one lock: the service calls in from its worker threads.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any
from collections.abc import Sequence

import numpy as np

from fmnist_jax.errors import Error

SCHEMA_VERSION = 1
MAX_EVENTS = 10_000
_SCHEMA = """
CREATE TABLE IF NOT EXISTS predictions (
  seq INTEGER PRIMARY KEY,        -- images served so far, this one included
  id TEXT NOT NULL UNIQUE,
  time REAL NOT NULL,
  digest TEXT NOT NULL,           -- SHA-256 of the 28x28 uint8 input, first 16 hex digits
  prediction INTEGER NOT NULL,
  confidence REAL NOT NULL,
  model_version TEXT NOT NULL,
  label INTEGER,
  label_seq INTEGER,              -- order in which labels arrived
  label_time REAL,
  image BLOB                      -- only with keep_images
);
CREATE INDEX IF NOT EXISTS predictions_label_seq ON predictions(label_seq) WHERE label_seq IS NOT NULL;
CREATE TABLE IF NOT EXISTS requests (
  n INTEGER PRIMARY KEY,
  request_id TEXT NOT NULL,
  time REAL NOT NULL,
  seq_end INTEGER NOT NULL,       -- seq of the request's last image
  images INTEGER NOT NULL,
  latency_s REAL NOT NULL,
  model_version TEXT NOT NULL,
  drifted INTEGER,                -- NULL while the drift window is not ready or drift is off
  drift TEXT                      -- the assessment as JSON
);
CREATE TABLE IF NOT EXISTS events (
  n INTEGER PRIMARY KEY, time REAL NOT NULL, seq INTEGER NOT NULL, kind TEXT NOT NULL, detail TEXT NOT NULL
);
"""


class FeedbackError(Error):
    """Feedback that cannot be taken (see the subclasses); nothing of the batch is recorded."""


class UnknownPrediction(FeedbackError):
    """No prediction with this id (never served, or rotated out of the store)."""


class AlreadyLabelled(FeedbackError):
    """The prediction already has a label; one label per prediction keeps the accuracy exact."""


class StoreError(Error):
    """A store file that is not this module's, or of another schema version."""


def digest(image_u8: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(image_u8, np.uint8).tobytes()).hexdigest()[:16]


def _connect(path: str | Path, read_only: bool = False) -> sqlite3.Connection:
    if read_only:
        if not Path(path).is_file():
            raise StoreError(f"{path}: no such store file")
        return sqlite3.connect(f"file:{Path(path).resolve()}?mode=ro", uri=True, check_same_thread=False)
    return sqlite3.connect(str(path), check_same_thread=False)


class Store:
    """Predictions, labels, requests and events in one SQLite database, each table at most `max_rows` rows."""

    def __init__(
        self,
        path: str | Path = ":memory:",
        max_rows: int = 100_000,
        keep_images: bool = False,
        accuracy_window: int = 500,
        classes: int = 10,
    ):
        if max_rows < 1 or accuracy_window < 1:
            raise StoreError(f"max_rows and accuracy_window must be positive, got {max_rows}, {accuracy_window}")
        self.max_rows, self.keep_images, self.accuracy_window, self.classes = (
            max_rows,
            keep_images,
            accuracy_window,
            classes,
        )
        self._lock = threading.Lock()
        try:
            self._db = _connect(path)
            version = self._db.execute("PRAGMA user_version").fetchone()[0]
            tables = {r[0] for r in self._db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
            if tables and version != SCHEMA_VERSION:
                raise StoreError(f"{path}: not a prediction store of schema {SCHEMA_VERSION} (found {version})")
            if str(path) != ":memory:":
                self._db.execute("PRAGMA journal_mode=WAL")
                self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(_SCHEMA)
            self._db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            self._db.commit()
        except sqlite3.DatabaseError as e:
            raise StoreError(f"{path}: not usable as a prediction store ({e})") from e
        self._seq = self._db.execute("SELECT COALESCE(MAX(seq), 0) FROM predictions").fetchone()[0]
        self._label_seq = self._db.execute("SELECT COALESCE(MAX(label_seq), 0) FROM predictions").fetchone()[0]

    @property
    def served(self) -> int:
        """Images served over the store's whole life (rotation keeps counting)."""
        return self._seq

    def record(
        self,
        request_id: str,
        images_u8: np.ndarray,
        probabilities: np.ndarray,
        model_version: str,
        latency_s: float,
        drift: dict[str, Any] | None = None,
        now: float | None = None,
    ) -> list[str]:
        """Record one request's predictions (and the request); returns the prediction ids, in order."""
        now = time.time() if now is None else now
        p = np.asarray(probabilities)
        ids = [f"{request_id}.{i}" for i in range(len(p))]
        with self._lock:
            first = self._seq + 1
            rows = [
                (
                    first + i,
                    ids[i],
                    now,
                    digest(images_u8[i]),
                    int(p[i].argmax()),
                    float(p[i].max()),
                    model_version,
                    images_u8[i].tobytes() if self.keep_images else None,
                )
                for i in range(len(p))
            ]
            self._seq += len(p)
            drifted = None if drift is None or not drift.get("ready") else int(bool(drift.get("drifted")))
            with self._db:
                self._db.executemany(
                    "INSERT INTO predictions (seq, id, time, digest, prediction, confidence, model_version, image)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    rows,
                )
                self._db.execute(
                    "INSERT INTO requests (request_id, time, seq_end, images, latency_s, model_version, drifted, drift)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (request_id, now, self._seq, len(p), latency_s, model_version, drifted, _json(drift)),
                )
                self._rotate()
        return ids

    def _rotate(self) -> None:
        self._db.execute("DELETE FROM predictions WHERE seq <= ?", (self._seq - self.max_rows,))
        for table, keep in (("requests", self.max_rows), ("events", min(self.max_rows, MAX_EVENTS))):
            self._db.execute(f"DELETE FROM {table} WHERE n <= (SELECT MAX(n) FROM {table}) - ?", (keep,))

    def add_labels(self, items: Sequence[tuple[str, int]], now: float | None = None) -> tuple[int, int]:
        """Set the true label of each (prediction id, class index), all or nothing; returns (labelled, correct)."""
        now = time.time() if now is None else now
        ids = [i for i, _ in items]
        if len(set(ids)) != len(ids):
            raise AlreadyLabelled("the same prediction id is labelled twice in one request")
        bad = [label for _, label in items if not 0 <= label < self.classes]
        if bad:
            raise FeedbackError(f"labels must be class indices 0..{self.classes - 1}, got {bad[0]}")
        with self._lock:
            found: dict[str, tuple[int | None, int]] = {}
            for s in range(0, len(ids), 500):  # SQLite bounds the number of parameters per statement
                chunk = ids[s : s + 500]
                marks = ",".join("?" * len(chunk))
                query = f"SELECT id, label, prediction FROM predictions WHERE id IN ({marks})"
                found |= {r[0]: (r[1], r[2]) for r in self._db.execute(query, chunk)}
            missing = [i for i in ids if i not in found]
            if missing:
                raise UnknownPrediction(f"no prediction with id {missing[0]!r} (never served, or rotated out)")
            labelled = [i for i in ids if found[i][0] is not None]
            if labelled:
                raise AlreadyLabelled(f"prediction {labelled[0]!r} already has a label")
            rows = [(label, self._label_seq + k + 1, now, i) for k, (i, label) in enumerate(items)]
            with self._db:
                self._db.executemany(
                    "UPDATE predictions SET label = ?, label_seq = ?, label_time = ? WHERE id = ?", rows
                )
            self._label_seq += len(rows)
        return len(rows), sum(found[i][1] == label for i, label in items)

    def accuracy(self, class_names: Sequence[str] | None = None) -> dict[str, Any]:
        """Accuracy over the last `accuracy_window` labelled predictions (in the order labels came), per true class."""
        with self._lock:
            rows = self._db.execute(
                "SELECT prediction, label FROM predictions WHERE label_seq IS NOT NULL ORDER BY label_seq DESC LIMIT ?",
                (self.accuracy_window,),
            ).fetchall()
            total = self._label_seq
        pred = np.array([r[0] for r in rows], np.int64)
        true = np.array([r[1] for r in rows], np.int64)
        names = list(class_names) if class_names else [str(c) for c in range(self.classes)]
        per_class = {}
        for c, name in enumerate(names):
            n = int((true == c).sum())
            per_class[name] = {"labelled": n, "accuracy": float((pred[true == c] == c).mean()) if n else None}
        return {
            "window": self.accuracy_window,
            "labelled": len(rows),
            "labelled_total": int(total),
            "correct": int((pred == true).sum()),
            "accuracy": float((pred == true).mean()) if len(rows) else None,
            "per_class": per_class,
        }

    def event(self, kind: str, detail: dict[str, Any], now: float | None = None) -> None:
        with self._lock, self._db:
            self._db.execute(
                "INSERT INTO events (time, seq, kind, detail) VALUES (?, ?, ?, ?)",
                (time.time() if now is None else now, self._seq, kind, _json(detail)),
            )
            self._rotate()

    def events(self, limit: int = 20) -> list[dict[str, Any]]:
        """The last `limit` events, oldest first."""
        with self._lock:
            rows = self._db.execute(
                "SELECT time, seq, kind, detail FROM events ORDER BY n DESC LIMIT ?", (limit,)
            ).fetchall()
        return [{"time": t, "seq": s, "kind": k, "detail": json.loads(d)} for t, s, k, d in reversed(rows)]

    def counts(self) -> dict[str, int]:
        with self._lock:
            return {
                t: self._db.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0]
                for t in ("predictions", "requests", "events")
            }

    def close(self) -> None:
        with self._lock:
            self._db.close()


MAX_ID_CHARS = 80


def parse_labels(payload: Any, classes: Sequence[str], max_items: int) -> list[tuple[str, int]]:
    """Feedback as (prediction id, class index) pairs, from `{"id", "label"}` or `{"items": [...]}`; a label is a
    class index or a class name. Every item is checked before any is used (FeedbackError naming the first bad one)."""
    if isinstance(payload, dict) and set(payload) == {"items"}:
        payload = payload["items"]
    elif isinstance(payload, dict):
        payload = [payload]
    if not isinstance(payload, list) or not payload:
        raise FeedbackError('send {"id": ..., "label": ...} or {"items": [{"id": ..., "label": ...}, ...]}')
    if len(payload) > max_items:
        raise FeedbackError(f"{len(payload)} labels are over the limit of {max_items} per request")
    out = []
    for k, item in enumerate(payload):
        if not isinstance(item, dict) or set(item) != {"id", "label"}:
            raise FeedbackError(f'item {k}: needs exactly the keys "id" and "label"')
        pid, label = item["id"], item["label"]
        if not isinstance(pid, str) or not 0 < len(pid) <= MAX_ID_CHARS:
            raise FeedbackError(f"item {k}: id must be a prediction id (a string of 1 to {MAX_ID_CHARS} characters)")
        if isinstance(label, str) and label in classes:
            label = list(classes).index(label)
        elif isinstance(label, (str, bool)) or not isinstance(label, int):
            raise FeedbackError(
                f"item {k}: unknown class {label!r}; use an index 0..{len(classes) - 1} or a class name"
            )
        out.append((pid, label))
    return out


def _json(value: Any) -> str | None:
    return None if value is None else json.dumps(value, allow_nan=False, separators=(",", ":"))


@dataclasses.dataclass(frozen=True)
class Snapshot:
    """A store's tables read back as arrays (what `fmnist-jax monitor` plots)."""

    predictions: dict[str, np.ndarray]  # seq, time, prediction, confidence, label (-1: none), label_seq, model_version
    requests: dict[str, Any]  # time, seq_end, images, latency_s, drifted (-1: not ready), model_version, drift (dicts)
    events: list[dict[str, Any]]


def read(path: str | Path) -> Snapshot:
    """Read a store file without writing to it (a live service may hold it open)."""
    try:
        db = _connect(path, read_only=True)
        try:
            if db.execute("PRAGMA user_version").fetchone()[0] != SCHEMA_VERSION:
                raise StoreError(f"{path}: not a prediction store of schema {SCHEMA_VERSION}")
            p = db.execute(
                "SELECT seq, time, prediction, confidence, COALESCE(label, -1), COALESCE(label_seq, -1), model_version"
                " FROM predictions ORDER BY seq"
            ).fetchall()
            r = db.execute(
                "SELECT time, seq_end, images, latency_s, COALESCE(drifted, -1), model_version, drift"
                " FROM requests ORDER BY n"
            ).fetchall()
            e = db.execute("SELECT time, seq, kind, detail FROM events ORDER BY n").fetchall()
        finally:
            db.close()
    except sqlite3.DatabaseError as err:
        raise StoreError(f"{path}: not a readable prediction store ({err})") from err
    cols = list(zip(*p)) if p else [()] * 7
    predictions = {
        name: np.array(col, dtype)
        for name, col, dtype in zip(
            ("seq", "time", "prediction", "confidence", "label", "label_seq", "model_version"),
            cols,
            (np.int64, np.float64, np.int64, np.float64, np.int64, np.int64, object),
        )
    }
    rcols = list(zip(*r)) if r else [()] * 7
    requests: dict[str, Any] = {
        name: np.array(col, dtype)
        for name, col, dtype in zip(
            ("time", "seq_end", "images", "latency_s", "drifted", "model_version"),
            rcols[:6],
            (np.float64, np.int64, np.int64, np.float64, np.int64, object),
        )
    }
    requests["drift"] = [json.loads(d) if d else None for d in rcols[6]]
    events = [{"time": t, "seq": s, "kind": k, "detail": json.loads(d)} for t, s, k, d in e]
    return Snapshot(predictions, requests, events)
