"""A finished run's W&B runs rebuilt from what is committed: `metrics.jsonl`, `summary.json`, `config.json`.

Why: offline W&B runs live in the ignored `<run>/wandb/` of the checkout that trained them. A run that trained a
segment where W&B was off (the accelerator of `scripts/study_parallel.py` has no wandb), or resumed on a fresh
checkout whose earlier segments' offline runs are gone, has its whole history only in `metrics.jsonl`. Replaying
that through `tracking.WandbWriter`, the writer training uses, gives each member one complete offline run (history
per epoch, final summary, config with the versions and git revision of `record.json`). The replay has no images or
checkpoint artifact: those were never committed.
"""

from __future__ import annotations

import itertools
import json
import shutil
from pathlib import Path
from typing import Any
from collections.abc import Iterable

from fmnist_jax import config_lib, members, tracking
from fmnist_jax.writers import read_jsonl


def replay(run: Path) -> None:
    """Log finished `run` into fresh offline runs under new ids, replacing the offline runs and ids it had."""
    config = config_lib.from_dict(json.loads((run / "config.json").read_text()))
    config.wandb.mode = "offline"
    summary = json.loads((run / "summary.json").read_text())
    shutil.rmtree(run / "wandb", ignore_errors=True)
    (run / tracking.RUN_IDS).unlink(missing_ok=True)
    extra = {"params": summary["params"], "data_digest": summary["data_digest"]}
    writer = tracking.WandbWriter(config, members.members_of(config), run, extra=extra)
    try:
        for _, rows in itertools.groupby(read_jsonl(run / "metrics.jsonl"), key=lambda r: r["epoch"]):
            writer.write(list(rows))
        writer.write_summary(summary)
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


def check_readable(run: Path) -> None:
    """Read what `replay` reads, so that a damaged run folder fails before anything is replaced (`complete` skips
    `metrics.jsonl` where the ids are missing, so it is read here too)."""
    config_lib.from_dict(json.loads((run / "config.json").read_text()))
    summary = json.loads((run / "summary.json").read_text())
    summary["params"], summary["data_digest"]  # noqa: B018 - the keys `replay` logs
    list(read_jsonl(run / "metrics.jsonl"))


def complete(run: Path, exported: Iterable[dict[str, Any]]) -> bool:
    """Whether `exported` (`tracking.offline_export` lines of `run`'s offline runs, any segments) holds finished
    `run` whole: for every member, lines under its current id (`wandb_runs.json`) with every epoch of
    `metrics.jsonl` and the final test accuracy."""
    ids_path = run / tracking.RUN_IDS
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
    for row in read_jsonl(run / "metrics.jsonl"):
        wanted.setdefault(f"fold{row['fold']}_seed{row['seed']}", set()).add(row["epoch"])
    return all(tag in ids and ids[tag] in tested and logged.get(ids[tag], set()) >= e for tag, e in wanted.items())
