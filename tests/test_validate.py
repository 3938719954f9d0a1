"""The config validation pass: every bad value named before any work, nothing written."""

import importlib
from pathlib import Path

import pytest

from configs import default
from fmnist_jax import ablation, cli, config_lib, validate

ROOT = Path(__file__).resolve().parents[1]
DEFAULT = str(ROOT / "configs" / "default.py")

BAD = [
    ("train.batch_size", 0, "train.batch_size=0"),
    ("train.epochs", 0, "train.epochs=0"),
    ("train.epochs", -3, "train.epochs=-3"),
    ("eval.batch_size", 0, "eval.batch_size=0"),
    ("cv.k", 1, "cv.k=1"),
    ("cv.folds", (5,), "cv.folds=(5,)"),
    ("cv.folds", (0, 0), "has repeats"),
    ("seeds", (), "seeds=()"),
    ("augment", "flip_lr|twirl", "unknown augmentation"),
    ("augment", "erase(2.0)", "erase(2.0)"),
    ("augment", "crop(-1)", "crop(-1)"),
    ("optim.name", "sgd", "optim.name='sgd'"),
    ("optim.schedule", "linear", "optim.schedule='linear'"),
    ("optim.lr", float("nan"), "optim.lr=nan"),
    ("optim.lr", 0.0, "optim.lr=0.0"),
    ("optim.warmup_epochs", 9.0, "optim.warmup_epochs=9.0"),
    ("members.strategy", "scan", "members.strategy='scan'"),
    ("compile.cpu_conv", "onednn", "compile.cpu_conv='onednn'"),
    ("normalize.std", 0.0, "normalize.std=0.0"),
    ("train.label_smoothing", 1.5, "train.label_smoothing=1.5"),
    ("model.depths", (2, 2), "one entry per stage"),
    ("wandb.mode", "cloud", "wandb.mode='cloud'"),
    ("cv.holdout", False, "cv.folds must be (0,)"),  # the default has 5 folds: all would be the same model
    ("cv.holdout", "no", "cv.holdout='no'"),
    ("eval.tta_shift", 4, "eval.tta_shift=4"),
    ("eval.every_epochs", 0, "eval.every_epochs=0"),
    ("model.se", -1, "model.se=-1"),
    ("train.ema_decay", 1.0, "train.ema_decay=1.0"),  # the average would never leave the initial weights
    ("train.ema_decay", float("nan"), "train.ema_decay=nan"),
]


@pytest.mark.parametrize("key,value,match", BAD, ids=[f"{k}={v}" for k, v, _ in BAD])
def test_bad_values_are_named(key, value, match):
    c = default.get_config()
    *parents, leaf = key.split(".")
    node = c
    for p in parents:
        node = node[p]
    with node.ignore_type():
        node[leaf] = value
    with pytest.raises(validate.ConfigError, match=match.replace("(", r"\(").replace(")", r"\)")):
        validate.check(c)


@pytest.mark.parametrize(
    "name,arg",
    [
        ("default", None),
        ("default", "smoke"),
        ("best", None),
        ("best", "smoke"),
        ("best", "holdout"),
        ("best", "cross_validated"),
        ("seed_study", None),
        ("distill", None),
        ("distill", "smoke"),
        ("distill", "final"),
    ],
)
def test_shipped_configs_are_valid(name, arg):
    validate.check(importlib.import_module(f"configs.{name}").get_config(arg))


@pytest.mark.parametrize("grid", sorted(p.stem for p in (ROOT / "ablations").glob("*.py")))
def test_every_point_of_the_shipped_grids_is_valid(grid):
    module = config_lib.load_module(ROOT / "ablations" / f"{grid}.py")
    for arg in (None, "smoke"):  # every grid takes :smoke the same way
        base = module.get_config(arg)
        for point in ablation.expand(base, module.get_grid(base)):
            validate.check(point.config)


def test_cli_refuses_before_writing_anything(capsys, tmp_path):
    work = tmp_path / "run"
    args = ["train", "--config", DEFAULT, "--workdir", str(work), "--config.train.batch_size=0"]
    assert cli.main(args) == 2
    err = capsys.readouterr().err
    assert "train.batch_size=0" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not work.exists()


def test_repeated_override_is_refused_not_concatenated(capsys, tmp_path):
    args = ["train", "--config", DEFAULT, "--workdir", str(tmp_path / "r")]
    assert cli.main([*args, "--config.cv.folds=(1,)", "--config.cv.folds=(2,)"]) == 2
    assert "--config.cv.folds given more than once" in capsys.readouterr().err


def test_ablate_dry_run_checks_every_point(capsys, tmp_path):
    args = ["ablate", str(ROOT / "ablations" / "augmentation.py"), "--workdir", str(tmp_path), "--dry_run"]
    assert cli.main([*args, "--config.train.batch_size=0"]) == 2
    assert "train.batch_size=0" in capsys.readouterr().err
