"""One config end to end on generated data: outputs, learning, determinism, config validation."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import chex
import numpy as np
import pytest

from conftest import tiny_flags

from fmnist_jax import cli, config_lib, exporter, reporting, restore, train
from fmnist_jax.errors import ConfigError, Diverged, RunError, WorkdirBusy
from fmnist_jax.record import ISA_FLAGS, git_revision
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


def test_git_revision_is_dirty_for_changed_code_not_for_written_results(tmp_path):
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-C", str(tmp_path)]
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    (tmp_path / "pkg").mkdir()
    (tmp_path / "results").mkdir()
    for f in ("pkg/code.py", "results/metrics.jsonl"):
        (tmp_path / f).write_text("1\n")
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-qm", "c"], check=True)
    head = subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
    (tmp_path / "results/metrics.jsonl").write_text("2\n")  # a run's own tracked output
    assert git_revision(tmp_path / "pkg") == head
    (tmp_path / "pkg/code.py").write_text("2\n")
    assert git_revision(tmp_path / "pkg") == head + "+dirty"


def test_same_config_and_seed_give_identical_metrics(tiny_config, tmp_path):
    a = train.train_and_evaluate(tiny_config, tmp_path / "a", progress=False)
    b = train.train_and_evaluate(tiny_config, tmp_path / "b", progress=False)
    assert a["members"] == b["members"]
    assert read_jsonl(tmp_path / "a" / "metrics.jsonl") == read_jsonl(tmp_path / "b" / "metrics.jsonl")
    tiny_config.seeds = (1,)
    c = train.train_and_evaluate(tiny_config, tmp_path / "c", progress=False)
    assert a["members"] != c["members"]


def test_final_models_train_on_every_image_and_nothing_claims_a_validation(tiny_config, tmp_path):
    """cv.holdout=False: all 240 generated training images, no val rows or numbers, export takes the first member."""
    tiny_config.cv.holdout, tiny_config.cv.folds, tiny_config.seeds = False, (0,), (3, 1)
    tiny_config.train.epochs = 1
    summary = train.train_and_evaluate(tiny_config, tmp_path, progress=False)
    assert summary["steps_per_epoch"] == 240 // tiny_config.train.batch_size
    assert summary["val_accuracy"] is None and [m["val_accuracy"] for m in summary["members"]] == [None, None]
    assert not any(k.startswith("val_") for r in read_jsonl(tmp_path / "metrics.jsonl") for k in r)
    assert exporter.load_member(tmp_path).info["seed"] == 3  # seed order, fixed before training
    assert "none held out" in reporting.run_report(tmp_path).read_text()


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
        *tiny_flags(Path(tiny_config.data.dir)),
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


def _point(tiny_config, name, **overrides):
    c = config_lib.with_overrides(tiny_config, overrides)
    c.name = name
    return c


@pytest.mark.parametrize("strategy", ["unroll", "vmap"])
def test_packed_points_equal_separate_runs(tiny_config, tmp_path, strategy):
    """Three points that differ in augmentation, label smoothing and optimiser train as one program, each into its
    own workdir with the numbers it gets alone (unrolled: its own branch; vmapped: every branch, its own kept)."""
    tiny_config.members.strategy = strategy
    points = [
        _point(tiny_config, "a"),
        _point(tiny_config, "b", **{"augment": "crop(2)|flip_lr", "train.label_smoothing": 0.1, "optim.lr": 3e-3}),
        _point(tiny_config, "c", **{"optim.schedule": "constant", "optim.warmup_epochs": 0.5, "seeds": (4,)}),
    ]
    packed = train.train_packed([(c, tmp_path / "packed" / c.name) for c in points], progress=False)
    for c, got in zip(points, packed):
        alone = train.train_and_evaluate(c, tmp_path / "alone" / c.name, progress=False)
        assert got["packed_with"] == sorted({"a", "b", "c"} - {c.name}) and "packed_with" not in alone
        for g, a in zip(got["members"], alone["members"]):
            assert (g["fold"], g["seed"]) == (a["fold"], a["seed"])
            np.testing.assert_allclose([g[k] for k in sorted(g)], [a[k] for k in sorted(a)], rtol=1e-4, atol=1e-5)
        rows = [read_jsonl(tmp_path / d / c.name / "metrics.jsonl") for d in ("packed", "alone")]
        # the summary's tolerance: a vmapped program sums in another order (a loss of 2.1 differed by 1.9e-5
        # relative on an Intel Xeon with AVX-512 and AMX, 2026-12-04)
        np.testing.assert_allclose(
            [[r[k] for k in sorted(r)] for r in rows[0]],
            [[r[k] for k in sorted(r)] for r in rows[1]],
            rtol=1e-4,
            atol=1e-5,
        )
    assert packed[0]["members"] != packed[1]["members"]  # the points do differ
    run = restore.restore(tmp_path / "packed" / "b")  # each point's checkpoint restores alone
    assert run.config.name == "b" and [m.seed for m in run.members] == [0, 0]


def test_packed_points_resume_together_from_their_checkpoints(tiny_config, tmp_path):
    points = [_point(tiny_config, "a"), _point(tiny_config, "b", augment="crop(2)")]
    runs = [(c, tmp_path / c.name) for c in points]
    first = train.train_packed(runs, progress=False)
    for c in points:  # back to the epoch-2 checkpoints, as a kill during epoch 3 leaves them
        shutil.rmtree(tmp_path / c.name / "checkpoints" / "3")
        (tmp_path / c.name / "summary.json").unlink()
    again = train.train_packed(runs, progress=False)
    assert [s["members"] for s in again] == [s["members"] for s in first]
    shutil.rmtree(tmp_path / "b" / "checkpoints" / "3")
    with pytest.raises(RunError, match="same epoch"):
        train.train_packed(runs, progress=False)


def test_only_points_of_one_network_pack(tiny_config, tmp_path):
    wide = _point(tiny_config, "wide", **{"model.widths": (8, 24)})
    with pytest.raises(ConfigError, match=r"wide cannot train in one program with tiny.*model.widths"):
        train.train_packed([(tiny_config, tmp_path / "a"), (wide, tmp_path / "b")], progress=False)
    assert not (tmp_path / "a").exists()


def test_validation_every_n_epochs_and_the_last_and_a_resume_may_change_n(tiny_config, tmp_path):
    """eval.every_epochs only thins the val rows (the weights are the same), so a resumed run may change it."""
    every_1 = train.train_and_evaluate(tiny_config, tmp_path / "a", progress=False)
    tiny_config.eval.every_epochs = 2
    every_2 = train.train_and_evaluate(tiny_config, tmp_path / "b", progress=False)
    rows = read_jsonl(tmp_path / "b" / "metrics.jsonl")
    assert sorted({r["epoch"] for r in rows if "val_accuracy" in r}) == [2, 3]  # the 2nd, and the last
    assert len(rows) == 2 * 3 and every_2["members"] == every_1["members"]
    shutil.rmtree(tmp_path / "b" / "checkpoints" / "3")  # back to epoch 2, resumed validating every epoch
    (tmp_path / "b" / "summary.json").unlink()
    tiny_config.eval.every_epochs = 1
    assert train.train_and_evaluate(tiny_config, tmp_path / "b", progress=False)["members"] == every_1["members"]
