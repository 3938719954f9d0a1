"""Weights & Biases logging as one more `MetricWriter`; W&B trouble never stops training.

Design: one W&B run per member (fold, seed), all created in this process with
`reinit="create_new"`, grouped by experiment (`group`, the user's; an ablation's name when
none is given), with the ablation point as `job_type` and both as tags. Per-member runs
(rather than one run with per-member keys) let W&B's own grouping average folds and seeds
and compare members side by side. Under a sweep agent (`WANDB_SWEEP_ID` set) W&B allows one
run per process, the agent's, so a point logs into that one run: each member's metrics under
`fold{f}_seed{s}/...` and their mean under the plain key, which the sweep's metric reads.
Every run defines `epoch` as the step of its metrics, carries the git revision and package
versions of the run record, and gets the final checkpoint as an artifact.
`wandb.mode`: 'offline' (default; upload later with `wandb sync DIR/wandb/offline-run-*`),
'online' (falls back to offline with a warning when W&B cannot start online, e.g. not
logged in), 'disabled' (no writer at all). Any W&B error is turned into a warning and the
writer goes quiet; `metrics.jsonl` is written regardless. Run ids are kept in
`workdir/wandb_runs.json`, so a resumed training run logs into the same W&B runs.
"""

from __future__ import annotations

import contextlib
import json
import os
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
SWEEP_ENV = "WANDB_SWEEP_ID"  # set by `wandb agent` in the processes it starts


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
        self.members = list(members)
        self.workdir = Path(workdir)
        self.per_point = bool(os.environ.get(SWEEP_ENV))
        self._guard("init", lambda: self._init(config, members, Path(workdir), extra or {}, resume))

    def _init(self, config, members, workdir: Path, extra: dict[str, Any], resume: bool) -> None:
        import wandb  # only when W&B is used: importing it costs seconds

        w = config.wandb
        ids_path = workdir / RUN_IDS
        ids = json.loads(ids_path.read_text()) if resume and ids_path.exists() else {}
        ids = {m.tag: ids.get(m.tag) or uuid.uuid4().hex[:8] for m in members}
        if not self.per_point:  # under an agent the run id is the agent's
            write_json(ids_path, ids)
        flat = flatten(config.to_dict())
        record = _record(workdir)
        provenance = {"git": record.get("git"), "versions": record.get("versions", {})}

        def init(mode: str, **kw: Any) -> Any:
            run = wandb.init(
                project=w.project,
                entity=w.entity or None,
                group=w.group or config.name,
                job_type=w.job_type or config.name,
                tags=list(w.tags),
                resume="allow",
                dir=str(workdir),
                mode=mode,  # type: ignore[arg-type]  # one of wandb's modes: checked by the caller
                reinit="create_new",
                settings=wandb.Settings(silent=True),
                **kw,
            )
            run.define_metric("epoch")
            run.define_metric("*", step_metric="epoch")  # curves of every point share the epoch axis
            return run

        def start(mode: str) -> list[Any]:
            if self.per_point:
                tags = [m.tag for m in members]
                return [init(mode, name=config.name, config={**flat, **extra, **provenance, "members": tags})]
            return [
                init(
                    mode,
                    name=f"{config.name}-{m.tag}",
                    id=ids[m.tag],
                    config={**flat, **extra, **provenance, "fold": m.fold, "seed": m.seed, "member": i},
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
            per_member = {row["member"]: (row["epoch"], _keys(row)) for row in rows}
            if self.per_point:
                (epoch,) = {e for e, _ in per_member.values()}
                metrics = _per_point(self.members, {i: m for i, (_, m) in per_member.items()})
                self.runs[0].log({**metrics, "epoch": epoch}, step=epoch, commit=True)
                return
            for i, (epoch, metrics) in per_member.items():
                # commit now, not at the next step: the row is handed to wandb-core at once
                self.runs[i].log({**metrics, "epoch": epoch}, step=epoch, commit=True)

        if self.runs:
            self._guard("log", log)

    def write_summary(self, summary: dict[str, Any]) -> None:
        """Final per-member val/test accuracy into the summaries (the same keys as the history), and the final
        checkpoint as an artifact of the first run (offline it waits in the run folder for `wandb sync`)."""

        def put():
            shared = {"params": summary["params"], "data_digest": summary["data_digest"]}
            ema = summary.get("ema", {}).get("members") or [{}] * len(summary["members"])  # history's ema_ keys
            finals = {
                i: _keys(m | {f"ema_{k}": v for k, v in e.items() if k not in ("fold", "seed")})
                for i, (m, e) in enumerate(zip(summary["members"], ema))
            }
            if self.per_point:
                self.runs[0].summary.update({**_per_point(self.members, finals), **shared})
            else:
                for i, run in enumerate(self.runs):
                    run.summary.update({**finals[i], **shared})
            self._log_checkpoint()

        if self.runs:
            self._guard("summary", put)

    def _log_checkpoint(self) -> None:
        import wandb

        saved = sorted((self.workdir / "checkpoints").glob("[0-9]*"), key=lambda p: int(p.name))
        if not saved:
            return
        art = wandb.Artifact(
            f"checkpoint-{self.runs[0].id}", type="checkpoint", metadata={"epoch": int(saved[-1].name)}
        )
        art.add_dir(str(saved[-1]))
        self.runs[0].log_artifact(art)

    def write_figures(self, figures: Callable[[int], dict[str, Any]]) -> None:
        """Log `figures(i)` (name -> matplotlib Figure) to member i's run as images (at the step after the last);
        under a sweep, every member's into the one run under its tag."""

        def put():
            import wandb

            for i, m in enumerate(self.members):
                run, prefix = (self.runs[0], f"{m.tag}/") if self.per_point else (self.runs[i], "")
                run.log({prefix + k: wandb.Image(_pixels(f)) for k, f in figures(i).items()})

        if self.runs:
            self._guard("images", put)

    def close(self) -> None:
        if self.runs:
            self._guard("finish", self._finish)


def _side_run(config: ml_collections.ConfigDict, workdir: Path, what: str, /, **kw: Any) -> Any:
    """A short W&B run of the config's project and group for an artifact or a table; None (with a warning) when
    W&B cannot start. Online falls back to offline like the training runs. `kw` go to `wandb.init` (the run's own
    `config` among them: hence the positional-only parameters)."""
    import wandb

    w = config.wandb
    for mode in dict.fromkeys((w.mode, "offline")):
        try:
            return wandb.init(
                project=w.project,
                entity=w.entity or None,
                group=w.group or config.name,
                tags=list(w.tags),
                dir=str(workdir),
                mode=mode,
                reinit="create_new",
                settings=wandb.Settings(silent=True),
                **kw,
            )
        except Exception as e:  # W&B must never fail the command that produced the result
            reason = " ".join(str(e).split())
            warnings.warn(f"W&B {what} ({mode}) failed ({type(e).__name__}: {reason})", stacklevel=3)
    return None


def log_table(
    config: ml_collections.ConfigDict, workdir: str | Path, name: str, rows: Sequence[dict[str, Any]], baseline: str
) -> None:
    """An ablation's table (deltas, 95% CIs, raw and adjusted p) as a `wandb.Table` in a run of job type
    'ablation-table' in the ablation's group, next to the points' runs (offline: `wandb sync` it). The run is
    named `<grid>-vs-<baseline>`: one grid's tables against different baselines must not share a name."""
    if config.wandb.mode == "disabled" or not rows:
        return
    import wandb

    run = _side_run(
        config,
        Path(workdir),
        "table",
        job_type="ablation-table",
        name=f"{name}-vs-{baseline}",
        config={"grid": name, "baseline": baseline},
    )
    if run is None:
        return
    columns = list(rows[0])
    table = wandb.Table(columns=list[str | int](columns), data=[[r[c] for c in columns] for r in rows])
    run.log({"ablation": table})
    run.finish()


def log_model(config: ml_collections.ConfigDict, workdir: str | Path, model_dir: str | Path, manifest: dict) -> None:
    """An exported model folder as a 'model' artifact (metadata: the manifest's member, accuracy and hash)."""
    if config.wandb.mode == "disabled":
        return
    import wandb

    m = manifest["member"]
    run = _side_run(config, Path(workdir), "model artifact", job_type="export", name=f"{config.name}-export")
    if run is None:
        return
    meta = {"member": m, "test_accuracy": manifest.get("test_accuracy"), "model_sha256": manifest["model_sha256"]}
    art = wandb.Artifact(f"model-{config.name}-fold{m['fold']}_seed{m['seed']}", type="model", metadata=meta)
    art.add_dir(str(model_dir))
    run.log_artifact(art)
    run.finish()


def _keys(row: dict[str, Any]) -> dict[str, Any]:
    """'val_accuracy' -> 'val/accuracy': one naming scheme for history and summary (W&B panels group by prefix);
    a metric a run does not have (val without held-out data) is left out, not logged as None."""
    skip = ("member", "fold", "seed", "epoch")
    return {k.replace("_", "/", 1): v for k, v in row.items() if k not in skip and v is not None}


def _per_point(members: Sequence[Any], metrics: dict[int, dict[str, Any]]) -> dict[str, Any]:
    """One run's keys for a point: every member's under its tag, and the mean over members under the plain key."""
    out = {f"{members[i].tag}/{k}": v for i, m in metrics.items() for k, v in m.items()}
    for k in {k for m in metrics.values() for k in m}:
        values = [m[k] for m in metrics.values() if k in m]
        out[k] = float(np.mean(values))
        if len(values) > 1:
            out[f"{k}_std"] = float(np.std(values, ddof=1))
    return out


def _record(workdir: Path) -> dict[str, Any]:
    try:
        return json.loads((workdir / "record.json").read_text())
    except (OSError, ValueError):
        return {}


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
    run = offline_export(run_dir)
    return run["history"], run["summary"]


def offline_export(run_dir: str | Path) -> dict[str, Any]:
    """What an offline run holds, as strict-JSON-ready values: its id, project, name, group, job type, tags,
    config, history rows and final summary (W&B's own export of a run, without a server)."""
    (path,) = Path(run_dir).glob("*.wandb")
    out: dict[str, Any] = {"history": [], "summary": {}, "config": {}}

    def values(items: Any) -> dict[str, Any]:
        return {(i.key or "/".join(i.nested_key)): json.loads(i.value_json) for i in items}

    for r in offline_records(path):
        kind = r.WhichOneof("record_type")
        if kind == "run":
            run = r.run
            out.update(id=run.run_id, project=run.project, name=run.display_name, group=run.run_group)
            out.update(job_type=run.job_type, tags=list(run.tags))
            out["config"].update(values(run.config.update))
        elif kind == "config":
            out["config"].update(values(r.config.update))
        elif kind == "history":
            out["history"].append(values(r.history.item))
        elif kind == "summary":
            out["summary"].update(values(r.summary.update))
    out["config"].pop("_wandb", None)  # W&B's own bookkeeping, not the run's config
    return out
