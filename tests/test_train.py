"""One config end to end on generated data: outputs, learning, determinism, config validation."""

import json
import subprocess
import sys
from pathlib import Path

import chex
import numpy as np
import pytest

from fmnist_jax import cli, train
from fmnist_jax.errors import Diverged, WorkdirBusy
from fmnist_jax.record import ISA_FLAGS
from fmnist_jax.writers import read_jsonl


def test_train_and_evaluate_writes_everything(tiny_config, tmp_path):
    summary = train.train_and_evaluate(tiny_config, tmp_path, progress=False)
    for name in ("config.json", "record.json", "metrics.jsonl", "summary.json"):
        assert (tmp_path / name).is_file(), name
    rows = read_jsonl(tmp_path / "metrics.jsonl")
    assert len(rows) == 2 * tiny_config.train.epochs
    assert {r["fold"] for r in rows} == {0, 1}
    assert set(rows[0]) >= {
        "member",
        "fold",
        "seed",
        "epoch",
        "train_loss",
        "train_accuracy",
        "val_loss",
        "val_accuracy",
    }
    first = [r["train_loss"] for r in rows if r["epoch"] == 1]
    last = [r["train_loss"] for r in rows if r["epoch"] == tiny_config.train.epochs]
    assert np.mean(last) < np.mean(first)  # it learns
    assert summary["test_accuracy"]["mean"] > 0.15  # above chance (0.10) on the learnable data
    record = json.loads((tmp_path / "record.json").read_text())
    assert record["data"]["digest"] and record["versions"]["jax"] and record["config"]["cv"]["folds"] == [0, 1]
    assert record["cpu"]["model"] and set(record["cpu"]["isa"]) <= set(ISA_FLAGS)  # timings mean little without it
    assert len(summary["members"]) == 2 and summary["params"] < 100_000


def test_same_config_and_seed_give_identical_metrics(tiny_config, tmp_path):
    a = train.train_and_evaluate(tiny_config, tmp_path / "a", progress=False)
    b = train.train_and_evaluate(tiny_config, tmp_path / "b", progress=False)
    assert a["members"] == b["members"]
    assert read_jsonl(tmp_path / "a" / "metrics.jsonl") == read_jsonl(tmp_path / "b" / "metrics.jsonl")
    tiny_config.seeds = (1,)
    c = train.train_and_evaluate(tiny_config, tmp_path / "c", progress=False)
    assert a["members"] != c["members"]


def test_epoch_order_is_per_member_and_within_its_fold(tiny_config):
    tiny_config.seeds = (0, 1)
    exp = train.setup(tiny_config)
    order = train.epoch_order(exp, 0)
    chex.assert_shape(order, (exp.steps_per_epoch, 4, tiny_config.train.batch_size))
    for i in range(4):
        assert np.isin(order[:, i], exp.train_idx[i]).all()
        assert len(np.unique(order[:, i])) == order[:, i].size  # no repeats within an epoch
    assert not np.array_equal(order[:, 0], order[:, 2])  # same fold, other seed: other order


def test_batch_larger_than_the_fold_is_a_clear_error(tiny_config):
    tiny_config.train.batch_size = 100_000  # valid alone; only the data says it is too large (tests/test_validate.py)
    with pytest.raises(ValueError, match="batch_size=100000 must be positive and at most the training fold size"):
        train.setup(tiny_config)


def test_one_training_per_workdir_and_a_killed_holder_never_blocks(tiny_config, tmp_path):
    work = tmp_path / "w"
    work.mkdir()
    hold = (
        "import filelock, sys, time; lock = filelock.FileLock(sys.argv[1]); lock.acquire(); print('held', flush=True); "
    )
    hold += "time.sleep(60)"
    holder = subprocess.Popen([sys.executable, "-c", hold, str(work / ".lock")], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        with pytest.raises(WorkdirBusy, match="in use by another process"):
            train.train_and_evaluate(tiny_config, work, progress=False)
        assert not (work / "metrics.jsonl").exists()
    finally:
        holder.kill()  # SIGKILL: the lock file stays, the OS drops the lock
        holder.wait()
        holder.stdout.close()
    assert (work / ".lock").exists()
    assert train.train_and_evaluate(tiny_config, work, progress=False)["test_accuracy"]["mean"] > 0


def test_divergence_stops_before_anything_non_finite_is_written(tiny_config, tmp_path, capsys):
    tiny_config.normalize.std = 1e-38  # inputs of ~1e37: activations overflow to inf in the first step
    with pytest.raises(
        Diverged, match="diverged in epoch 1: non-finite loss or parameters in fold0_seed0, fold1_seed0"
    ):
        train.train_and_evaluate(tiny_config, tmp_path / "a", progress=False)
    assert not (tmp_path / "a" / "summary.json").exists() and not (tmp_path / "a" / "checkpoints" / "1").exists()
    assert read_jsonl(tmp_path / "a" / "metrics.jsonl") == []
    args = [
        "train",
        "--config",
        str(Path(__file__).parents[1] / "configs" / "default.py"),
        "--workdir",
        str(tmp_path / "b"),
        "--config.normalize.std=1e-38",
    ]
    args += [f"--config.data.dir={tiny_config.data.dir}", "--config.data.verify=false", "--config.wandb.mode=disabled"]
    args += [
        "--config.cv.k=3",
        "--config.cv.folds=(0,1)",
        "--config.model.widths=(8,16)",
        "--config.model.depths=(1,1)",
        "--config.train.batch_size=16",
    ]
    assert cli.main([*args, "--noprogress"]) == 1
    err = capsys.readouterr().err.strip()
    assert "training diverged in epoch 1" in err and len(err.splitlines()) == 1


def test_relative_data_dir_is_saved_absolute_and_a_damaged_summary_is_rewritten(tiny_config, tmp_path, monkeypatch):
    monkeypatch.chdir(Path(tiny_config.data.dir).parent)
    tiny_config.data.dir = Path(tiny_config.data.dir).name
    tiny_config.train.epochs = 1
    first = train.train_and_evaluate(tiny_config, tmp_path, progress=False)
    saved = json.loads((tmp_path / "config.json").read_text())["data"]["dir"]
    assert Path(saved).is_absolute() and Path(saved) == Path(tiny_config.data.dir).resolve()
    (tmp_path / "summary.json").write_text('{"name": "tiny", "memb')  # what a kill mid-write used to leave
    assert train.train_and_evaluate(tiny_config, tmp_path, progress=False)["members"] == first["members"]
    json.loads((tmp_path / "summary.json").read_text())
