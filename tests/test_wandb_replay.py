"""A finished run's W&B runs rebuilt from its committed metrics: `scripts/wandb_log_run.py` replays a run whose
offline runs are missing or incomplete, `scripts/wandb_export.py` holds every finished point whole, once."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import wandb

from conftest import WANDB_METRICS, offline_runs
from fmnist_jax import tracking, train, wandb_replay
from fmnist_jax.writers import read_jsonl

REPO = Path(__file__).resolve().parent.parent


def test_a_run_trained_without_wandb_is_logged_offline_afterwards(tiny_config, tmp_path):
    """scripts/wandb_log_run.py: a run trained with W&B disabled gets the offline runs training writes, with its
    metrics as history and summary; never twice; an unfinished run exits 2 before anything is logged."""
    tiny_config.train.epochs = 2
    work = tmp_path / "point"
    summary = train.train_and_evaluate(tiny_config, work, progress=False)
    assert not (work / "wandb").exists()
    script = [sys.executable, str(REPO / "scripts/wandb_log_run.py")]
    unfinished = tmp_path / "unfinished"
    unfinished.mkdir()
    bad = subprocess.run([*script, str(work), str(unfinished)], capture_output=True, text=True)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and not (work / "wandb").exists()
    assert "logged offline" in subprocess.run([*script, str(work)], capture_output=True, text=True, check=True).stdout
    dirs, ids, jsonl = offline_runs(work)
    for member, tag in enumerate(("fold0_seed0", "fold1_seed0")):
        (run_dir,) = [d for d in dirs if d.name.endswith(ids[tag])]
        history, final = tracking.offline_run(run_dir)
        assert [r["_step"] for r in history] == [1, 2] and all(r.keys() >= WANDB_METRICS for r in history)
        mine = [r for r in jsonl if r["member"] == member]
        np.testing.assert_allclose([r["val/accuracy"] for r in history], [r["val_accuracy"] for r in mine])
        assert final["test/accuracy"] == pytest.approx(summary["members"][member]["test_accuracy"])
        assert tracking.offline_export(run_dir)["config"]["fold"] == member
    again = subprocess.run([*script, str(work)], capture_output=True, text=True, check=True)
    assert "skipped" in again.stdout and len(list((work / "wandb").glob("offline-run-*"))) == 2
    # a member's offline run lost (a segment trained elsewhere): the run is replayed whole, under new ids
    shutil.rmtree(dirs[0])
    assert "logged offline" in subprocess.run([*script, str(work)], capture_output=True, text=True, check=True).stdout
    new_dirs, new_ids, _ = offline_runs(work)
    assert not set(new_ids.values()) & set(ids.values())
    # a damaged metrics.jsonl (and no ids to skip it by): one line, exit 2, its offline runs are kept
    (work / tracking.RUN_IDS).unlink()
    with open(work / "metrics.jsonl", "a") as f:
        f.write("{damaged\n")
    bad = subprocess.run([*script, str(work)], capture_output=True, text=True)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1
    assert sorted(d.name for d in (work / "wandb").glob("offline-run-*")) == sorted(d.name for d in new_dirs)


def test_the_export_holds_every_finished_point_whole_once(tiny_config, tmp_path):
    """scripts/wandb_export.py: a point trained without W&B is replayed into the export, a replaced run's line is
    dropped, a point whose committed lines hold it whole is not replayed again on a checkout without its runs."""
    tiny_config.train.epochs = 2
    grid = tmp_path / "grid"
    train.train_and_evaluate(tiny_config, grid / "quiet", progress=False)  # W&B disabled
    tiny_config.wandb.mode = "offline"
    train.train_and_evaluate(tiny_config, grid / "logged", progress=False)
    wandb.teardown()
    logged, ids, _ = offline_runs(grid / "logged")
    out = tmp_path / "wandb_runs.jsonl"
    replaced = {"folder": "logged/wandb/offline-run-0-old", "id": "old", "history": [], "summary": {}}
    out.write_text(json.dumps(replaced) + "\n")
    script = [sys.executable, str(REPO / "scripts/wandb_export.py"), str(grid), "--out", str(out)]
    assert "1 of 2 points replayed" in subprocess.run(script, capture_output=True, text=True, check=True).stdout
    quiet, quiet_ids, _ = offline_runs(grid / "quiet")
    lines = read_jsonl(out)
    assert sorted(r["id"] for r in lines) == sorted([*ids.values(), *quiet_ids.values()])
    for point in ("quiet", "logged"):
        mine = [r for r in lines if r["folder"].startswith(f"{point}/")]
        run = wandb_replay.load(grid / point)
        assert wandb_replay.complete(run, mine) and len(mine) == 2
        assert not wandb_replay.complete(run, mine[:1])
    first = out.read_text()
    for d in [*quiet, *logged]:  # a fresh checkout: the committed export, no offline runs
        shutil.rmtree(d)
    again = subprocess.run(script, capture_output=True, text=True, check=True)
    assert "0 of 2 points replayed" in again.stdout and out.read_text() == first
    (grid / "quiet" / tracking.RUN_IDS).write_text("{damaged")  # one line, exit 2, nothing replayed or written
    bad = subprocess.run(script, capture_output=True, text=True)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and out.read_text() == first
    assert not list((grid / "quiet" / "wandb").glob("offline-run-*"))
