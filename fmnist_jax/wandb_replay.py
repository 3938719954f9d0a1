"""A finished run's W&B runs rebuilt from what is committed: `metrics.jsonl`, `summary.json`, `config.json`.

Why: offline W&B runs live in the ignored `<run>/wandb/` of the checkout that trained them. A run that trained a
segment where W&B was off (the accelerator of `scripts/study_parallel.py` has no wandb), or resumed on a fresh
checkout whose earlier segments' offline runs are gone, has its whole history only in `metrics.jsonl`. Replaying
that through `tracking.WandbWriter`, the writer training uses, gives each member one complete offline run (history
per epoch, final summary, config with the versions and git revision of `record.json`). The replay has no images or
checkpoint artifact: those were never committed.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import shutil
from pathlib import Path
from typing import Any
from collections.abc import Iterable

import ml_collections

from fmnist_jax import config_lib, members, tracking
from fmnist_jax.writers import read_jsonl


@dataclasses.dataclass(frozen=True)
class Finished:
    """A finished run as committed, read once by `load`: what `complete` checks and `replay` logs. Reading it
    whole first means a damaged run folder fails before any offline run is replaced."""

    path: Path
    config: ml_collections.ConfigDict
    summary: dict[str, Any]
    rows: list[dict[str, Any]]


def load(run: Path) -> Finished:
    """Read finished `run` (config, summary with the keys `replay` logs, every `metrics.jsonl` row)."""
    config = config_lib.from_dict(json.loads((run / "config.json").read_text()))
    summary = json.loads((run / "summary.json").read_text())
    summary["params"], summary["data_digest"]  # noqa: B018 - the keys `replay` logs, checked here
    return Finished(run, config, summary, list(read_jsonl(run / "metrics.jsonl")))


def replay(run: Finished) -> None:
    """Log `run` into fresh offline runs under new ids, replacing the offline runs and ids it had."""
    config = run.config.copy_and_resolve_references()
    config.wandb.mode = "offline"
    shutil.rmtree(run.path / "wandb", ignore_errors=True)
    (run.path / tracking.RUN_IDS).unlink(missing_ok=True)
    extra = {"params": run.summary["params"], "data_digest": run.summary["data_digest"]}
    writer = tracking.WandbWriter(config, members.members_of(config), run.path, extra=extra)
    try:
        for _, rows in itertools.groupby(run.rows, key=lambda r: r["epoch"]):
            writer.write(list(rows))
        writer.write_summary(run.summary)
    finally:
        writer.close()
    import wandb  # here, not at the top: importing it costs seconds

    wandb.teardown()  # finish() may return before wandb-core has written the last records, which a caller reads


def on_disk(run: Path) -> dict[str, dict[str, Any]]:
    """`run`'s offline runs here, exported (`tracking.offline_export`), by folder `<run>/wandb/offline-run-...`."""
    dirs = sorted(d for d in run.glob("wandb/offline-run-*") if any(d.glob("*.wandb")))
    return {
        f"{run.name}/wandb/{d.name}": tracking.offline_export(d) | {"folder": f"{run.name}/wandb/{d.name}"}
        for d in dirs
    }


def complete(run: Finished, exported: Iterable[dict[str, Any]]) -> bool:
    """Whether `exported` (`tracking.offline_export` lines of `run`'s offline runs, any segments) holds `run`
    whole: for every member, lines under its current id (`wandb_runs.json`) with every epoch of `metrics.jsonl`
    and the final test accuracy."""
    ids_path = run.path / tracking.RUN_IDS
    if not ids_path.exists():
        return False
    ids = json.loads(ids_path.read_text())
    logged: dict[str, set[int]] = {}
    tested = set()
    for line in exported:
        logged.setdefault(line["id"], set()).update(h["epoch"] for h in line["history"] if "train/loss" in h)
        if "test/accuracy" in line["summary"]:
            tested.add(line["id"])
    wanted: dict[str, set[int]] = {}
    for row in run.rows:
        wanted.setdefault(f"fold{row['fold']}_seed{row['seed']}", set()).add(row["epoch"])
    return all(tag in ids and ids[tag] in tested and logged.get(ids[tag], set()) >= e for tag, e in wanted.items())
