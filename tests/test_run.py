"""One config end to end on generated data: outputs, learning, determinism, config validation."""

import json

import chex
import numpy as np
import pytest

from fmnist_jax import run
from fmnist_jax.record import ISA_FLAGS
from fmnist_jax.writers import read_jsonl


def test_train_and_evaluate_writes_everything(tiny_config, tmp_path):
    summary = run.train_and_evaluate(tiny_config, tmp_path, progress=False)
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
    a = run.train_and_evaluate(tiny_config, tmp_path / "a", progress=False)
    b = run.train_and_evaluate(tiny_config, tmp_path / "b", progress=False)
    assert a["members"] == b["members"]
    assert read_jsonl(tmp_path / "a" / "metrics.jsonl") == read_jsonl(tmp_path / "b" / "metrics.jsonl")
    tiny_config.seeds = (1,)
    c = run.train_and_evaluate(tiny_config, tmp_path / "c", progress=False)
    assert a["members"] != c["members"]


def test_epoch_order_is_per_member_and_within_its_fold(tiny_config):
    tiny_config.seeds = (0, 1)
    exp = run.setup(tiny_config)
    order = run.epoch_order(exp, 0)
    chex.assert_shape(order, (exp.steps_per_epoch, 4, tiny_config.train.batch_size))
    for i in range(4):
        assert np.isin(order[:, i], exp.train_idx[i]).all()
        assert len(np.unique(order[:, i])) == order[:, i].size  # no repeats within an epoch
    assert not np.array_equal(order[:, 0], order[:, 2])  # same fold, other seed: other order


@pytest.mark.parametrize(
    "key,value,match",
    [
        ("cv.folds", (0, 0), "without repeats"),
        ("train.batch_size", 100_000, "batch_size"),
    ],
)
def test_bad_config_values_are_clear_errors(tiny_config, key, value, match):
    section, name = key.split(".")
    setattr(tiny_config[section], name, value)
    with pytest.raises(ValueError, match=match):
        run.setup(tiny_config)
