"""The weight average (`train.ema_decay`): its update, that it never changes training, and that a run logs,
summarises, resumes, evaluates and exports it."""

import json
import shutil

import chex
import jax.numpy as jnp
import numpy as np
import pytest

from fmnist_jax import evaluation, exporter, members, reporting, restore, steps, train
from fmnist_jax.errors import RunError
from fmnist_jax.writers import read_jsonl


def test_ema_update_ramps_its_decay_up_then_holds_it():
    zeros, ones = {"w": jnp.zeros(3)}, {"w": jnp.ones(3)}
    # step 0: decay min(0.999, 1/10) = 0.1, so the average moves 0.9 of the way
    chex.assert_trees_all_close(steps.ema_update(zeros, ones, 0.999, jnp.asarray(0)), {"w": jnp.full(3, 0.9)})
    # step 10,000: (1 + t) / (10 + t) > 0.999, so the configured decay holds
    chex.assert_trees_all_close(
        steps.ema_update(zeros, ones, 0.999, jnp.asarray(10_000)), {"w": jnp.full(3, 0.001)}, rtol=1e-4
    )


@pytest.fixture(scope="module")
def ema_run(tmp_path_factory):
    """A tiny run that keeps a weight average, and the same run without one (module-scoped: trained once)."""
    from conftest import tiny, write_idx_dir

    data_dir = write_idx_dir(tmp_path_factory.mktemp("ema_data"))
    base = tmp_path_factory.mktemp("ema_runs")
    plain_config = tiny(data_dir)
    config = tiny(data_dir)
    config.train.ema_decay = 0.9
    return (
        (config, base / "ema", train.train_and_evaluate(config, base / "ema", progress=False)),
        (plain_config, base / "plain", train.train_and_evaluate(plain_config, base / "plain", progress=False)),
    )


def test_the_average_observes_and_never_changes_training(ema_run):
    (_, ema_dir, ema), (_, plain_dir, plain) = ema_run
    assert ema["members"] == plain["members"]  # the weights and everything measured on them are identical
    rows, plain_rows = read_jsonl(ema_dir / "metrics.jsonl"), read_jsonl(plain_dir / "metrics.jsonl")
    assert [{k: v for k, v in r.items() if not k.startswith("ema_")} for r in rows] == plain_rows
    assert all({"ema_val_accuracy", "ema_val_loss"} <= set(r) for r in rows)
    assert not any("ema" in k for r in plain_rows for k in r) and "ema" not in plain
    assert len(ema["ema"]["members"]) == 2 and ema["ema"]["val_accuracy"]["mean"] > 0.15
    # the average is a different set of weights: its numbers are its own
    assert [m["test_loss"] for m in ema["ema"]["members"]] != [m["test_loss"] for m in ema["members"]]
    assert [r["ema_val_accuracy"] for r in rows if r["epoch"] == 3] == [
        m["val_accuracy"] for m in ema["ema"]["members"]
    ]


def test_restored_average_is_the_one_training_evaluated(ema_run):
    (config, ema_dir, ema), (_, plain_dir, _) = ema_run
    report = evaluation.evaluate_run(ema_dir, ema=True)
    assert report["ema"] is True
    chex.assert_trees_all_close(
        [m["test_accuracy"] for m in report["members"]], [m["test_accuracy"] for m in ema["ema"]["members"]]
    )
    averaged, raw = restore.restore(ema_dir, ema=True), restore.restore(ema_dir)
    assert averaged.ema and not raw.ema
    with pytest.raises(AssertionError):
        chex.assert_trees_all_close(averaged.variables["params"], raw.variables["params"])
    with pytest.raises(RunError, match="kept no weight average"):
        restore.restore(plain_dir, ema=True)


def test_export_of_the_average_records_it_and_picks_by_its_own_validation(ema_run):
    (_, ema_dir, ema), _ = ema_run
    trained = exporter.load_member(ema_dir, ema=True)
    val = [m["val_accuracy"] for m in ema["ema"]["members"]]
    best = ema["ema"]["members"][int(np.argmax(val))]
    assert trained.info["ema"] is True and (trained.info["fold"], trained.info["seed"]) == (best["fold"], best["seed"])
    assert trained.info["test_accuracy"] == best["test_accuracy"]
    chex.assert_trees_all_close(
        trained.variables,
        members.unstack(restore.restore(ema_dir, ema=True).select(best["fold"], best["seed"]).variables, 0),
    )


def test_resume_keeps_the_average(ema_run, tmp_path):
    """Sent back to its epoch-2 checkpoint (the later one and the summary gone), the run ends exactly as it did."""
    (config, ema_dir, ema), _ = ema_run
    shutil.copytree(ema_dir, tmp_path / "run")
    shutil.rmtree(tmp_path / "run" / "checkpoints" / "3")
    (tmp_path / "run" / "summary.json").unlink()
    resumed = train.train_and_evaluate(config, tmp_path / "run", progress=False)
    assert json.loads((tmp_path / "run" / "record.json").read_text())["resumed_from_epoch"] == 2
    assert resumed["ema"] == ema["ema"] and resumed["members"] == ema["members"]


def test_report_shows_the_average_beside_the_weights(ema_run, tmp_path):
    (_, ema_dir, ema), (_, plain_dir, _) = ema_run
    md = reporting.run_report(ema_dir, tmp_path / "ema").read_text()
    assert "Weight average (`train.ema_decay=0.9`)" in md
    assert f"{100 * ema['ema']['members'][0]['test_accuracy']:.2f}" in md
    assert "Weight average" not in reporting.run_report(plain_dir, tmp_path / "plain").read_text()
