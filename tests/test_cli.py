"""The command line: overrides, clear errors, a full tiny run."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from fmnist_jax import cli

ROOT = Path(__file__).resolve().parents[1]
DEFAULT = str(ROOT / "configs" / "default.py")


@pytest.mark.parametrize(
    "args,match",
    [
        (["--config.train.epochz=3"], "epochz"),
        (["--config.train.epochs=abc"], "invalid literal"),
        (["--config.model.widths=(64,128,128)"], "408,394 parameters"),
        (["--config.data.dir=/nonexistent"], "apt-get install"),
    ],
)
def test_errors_are_one_line_and_exit_2(args, match, capsys, tmp_path):
    assert cli.main(["train", "--config", DEFAULT, "--workdir", str(tmp_path), *args]) == 2
    err = capsys.readouterr().err
    assert match in err and "Traceback" not in err


def test_workdir_naming_a_file_is_one_line(capsys, tmp_path):
    (tmp_path / "f").write_text("")
    args = ["train", "--config", f"{DEFAULT}:smoke", "--workdir", str(tmp_path / "f" / "run")]
    assert cli.main(args) == 2
    err = capsys.readouterr().err
    assert "exists and is not a folder" in err and "Traceback" not in err


def test_missing_flags_and_unknown_command(capsys):
    assert cli.main(["train", "--config", DEFAULT]) == 2
    assert "missing --workdir" in capsys.readouterr().err
    assert cli.main(["fly"]) == 2
    assert cli.main(["--help"]) == 0


@pytest.mark.parametrize("command", sorted(cli.COMMANDS))
def test_every_command_has_help(command, capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main([command, "--help"])
    assert exit_.value.code == 0
    assert "--" in capsys.readouterr().out  # its flags, with their help


def test_console_script_trains_with_overrides(tiny_data_dir, tmp_path):
    cmd = [
        sys.executable,
        "-m",
        "fmnist_jax.cli",
        "train",
        "--config",
        f"{DEFAULT}",
        "--workdir",
        str(tmp_path),
        f"--config.data.dir={tiny_data_dir}",
        "--config.data.verify=False",
        "--config.cv.k=3",
        "--config.cv.folds=(0,)",
        "--config.model.widths=(4,8)",
        "--config.model.depths=(1,1)",
        "--config.train.epochs=1",
        "--config.train.batch_size=32",
        "--noprogress",
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert out.returncode == 0, out.stderr
    cfg = json.loads((tmp_path / "config.json").read_text())
    assert cfg["model"]["widths"] == [4, 8] and cfg["cv"]["folds"] == [0]
    assert "test acc" in out.stdout
