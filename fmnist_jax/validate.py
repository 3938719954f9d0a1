"""One pass over a resolved config before any data is read, anything compiles or a workdir is written.

A bad value found an epoch into training (or never: `epochs=0` "succeeded" at 10%) costs
the user the epoch and leaves a half-made workdir; here every key is checked for type and
range and the first bad one is named in a one-line `ConfigError`. `train` and `ablate`
(every grid point, `--dry_run` included) run it first.
"""

from __future__ import annotations

import math
from typing import Any

import ml_collections

from fmnist_jax import augment, backend, members
from fmnist_jax.errors import ConfigError

OPTIMIZERS = ("adam", "adamw")
SCHEDULES = ("constant", "cosine", "onecycle")
WANDB_MODES = ("online", "offline", "disabled")
DATA_SOURCES = ("idx", "tfds")


def _int(c: ml_collections.ConfigDict, key: str, lo: int, hi: float = math.inf) -> int:
    v = _get(c, key)
    if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
        bound = f"an integer >= {lo}" if hi == math.inf else f"an integer in [{lo}, {hi}]"
        raise ConfigError(f"{key}={v!r} must be {bound}")
    return v


def _float(c: ml_collections.ConfigDict, key: str, lo: float, hi: float = math.inf, lo_open: bool = False) -> float:
    v = _get(c, key)
    ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
    if not ok or v > hi or v < lo or (lo_open and v == lo):
        raise ConfigError(
            f"{key}={v!r} must be a finite number {'>' if lo_open else '>='} {lo}"
            + (f" and <= {hi}" if hi != math.inf else "")
        )
    return float(v)


def _choice(c: ml_collections.ConfigDict, key: str, choices: tuple[str, ...]) -> str:
    v = _get(c, key)
    if v not in choices:
        raise ConfigError(f"{key}={v!r} must be one of {', '.join(choices)}")
    return v


def _bool(c: ml_collections.ConfigDict, key: str) -> None:
    if not isinstance(_get(c, key), bool):
        raise ConfigError(f"{key}={_get(c, key)!r} must be true or false")


def _ints(c: ml_collections.ConfigDict, key: str, lo: int, hi: float = math.inf, distinct: bool = True) -> tuple:
    v = _get(c, key)
    if not isinstance(v, (tuple, list)) or not v:
        raise ConfigError(f"{key}={v!r} must be a non-empty tuple of integers")
    for x in v:
        if isinstance(x, bool) or not isinstance(x, int) or not lo <= x <= hi:
            raise ConfigError(f"{key}={tuple(v)!r}: {x!r} is not an integer in [{lo}, {hi}]")
    if distinct and len(set(v)) != len(v):
        raise ConfigError(f"{key}={tuple(v)!r} has repeats")
    return tuple(v)


def _get(c: ml_collections.ConfigDict, key: str) -> Any:
    node: Any = c
    for part in key.split("."):
        if part not in node:
            raise ConfigError(f"config has no key {key!r}")
        node = node[part]
    return node


def check(c: ml_collections.ConfigDict) -> None:
    """Raise ConfigError for the first value of `c` out of type or range (the budget is `models`' job)."""
    if not isinstance(c.get("name"), str) or not c.name:
        raise ConfigError(f"name={c.get('name')!r} must be a non-empty string")
    _ints(c, "seeds", 0)
    k = _int(c, "cv.k", 2)
    _ints(c, "cv.folds", 0, k - 1)
    _int(c, "cv.split_seed", 0)
    _bool(c, "cv.holdout")
    if not c.cv.holdout and tuple(c.cv.folds) != (0,):
        raise ConfigError(
            f"cv.holdout=False trains on all training images: cv.folds must be (0,), got {tuple(c.cv.folds)}"
        )
    _choice(c, "data.source", DATA_SOURCES)
    _bool(c, "data.verify")
    widths, depths = _ints(c, "model.widths", 1, distinct=False), _ints(c, "model.depths", 1, distinct=False)
    if len(widths) != len(depths):
        raise ConfigError(f"model.widths {widths} and model.depths {depths} need one entry per stage")
    if len(widths) > 3:
        raise ConfigError(f"model.widths {widths}: at most 3 stages (each halves 28x28: 28, 14, 7)")
    _bool(c, "model.batch_norm")
    _bool(c, "model.residual")
    _int(c, "model.se", 0, 64)
    _int(c, "max_params", 1)
    try:
        augment.parse(_get(c, "augment"))
    except (ValueError, TypeError, SyntaxError) as e:
        raise ConfigError(f"augment={c.augment!r}: {e}") from None
    _float(c, "normalize.mean", -math.inf)
    _float(c, "normalize.std", 0.0, lo_open=True)
    epochs = _int(c, "train.epochs", 1)
    _int(c, "train.batch_size", 1)
    _int(c, "train.steps_per_epoch", 0)
    _float(c, "train.label_smoothing", 0.0, 0.99)
    _int(c, "eval.every_epochs", 1)
    _float(c, "train.ema_decay", 0.0, 0.99999)
    _choice(c, "optim.name", OPTIMIZERS)
    _float(c, "optim.lr", 0.0, 10.0, lo_open=True)
    _float(c, "optim.weight_decay", 0.0, 1.0)
    _choice(c, "optim.schedule", SCHEDULES)
    _float(c, "optim.warmup_epochs", 0.0, epochs)
    _distill(c)
    _int(c, "eval.batch_size", 1)
    _bool(c, "eval.tta_flip")
    _int(c, "eval.tta_shift", 0, 3)
    _choice(c, "members.strategy", members.STRATEGIES)
    _int(c, "members.devices", 0)
    _choice(c, "compile.cpu_conv", backend.CPU_CONV)
    _int(c, "checkpoint.every_epochs", 0)
    _int(c, "checkpoint.max_to_keep", 0)
    _choice(c, "wandb.mode", WANDB_MODES)
    tags = _get(c, "wandb.tags")
    if not isinstance(tags, (tuple, list)) or not all(isinstance(t, str) and 0 < len(t) <= 64 for t in tags):
        raise ConfigError(f"wandb.tags={tags!r} must be a tuple of W&B tags (strings of 1 to 64 characters)")


def _distill(c: ml_collections.ConfigDict) -> None:
    teachers = _get(c, "distill.teachers")
    if not isinstance(teachers, (tuple, list)) or not all(isinstance(t, str) and t for t in teachers):
        raise ConfigError(f"distill.teachers={teachers!r} must be a tuple of run workdirs (non-empty strings)")
    weight = _float(c, "distill.weight", 0.0, 1.0)
    _float(c, "distill.temperature", 0.0, 100.0, lo_open=True)
    if bool(teachers) != (weight > 0):
        raise ConfigError(
            f"distill.weight={weight} with {len(teachers)} teacher(s): distillation needs both teachers and a "
            "weight above 0 (teachers at weight 0 would cost their forward passes and change nothing)"
        )
