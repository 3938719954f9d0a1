"""Multi-process runs: 2 processes on 127.0.0.1 (gloo collectives, one CPU device each) equal one process.

Each run is the real command (`fmnist-jax train --coordinator ... --num_processes 2 --process_id I`) in two
subprocesses; 3 members on 2 devices also pads the member axis with a copy (4 slots). Checkpoints move
between process counts both ways.
"""

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import chex
import jax
import pytest
from conftest import tiny

from fmnist_jax import checkpoints, cli, config_lib, distributed, errors, restore, train
from fmnist_jax.writers import read_jsonl

ROOT = Path(__file__).resolve().parent.parent
TIMEOUT_S = 300  # per 2-process run; a process whose peer died waits for JAX's heartbeat timeout, then fails

# A config file that returns the config saved next to it as JSON, so the processes train exactly the reference's.
CONFIG_FILE = """
import json
from pathlib import Path
from fmnist_jax import config_lib

def get_config(arg=None):
    return config_lib.from_dict(json.loads((Path(__file__).parent / "config.json").read_text()))
"""


def _three_members(data_dir: Path):
    c = tiny(data_dir)
    c.cv.folds, c.train.epochs, c.train.steps_per_epoch = (0, 1, 2), 2, 6
    return c


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _two_processes(tmp: Path, config, workdir: Path) -> list[subprocess.CompletedProcess]:
    """Train `config` into `workdir` with 2 processes that meet on 127.0.0.1; their exit codes and output."""
    tmp.mkdir(parents=True, exist_ok=True)
    (tmp / "config.json").write_text(json.dumps(config.to_dict()))
    (tmp / "tiny_config.py").write_text(CONFIG_FILE)
    port = _free_port()
    env = dict(os.environ, PYTHONPATH=str(ROOT), JAX_NUM_CPU_DEVICES="1")
    args = [sys.executable, "-m", "fmnist_jax.cli", "train", "--config", str(tmp / "tiny_config.py")]
    args += ["--workdir", str(workdir), "--noprogress", "--coordinator", f"127.0.0.1:{port}", "--num_processes", "2"]
    procs = [
        subprocess.Popen(
            [*args, "--process_id", str(i)],
            env=env,
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    done = []
    try:
        for p in procs:
            out, err = p.communicate(timeout=TIMEOUT_S)
            done.append(subprocess.CompletedProcess(p.args, p.returncode, out, err))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    for i, d in enumerate(done):
        assert d.returncode == 0, f"process {i}: {d.stderr[-3000:]}"
    return done


@pytest.fixture(scope="module")
def reference(tmp_path_factory, tiny_data_dir):
    """3 members trained by this one process on its one device: (config, workdir, summary)."""
    config, workdir = _three_members(tiny_data_dir), tmp_path_factory.mktemp("one_process")
    assert jax.process_count() == 1 and jax.device_count() == 1
    return config, workdir, train.train_and_evaluate(config, workdir, progress=False)


@pytest.fixture(scope="module")
def two_processes(reference, tmp_path_factory):
    """The reference's config trained from scratch by 2 processes: (workdir, their outputs)."""
    tmp = tmp_path_factory.mktemp("two_processes")
    config = config_lib.from_dict(reference[0].to_dict())
    config.wandb.mode = "offline"  # where results go (W&B) may differ from the reference; what is computed may not
    return tmp / "run", _two_processes(tmp, config, tmp / "run")


def _assert_same_run(workdir: Path, ref_dir: Path, ref_summary: dict) -> dict:
    summary = json.loads((workdir / "summary.json").read_text())
    chex.assert_trees_all_close(summary["members"], ref_summary["members"], rtol=1e-5)
    rows, ref_rows = read_jsonl(workdir / "metrics.jsonl"), read_jsonl(ref_dir / "metrics.jsonl")
    # each (member, epoch) once: one process wrote them; the padding copy is not among them
    assert [(r["member"], r["fold"], r["epoch"]) for r in rows] == [
        (r["member"], r["fold"], r["epoch"]) for r in ref_rows
    ]
    chex.assert_trees_all_close(rows, ref_rows, rtol=1e-5)
    return summary


def test_two_processes_train_what_one_does(reference, two_processes):
    config, ref_dir, ref_summary = reference
    workdir, (p0, p1) = two_processes
    summary = _assert_same_run(workdir, ref_dir, ref_summary)
    # it really ran as 2 processes of one device each, the 3 members padded to 4 slots
    assert (summary["processes"], summary["devices"], summary["member_slots"]) == (2, 2, 4)
    record = json.loads((workdir / "record.json").read_text())
    assert record["processes"] == 2 and len(record["devices"]) == 2
    assert config_lib.differences(json.loads((workdir / "config.json").read_text()), config.to_dict()) == []
    assert "wrote" in p0.stdout and "wrote" not in p1.stdout and "tiny:" not in p1.stdout  # process 0 alone reports
    # one W&B run per real member, from one process (two would make 6, a padding copy a 4th)
    assert len(list((workdir / "wandb").glob("offline-run-*"))) == 3
    assert sorted(json.loads((workdir / "wandb_runs.json").read_text())) == [f"fold{f}_seed0" for f in range(3)]
    mngr = checkpoints.manager(workdir, create=False)
    assert mngr.all_steps() == [1, 2] and len(checkpoints.read_meta(mngr)[1]["members"]) == 3
    mngr.close()
    # the 2-process checkpoint restores in this single process, on one device
    chex.assert_trees_all_close(
        restore.restore(workdir).variables, restore.restore(ref_dir).variables, rtol=1e-5, atol=1e-6
    )


def test_a_two_process_checkpoint_resumes_in_one_process(reference, two_processes, tmp_path):
    config, ref_dir, ref_summary = reference
    workdir = tmp_path / "run"
    shutil.copytree(two_processes[0], workdir)
    shutil.rmtree(workdir / "checkpoints" / "2")  # as if killed during epoch 2
    (workdir / "summary.json").unlink()
    resumed = train.train_and_evaluate(config, workdir, progress=False)
    assert json.loads((workdir / "record.json").read_text())["resumed_from_epoch"] == 1
    assert (resumed["processes"], resumed["member_slots"]) == (1, 3)
    _assert_same_run(workdir, ref_dir, ref_summary)


def test_two_processes_resume_a_one_process_checkpoint(reference, tmp_path):
    config, ref_dir, ref_summary = reference
    workdir = tmp_path / "run"
    shutil.copytree(ref_dir, workdir)
    shutil.rmtree(workdir / "checkpoints" / "2")
    (workdir / "summary.json").unlink()
    _two_processes(tmp_path, config, workdir)
    assert json.loads((workdir / "record.json").read_text())["resumed_from_epoch"] == 1
    assert json.loads((workdir / "summary.json").read_text())["processes"] == 2
    _assert_same_run(workdir, ref_dir, ref_summary)


@pytest.mark.parametrize(
    "flags,message",
    [
        (["--num_processes", "2", "--process_id", "2"], "--process_id=2 must be in [0, 2)"),
        (["--coordinator", "127.0.0.1", "--num_processes", "2", "--process_id", "0"], "must be HOST:PORT"),
        (["--num_processes", "0"], "--num_processes=0 must be at least 1"),
        # a bad config value stops before joining (nothing listens on port 1: joining would wait, not fail)
        (
            ["--coordinator", "127.0.0.1:1", "--num_processes", "2", "--process_id", "1", "--config.train.epochs=0"],
            "train.epochs=0",
        ),
    ],
)
def test_bad_flags_stop_before_joining(tiny_data_dir, tmp_path, capsys, flags, message):
    args = ["train", "--config", str(ROOT / "configs" / "default.py"), "--workdir", str(tmp_path / "w")]
    args += [f"--config.data.dir={tiny_data_dir}", "--config.data.verify=false", *flags]
    assert cli.main(args) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert not (tmp_path / "w").exists()


def test_one_process_helpers_need_no_peers():
    assert distributed.is_main() and distributed.broadcast(7) == 7
    distributed.check_same({"a": 1}, "config")  # one process: nothing to compare
    with pytest.raises(errors.ConfigError, match="--coordinator='host:0' must be HOST:PORT"):
        distributed.check_args("host:0", None, None)
