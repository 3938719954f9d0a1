"""Orbax round trip, resume after SIGKILL == uninterrupted run, and refusal of a different config."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import chex
import jax
import numpy as np
import pytest
from conftest import tiny

from configs import default
from fmnist_jax import checkpoints, config_lib, errors, members, restore, train
from fmnist_jax.writers import read_jsonl

ROOT = Path(__file__).resolve().parent.parent

# Trains the config in argv[1] into workdir argv[2]; with argv[3] = POINT:N, hangs (to be killed) at POINT:
# "metrics": right after the epoch-N metrics are logged, before that epoch is checkpointed;
# "saved": when Orbax has written epoch N's checkpoint but its digest is not recorded yet;
# "summary": after the last checkpoint, before the summary is written.
DRIVER = """
import json, sys, time
from pathlib import Path
from fmnist_jax import checkpoints, config_lib, train

point, _, n = sys.argv[3].partition(":") if len(sys.argv) > 3 else ("", "", "0")

def hang():
    Path(sys.argv[2], "hanging").touch()
    time.sleep(600)

class Hang:
    def write(self, rows):
        if point == "metrics" and rows[0]["epoch"] == int(n):
            hang()
    def close(self):
        pass

digest = checkpoints._digest
if point == "saved":
    checkpoints._digest = lambda mngr, epoch: hang() if epoch == int(n) else digest(mngr, epoch)
if point == "summary":
    train.summarize = lambda *args: hang()
config = config_lib.from_dict(json.loads(Path(sys.argv[1]).read_text()))
train.train_and_evaluate(config, sys.argv[2], progress=False, writer=Hang())
"""


@pytest.fixture(scope="module")
def reference(tmp_path_factory, tiny_data_dir):
    """An uninterrupted 3-epoch tiny run: (config, workdir, summary)."""
    config, workdir = tiny(tiny_data_dir), tmp_path_factory.mktemp("reference")
    return config, workdir, train.train_and_evaluate(config, workdir, progress=False)


def _drive(tmp_path: Path, config, workdir: Path, hang: str | None = None) -> subprocess.Popen:
    (tmp_path / "driver.py").write_text(DRIVER)
    (tmp_path / "config.json").write_text(json.dumps(config.to_dict()))
    args = [sys.executable, str(tmp_path / "driver.py"), str(tmp_path / "config.json"), str(workdir)]
    env = dict(
        os.environ,
        PYTHONPATH=str(ROOT),
        JAX_COMPILATION_CACHE_DIR=str(tmp_path / "jax_cache"),
        JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
    )  # the resumed process reuses the first's compiles
    return subprocess.Popen(args + ([hang] if hang else []), env=env, cwd=ROOT)


@pytest.mark.parametrize(
    "hang,steps,resumed_from",
    [("metrics:2", [1], 1), ("saved:2", [1, 2], 2), ("summary", [2, 3], 3)],
    ids=["before-checkpoint", "before-digest", "before-summary"],
)
def test_sigkill_then_resume_ends_like_uninterrupted_run(reference, tmp_path, hang, steps, resumed_from):
    config, ref_dir, ref_summary = reference
    workdir = tmp_path / "killed"
    proc = _drive(tmp_path, config, workdir, hang)
    deadline = time.time() + 300
    while not (workdir / "hanging").exists():
        assert proc.poll() is None and time.time() < deadline, "driver ended or stalled before the kill point"
        time.sleep(0.1)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    mngr = checkpoints.manager(workdir, create=False)
    assert mngr.all_steps() == steps
    assert not (workdir / "summary.json").exists()
    killed = checkpoints.read_meta(mngr)[1]
    mngr.close()  # it lists the steps it found; the resumed run's are read by a fresh one below

    t0 = time.perf_counter()
    assert _drive(tmp_path, config, workdir).wait(timeout=300) == 0
    second = time.perf_counter() - t0
    resumed = json.loads((workdir / "summary.json").read_text())
    # the killed segment's wall time up to its last save (loading and compiling too) is kept, and the resumed
    # segment's, at least its epochs and at most its process's life, is added to it
    final = checkpoints.read_meta(mngr := checkpoints.manager(workdir, create=False))[1]
    mngr.close()
    assert killed["wall_seconds"] > sum(killed["epoch_seconds"]) > 0
    lower = killed["wall_seconds"] + sum(final["epoch_seconds"][resumed_from:])
    assert lower <= resumed["wall_seconds"] <= killed["wall_seconds"] + second
    record = json.loads((workdir / "record.json").read_text())
    assert record["resumed_from_epoch"] == resumed_from
    (killed_record,) = record["earlier_segments"]  # the killed segment's machine and versions stay on record
    assert killed_record["versions"] == record["versions"] and "config" not in killed_record
    assert killed_record["time"] <= record["time"] and "resumed_from_epoch" not in killed_record
    for key in ("val_accuracy", "test_accuracy"):
        chex.assert_trees_all_close(resumed[key], ref_summary[key])
    chex.assert_trees_all_close(resumed["members"], ref_summary["members"], rtol=1e-6)
    # an epoch logged before the kill and again after the resume is kept once
    ref_rows, rows = read_jsonl(ref_dir / "metrics.jsonl"), read_jsonl(workdir / "metrics.jsonl")
    assert [(r["member"], r["epoch"]) for r in rows] == [(r["member"], r["epoch"]) for r in ref_rows]
    chex.assert_trees_all_close(rows, ref_rows, rtol=1e-6)
    chex.assert_trees_all_close(restore.restore(workdir).variables, restore.restore(ref_dir).variables, rtol=1e-6)


def test_checkpoint_round_trip(reference):
    config, workdir, summary = reference
    mngr = checkpoints.manager(workdir, create=False)
    assert mngr.all_steps() == [2, 3]  # every epoch, max_to_keep=2
    epoch, meta = checkpoints.read_meta(mngr)
    assert epoch == 3 and meta["data_digest"] == summary["data_digest"]
    assert meta["members"] == [{"fold": 0, "seed": 0}, {"fold": 1, "seed": 0}]
    assert config_lib.from_dict(meta["config"]).to_dict() == config.to_dict()

    target = checkpoints.abstract_state(config, meta["steps_per_epoch"], 2, members.make_mesh(2))
    state = checkpoints.restore(mngr, target)
    state = state.replace(  # a different state (every leaf changed), saved and restored under a new step
        step=state.step + 5,
        params=jax.tree.map(lambda x: x + 1.5, state.params),
        batch_stats=jax.tree.map(lambda x: x * 2.0, state.batch_stats),
        opt_state=jax.tree.map(lambda x: x + 1, state.opt_state),
        key=jax.vmap(jax.random.fold_in, (0, None))(state.key, 9),
    )
    checkpoints.save(mngr, 7, state, meta)
    mngr.wait_until_finished()
    restored = checkpoints.restore(mngr, target, 7)
    chex.assert_trees_all_equal(restored.params, state.params)
    chex.assert_trees_all_equal(restored.batch_stats, state.batch_stats)
    chex.assert_trees_all_equal(restored.opt_state, state.opt_state)
    chex.assert_trees_all_equal(restored.step, state.step)
    chex.assert_trees_all_equal(jax.random.key_data(restored.key), jax.random.key_data(state.key))
    assert restored.apply_fn is not None
    mngr.delete(7)
    mngr.close()


def test_a_stop_inside_a_save_lands_once_the_step_is_whole(reference, monkeypatch):
    """Ctrl-C (and SIGTERM, which cli.main turns into the same) arriving inside Orbax's save is held until the step
    is committed and its digest recorded, then raised: a stopped run leaves no step without its commit marker."""
    config, workdir, _ = reference
    mngr = checkpoints.manager(workdir, create=False)
    _, meta = checkpoints.read_meta(mngr)
    state = checkpoints.restore(
        mngr, checkpoints.abstract_state(config, meta["steps_per_epoch"], 2, members.make_mesh(2))
    )
    save = mngr.save
    monkeypatch.setattr(mngr, "save", lambda *a, **k: (save(*a, **k), signal.raise_signal(signal.SIGINT))[0])
    with pytest.raises(KeyboardInterrupt):
        checkpoints.save(mngr, 8, state, meta)
    assert (checkpoints.directory(workdir) / "8" / "commit_success.txt").exists()
    checkpoints.verify(mngr, 8)
    assert "8" in json.loads((checkpoints.directory(workdir) / checkpoints.DIGESTS).read_text())
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # the stop's own handler is back
    mngr.delete(8)
    mngr.close()


def test_finished_run_is_not_retrained(reference, capsys):
    config, workdir, summary = reference
    before = (workdir / "metrics.jsonl").read_text()
    config = config_lib.from_dict(config.to_dict())
    config.wandb.group = "elsewhere"  # where results go may change
    config.checkpoint.every_epochs = 2
    assert train.train_and_evaluate(config, workdir, progress=False) == summary
    assert "not retraining" in capsys.readouterr().out
    assert (workdir / "metrics.jsonl").read_text() == before


def test_different_config_is_refused(reference):
    config, workdir, _ = reference
    config = config_lib.from_dict(config.to_dict())
    config.optim.lr = 0.5
    config.train.epochs = 4
    with pytest.raises(errors.CheckpointMismatch, match=r"optim\.lr: 0\.01 -> 0\.5.*train\.epochs: 3 -> 4"):
        train.train_and_evaluate(config, workdir, progress=False)


def test_config_saved_before_a_key_existed_restores_and_resumes():
    current = default.get_config()
    saved = json.loads(json.dumps(current.to_dict()))
    del saved["eval"]["tta_flip"]
    assert config_lib.from_dict(saved).eval.tta_flip is False and "tta_flip" not in saved["eval"]
    assert config_lib.differences(saved, current.to_dict()) == []
    current.eval.tta_flip = True  # a run saved without the key had it off
    assert config_lib.differences(saved, current.to_dict()) == ["eval.tta_flip: False -> True"]
    current.name = "another_grid-base"  # what a run is called is not what it computes
    assert config_lib.differences(saved, current.to_dict()) == ["eval.tta_flip: False -> True"]


def test_restore_reads_only_what_inference_needs(reference):
    config, workdir, summary = reference
    run = restore.restore(workdir)
    assert run.config.to_dict() == config.to_dict() and run.epoch == 3
    assert run.members == [members.Member(0, 0), members.Member(1, 0)]
    assert set(run.variables) == {"params", "batch_stats"}  # no optimiser state, no step, no keys
    full = checkpoints.restore(
        mngr := checkpoints.manager(workdir, create=False),
        checkpoints.abstract_state(config, summary["steps_per_epoch"], 2, members.make_mesh(2)),
    )
    mngr.close()
    chex.assert_trees_all_equal(run.variables, {"params": full.params, "batch_stats": full.batch_stats})
    one = run.select(1, 0)
    assert one.members == [members.Member(1, 0)] and one.config.cv.folds == (1,)
    chex.assert_trees_all_equal(one.member_variables(0), run.member_variables(1))
    x = np.zeros((2, 28, 28, 1), np.float32)
    chex.assert_shape(run.model.apply(one.member_variables(0), x, train=False), (2, 10))
    with pytest.raises(errors.RunError, match=r"fold=4 seed=0.*\(0, 0\), \(1, 0\)"):
        run.select(4, 0)
    with pytest.raises(FileNotFoundError, match="no checkpoint for epoch 1"):
        restore.restore(workdir, step=1)


def _damage(workdir: Path, epoch: int, how: str) -> None:
    """Flip 16 bytes in the middle of, or cut in half, the largest file of a checkpoint's state."""
    f = max(
        (p for p in (workdir / "checkpoints" / str(epoch) / "state").rglob("*") if p.is_file()),
        key=lambda p: p.stat().st_size,
    )
    data = bytearray(f.read_bytes())
    if how == "flip":
        mid = len(data) // 2
        data[mid : mid + 16] = bytes(b ^ 0xFF for b in data[mid : mid + 16])
    else:
        data = data[: len(data) // 2]
    f.write_bytes(bytes(data))


@pytest.mark.parametrize("how", ["flip", "truncate"])
def test_damaged_latest_checkpoint_is_refused_and_resume_falls_back(tiny_config, tmp_path, how, capsys):
    first = train.train_and_evaluate(tiny_config, tmp_path, progress=False)  # 3 epochs, checkpoints 2 and 3 kept
    assert set(json.loads((tmp_path / "checkpoints" / checkpoints.DIGESTS).read_text())) == {"2", "3"}
    restore.restore(tmp_path)  # intact: restores
    _damage(tmp_path, 3, how)
    with pytest.raises(errors.CheckpointDamaged, match="checkpoint of epoch 3 .* is damaged"):
        restore.restore(tmp_path)
    restore.restore(tmp_path, step=2)  # the older one is still good
    (tmp_path / "summary.json").unlink()  # as if killed after the last checkpoint, before the summary
    again = train.train_and_evaluate(tiny_config, tmp_path, progress=False)  # falls back to 2, redoes 3
    assert "skipping the checkpoint of epoch 3" in capsys.readouterr().err
    assert again["members"] == first["members"]  # the redone epoch lands where the damaged one was
    restore.restore(tmp_path)  # the new latest verifies
