"""The member axis: together must equal alone, for every strategy; on any device count, padded, equal to one device.

Tolerances: vmap lowers to grouped convolutions whose float sums associate differently,
and Adam amplifies that in near-zero gradients (seen: 2e-5 absolute after 10 steps).
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import tiny

from fmnist_jax import checkpoints, config_lib, data, errors, members, restore, train
from fmnist_jax.writers import read_jsonl

ROOT = Path(__file__).resolve().parent.parent


def _train_members(cfg, folds, epochs=1):
    cfg = cfg.copy_and_resolve_references()
    cfg.cv.folds = folds
    exp = train.setup(cfg)
    state = train.init_state(exp)
    for epoch in range(epochs):
        state, _ = train.train_epoch(exp, state, epoch, progress=False)
    return exp, state


@pytest.mark.parametrize("strategy", ["unroll", "vmap"])
def test_member_trained_together_equals_alone(tiny_config, strategy):
    tiny_config.members.strategy = strategy
    _, together = _train_members(tiny_config, (0, 1))
    for i, fold in enumerate((0, 1)):
        _, alone = _train_members(tiny_config, (fold,))
        chex.assert_trees_all_close(
            members.unstack(together.params, i), members.unstack(alone.params, 0), rtol=1e-4, atol=1e-4
        )
        chex.assert_trees_all_close(
            members.unstack(together.batch_stats, i), members.unstack(alone.batch_stats, 0), rtol=1e-4, atol=1e-4
        )


def test_members_differ(tiny_config):
    _, state = _train_members(tiny_config, (0, 1))
    a, b = members.unstack(state.params, 0), members.unstack(state.params, 1)
    assert not all(jax.tree.leaves(jax.tree.map(lambda x, y: bool((x == y).all()), a, b)))


def test_strategy_resolution():
    assert members.resolve_strategy("auto") == ("unroll" if jax.default_backend() == "cpu" else "vmap")
    with pytest.raises(ValueError, match="strategy"):
        members.resolve_strategy("scan")


def test_mesh_divides_members():
    assert members.make_mesh(6).size in {d for d in range(1, len(jax.devices()) + 1) if 6 % d == 0}
    assert members.make_mesh(5, max_devices=1).size == 1


@pytest.mark.parametrize(
    "n_members,processes,local,cap,want",
    [
        (5, 1, 4, 0, 3),  # 2 slots per device either way: 3 devices pad one copy, 4 would pad three
        (5, 1, 2, 0, 2),
        (6, 1, 4, 0, 3),
        (7, 1, 4, 0, 4),
        (4, 1, 8, 0, 4),  # never more devices than members
        (5, 1, 4, 1, 1),  # members.devices caps the total
        (5, 2, 2, 0, 2),  # 2 processes x 2 devices: 8 slots
        (1, 2, 4, 0, 1),  # every process holds a device, even with fewer members
    ],
)
def test_devices_per_process_gives_each_device_the_fewest_members(n_members, processes, local, cap, want):
    assert members.devices_per_process(n_members, processes, local, cap) == want


def test_a_multiprocess_run_needs_a_device_in_every_process():
    with pytest.raises(errors.ConfigError, match="members.devices=1 is below the 2 processes"):
        members.devices_per_process(5, 2, 1, 1)


def test_padding_copies_the_first_members_and_unpad_drops_them():
    assert members.padded(["a", "b", "c"], 4) == ["a", "b", "c", "a"]
    mesh = members.make_mesh(1)
    tree = {"w": jnp.arange(6.0).reshape(3, 2)}
    assert members.pad(tree, mesh) is tree and members.unpad(tree, 3, mesh) is tree  # nothing to pad on 1 device


# Trains the config saved as JSON in argv[1] into workdir argv[2] on the devices JAX was given (members over as many
# as help: `members.devices=0`), and into argv[3] on one of them; reports what each used.
DRIVER = """
import json, sys
from pathlib import Path
import jax
from fmnist_jax import config_lib, train
config = config_lib.from_dict(json.loads(Path(sys.argv[1]).read_text()))
seen = {"device_count": jax.device_count()}
for devices, workdir in ((0, sys.argv[2]), (1, sys.argv[3])):
    config.members.devices = devices
    summary = train.train_and_evaluate(config, workdir, progress=False)
    seen[devices] = [summary["devices"], summary["member_slots"]]
config.members.devices = 0
other = config_lib.with_overrides(config, {"augment": "crop(2)", "optim.lr": 3e-3, "name": "other"})
packed = train.train_packed([(config, sys.argv[4]), (other, sys.argv[5])], progress=False)
seen["packed"] = [packed[0]["devices"], packed[0]["member_slots"]]
print(json.dumps(seen))
"""


def _five_members(data_dir: Path):
    c = tiny(data_dir)
    c.cv.k, c.cv.folds, c.train.epochs, c.train.steps_per_epoch = 5, (0, 1, 2, 3, 4), 2, 6
    return c


@pytest.fixture(scope="module")
def one_device(tmp_path_factory, tiny_data_dir):
    """5 members trained in this process, on its one device: (config, workdir, summary)."""
    config, workdir = _five_members(tiny_data_dir), tmp_path_factory.mktemp("one_device")
    assert jax.device_count() == 1
    return config, workdir, train.train_and_evaluate(config, workdir, progress=False)


@pytest.fixture(scope="module")
def four_devices(tmp_path_factory, tiny_data_dir):
    """The same 5 members trained in a subprocess that sees 4 host CPU devices, sharded and padded
    (`run`) and on one of its devices (`run_1`): (folder, what it reports)."""
    tmp = tmp_path_factory.mktemp("four_devices")
    (tmp / "config.json").write_text(json.dumps(_five_members(tiny_data_dir).to_dict()))
    env = dict(os.environ, PYTHONPATH=str(ROOT), JAX_NUM_CPU_DEVICES="4")
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            DRIVER,
            *(str(tmp / n) for n in ("config.json", "run", "run_1", "packed_a", "packed_b")),
        ],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=400,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return tmp, json.loads(done.stdout.strip().splitlines()[-1])


def test_padding_and_sharding_change_no_member(four_devices):
    tmp, seen = four_devices
    # it really ran sharded, with a padding slot: 2 slots on each of 3 of the 4 devices; and unpadded on one
    assert seen == {"device_count": 4, "0": [3, 6], "1": [1, 5], "packed": [4, 12]}
    summary = json.loads((tmp / "run" / "summary.json").read_text())
    assert [(m["fold"], m["seed"]) for m in summary["members"]] == [(f, 0) for f in range(5)]  # the copy is dropped
    # bitwise: each member's computation reads only its own slice, on whichever device and beside whatever copy
    assert read_jsonl(tmp / "run" / "metrics.jsonl") == read_jsonl(tmp / "run_1" / "metrics.jsonl")
    assert summary["members"] == json.loads((tmp / "run_1" / "summary.json").read_text())["members"]
    chex.assert_trees_all_equal(restore.restore(tmp / "run").variables, restore.restore(tmp / "run_1").variables)


def test_five_members_on_four_devices_equal_one_device(one_device, four_devices):
    _, ref_dir, ref = one_device
    workdir = four_devices[0] / "run"
    summary = json.loads((workdir / "summary.json").read_text())
    chex.assert_trees_all_close(summary["members"], ref["members"], rtol=1e-5)
    rows, ref_rows = read_jsonl(workdir / "metrics.jsonl"), read_jsonl(ref_dir / "metrics.jsonl")
    assert [(r["member"], r["epoch"]) for r in rows] == [(r["member"], r["epoch"]) for r in ref_rows]
    chex.assert_trees_all_close(rows, ref_rows, rtol=1e-5)
    meta = checkpoints.read_meta(mngr := checkpoints.manager(workdir, create=False))[1]
    mngr.close()
    assert meta["members"] == [{"fold": f, "seed": 0} for f in range(5)]  # no padding slot in the checkpoint
    # A checkpoint trained on 4 devices restores here, on 1, with the 5 real members, and evaluates as training did.
    # (Its parameters are not compared with the 1-device run's: XLA:CPU given 4 host devices rounds ~1e-6 apart from
    # XLA:CPU given 1, bitwise the same with all members on one of the 4 (the test above), and over 24 Adam steps a
    # BatchNorm variance drifts 0.4%; the metrics above agree to 1e-5.)
    run = restore.restore(workdir)
    assert run.members == [members.Member(f, 0) for f in range(5)] and run.mesh.size == 1
    assert jax.tree.leaves(run.variables)[0].shape[0] == 5
    test = data.for_config(run.config, run.data_digest)
    metrics, logits = run.evaluate(test.test_images, test.test_labels)
    assert logits.shape == (5, len(test.test_labels), 10)
    np.testing.assert_allclose(metrics["loss"], [m["test_loss"] for m in summary["members"]], rtol=1e-5)
    np.testing.assert_allclose(metrics["accuracy"], [m["test_accuracy"] for m in summary["members"]])


def test_packed_points_on_four_devices_equal_one_device(tiny_data_dir, four_devices, tmp_path):
    """Two points of 5 members packed as 12 slots on 4 host devices (two of them copies), against the same packed
    run on this process's one device."""
    a = _five_members(tiny_data_dir)
    b = config_lib.with_overrides(a, {"augment": "crop(2)", "optim.lr": 3e-3, "name": "other"})
    ref = train.train_packed([(a, tmp_path / "a"), (b, tmp_path / "b")], progress=False)
    for name, want in zip(("packed_a", "packed_b"), ref):
        got = json.loads((four_devices[0] / name / "summary.json").read_text())
        chex.assert_trees_all_close(got["members"], want["members"], rtol=1e-5)
        chex.assert_trees_all_close(
            read_jsonl(four_devices[0] / name / "metrics.jsonl"),
            read_jsonl(tmp_path / name[-1] / "metrics.jsonl"),
            rtol=1e-5,
        )
    assert ref[0]["members"] != ref[1]["members"]


def test_a_four_device_checkpoint_resumes_on_one_device(one_device, four_devices, tmp_path):
    config, _, ref = one_device
    workdir = tmp_path / "run"
    shutil.copytree(four_devices[0] / "run", workdir)
    shutil.rmtree(workdir / "checkpoints" / "2")  # as if killed during epoch 2
    (workdir / "summary.json").unlink()
    resumed = train.train_and_evaluate(config, workdir, progress=False)
    assert json.loads((workdir / "record.json").read_text())["resumed_from_epoch"] == 1
    assert resumed["devices"] == 1 and resumed["member_slots"] == 5
    chex.assert_trees_all_close(resumed["members"], ref["members"], rtol=1e-5)
