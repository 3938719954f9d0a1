"""Weights & Biases logging as one more `MetricWriter`; W&B trouble never stops training.

Design: one W&B run per member (fold, seed), all created in this process with
`reinit="create_new"`, grouped by experiment (`group`) and named by ablation point
(`job_type`). Per-member runs (rather than one run with per-member keys) let W&B's own
grouping average folds and seeds and compare members side by side.
`wandb.mode`: 'offline' (default; upload later with `wandb sync DIR/wandb/offline-run-*`),
'online' (falls back to offline with a warning when W&B cannot start online, e.g. not
logged in), 'disabled' (no writer at all). Any W&B error is turned into a warning and the
writer goes quiet; `metrics.jsonl` is written regardless. Run ids are kept in
`workdir/wandb_runs.json`, so a resumed training run logs into the same W&B runs.
"""

from __future__ import annotations

import contextlib
import json
import struct
import uuid
import warnings
from pathlib import Path
from typing import Any
from collections.abc import Callable, Iterator, Sequence

import ml_collections
import numpy as np

from fmnist_jax.config_lib import flatten
from fmnist_jax.writers import write_json

MODES = ("offline", "online", "disabled")
RUN_IDS = "wandb_runs.json"


class WandbWriter:
    """`write(rows)` logs each row to its member's run at step = epoch, e.g. 'train/loss', 'val/accuracy'."""

    def __init__(
        self,
        config: ml_collections.ConfigDict,
        members: Sequence[Any],
        workdir: str | Path,
        extra: dict[str, Any] | None = None,
        resume: bool = False,
    ):
        self.runs: list[Any] = []
        self._guard("init", lambda: self._init(config, members, Path(workdir), extra or {}, resume))

    def _init(self, config, members, workdir: Path, extra: dict[str, Any], resume: bool) -> None:
        import wandb  # only when W&B is used: importing it costs seconds

        w = config.wandb
        ids_path = workdir / RUN_IDS
        ids = json.loads(ids_path.read_text()) if resume and ids_path.exists() else {}
        ids = {m.tag: ids.get(m.tag) or uuid.uuid4().hex[:8] for m in members}
        write_json(ids_path, ids)
        flat = flatten(config.to_dict())

        def start(mode: str) -> list[Any]:
            return [
                wandb.init(
                    project=w.project,
                    entity=w.entity or None,
                    group=w.group or config.name,
                    job_type=w.job_type or config.name,
                    name=f"{config.name}-{m.tag}",
                    id=ids[m.tag],
                    resume="allow",
                    dir=str(workdir),
                    mode=mode,  # type: ignore[arg-type]  # one of wandb's modes: checked by the caller
                    reinit="create_new",
                    config={**flat, **extra, "fold": m.fold, "seed": m.seed, "member": i},
                    settings=wandb.Settings(silent=True),
                )
                for i, m in enumerate(members)
            ]

        try:
            self.runs = start(w.mode)
        except Exception as e:
            if w.mode != "online":
                raise
            reason = " ".join(str(e).split())  # one line
            warnings.warn(f"W&B could not start online ({reason}); logging offline instead", stacklevel=3)
            self._finish()
            # New IDs: this process still holds the failed online runs' IDs ("run ID ... is in use").
            ids = {m.tag: uuid.uuid4().hex[:8] for m in members}
            write_json(ids_path, ids)
            self.runs = start("offline")

    def _guard(self, what: str, fn: Callable[[], None]) -> None:
        """Run a W&B call; on any error warn once, drop the runs, and let training go on."""
        try:
            fn()
        except Exception as e:  # W&B must never kill training, whatever it raises
            warnings.warn(
                f"W&B {what} failed ({type(e).__name__}: {e}); continuing without W&B (metrics.jsonl has every metric)",
                stacklevel=3,
            )
            self._finish()

    def _finish(self) -> None:
        runs, self.runs = self.runs, []
        for r in runs:
            with contextlib.suppress(Exception):  # already failing; the warning has been given
                r.finish()

    def write(self, rows: Sequence[dict[str, Any]]) -> None:
        def log():
            for row in rows:
                metrics = {
                    k.replace("_", "/", 1): v for k, v in row.items() if k not in ("member", "fold", "seed", "epoch")
                }
                # commit now, not at the next step: the row is handed to wandb-core at once
                self.runs[row["member"]].log({**metrics, "epoch": row["epoch"]}, step=row["epoch"], commit=True)

        if self.runs:
            self._guard("log", log)

    def write_summary(self, summary: dict[str, Any]) -> None:
        """Final per-member val/test accuracy into each run's summary."""

        def put():
            for run, m in zip(self.runs, summary["members"]):
                run.summary.update({k: v for k, v in m.items() if k not in ("fold", "seed")})
                run.summary.update({"params": summary["params"], "data_digest": summary["data_digest"]})

        if self.runs:
            self._guard("summary", put)

    def write_figures(self, figures: Callable[[int], dict[str, Any]]) -> None:
        """Log `figures(i)` (name -> matplotlib Figure) to member i's run as images (at the step after the last)."""

        def put():
            import wandb

            for i, run in enumerate(self.runs):
                run.log({k: wandb.Image(_pixels(f)) for k, f in figures(i).items()})

        if self.runs:
            self._guard("images", put)

    def close(self) -> None:
        if self.runs:
            self._guard("finish", self._finish)


def _pixels(fig: Any) -> np.ndarray:
    """RGBA pixels of a pyplot-free Figure (wandb.Image(fig) would go through pyplot)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())


def offline_records(path: str | Path) -> Iterator[Any]:
    """Decode an offline run's `.wandb` file: a LevelDB-format log of `wandb_internal_pb2.Record` protos.

    For checking what an offline run holds without uploading it (`wandb sync` has no viewer).
    Blocks are 32 KiB; each chunk has a 7-byte header (crc32, length, type: 1 full,
    2 first, 3 middle, 4 last); a block tail shorter than a header is zero padding.
    """
    from wandb.proto import wandb_internal_pb2

    buf = Path(path).read_bytes()
    if buf[:4] != b":W&B":
        raise ValueError(f"{path} is not a W&B transaction log")
    pos, block, pending = 7, 32768, b""
    while pos + 7 <= len(buf):
        if block - pos % block < 7:
            pos += block - pos % block
            continue
        _, length, kind = struct.unpack("<IHB", buf[pos : pos + 7])
        chunk, pos = buf[pos + 7 : pos + 7 + length], pos + 7 + length
        pending = chunk if kind in (1, 2) else pending + chunk
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()  # type: ignore[attr-defined]  # generated protobuf class
            record.ParseFromString(pending)
            yield record


def offline_run(run_dir: str | Path) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """(history rows with '_step' and the logged keys, final summary) of an offline run directory."""
    (path,) = Path(run_dir).glob("*.wandb")
    rows, summary = [], {}
    for r in offline_records(path):
        kind = r.WhichOneof("record_type")
        if kind == "history":
            rows.append({(i.key or "/".join(i.nested_key)): json.loads(i.value_json) for i in r.history.item})
        elif kind == "summary":
            summary.update({(u.key or "/".join(u.nested_key)): json.loads(u.value_json) for u in r.summary.update})
    return rows, summary
