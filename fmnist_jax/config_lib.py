"""Configs as code and as saved data: argument strings, config files, flattening, saved-config upgrades.

Config files (`configs/*.py`, `ablations/*.py`) take one argument string, parsed one way
everywhere (`parse_arg`, after big_vision's `bvcc.parse_arg`), so every config accepts `:smoke`.
A run saves its resolved config as JSON; `config_from_dict` turns it back into the config
that trained, with keys added since (`ADDED_KEYS`) set to the value that reproduces it.
"""

from __future__ import annotations

import copy
import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import ml_collections

from fmnist_jax.errors import ConfigError

# Config keys that say where things are, or how often they are looked at, not what is computed: a resumed run
# may change them. (`data` names where the data is read from; what is read is checked by its digest;
# `eval.every_epochs` how often validation is measured, which never changes the weights.)
MUTABLE_KEYS = ("checkpoint", "wandb", "data", "eval.every_epochs")
# Config keys added after runs were saved without them, with the value that reproduces those runs.
ADDED_KEYS = {
    "eval.tta_flip": False,
    "compile.cpu_conv": "ynnpack",
    "wandb.tags": (),
    "cv.holdout": True,
    "eval.tta_shift": 0,
    "distill.teachers": (),
    "distill.weight": 0.0,
    "distill.temperature": 1.0,
    "train.ema_decay": 0.0,
    "model.se": 0,
    "eval.every_epochs": 1,
}


def under(key: str, prefixes: tuple[str, ...]) -> bool:
    """Whether a flattened (dotted) config key is one of `prefixes` or lies under one."""
    return any(key == p or key.startswith(p + ".") for p in prefixes)


def parse_arg(arg: str | None, **defaults: Any) -> ml_collections.ConfigDict:
    """`'smoke,width=32'` -> ConfigDict(smoke=True, width=32) over `defaults`; unknown names are refused.

    Args:
      arg: the text after `:` in `--config FILE.py:ARG` (None or '' for none).
      **defaults: every name the config file knows, with its default (whose type the value is parsed to).

    Returns:
      A locked ConfigDict of all names.
    """
    out = ml_collections.ConfigDict(defaults)
    for token in filter(None, (arg or "").split(",")):
        name, has_value, text = token.partition("=")
        if name not in defaults:
            raise ConfigError(f"unknown config argument {name!r}; known: {', '.join(defaults) or 'none'}")
        kind = type(defaults[name])
        if not has_value:
            value: Any = True
        elif kind is bool:
            value = {"true": True, "false": False}.get(text.lower())
            if value is None:
                raise ConfigError(f"config argument {name}={text!r} is not true or false")
        else:
            try:
                value = kind(text)
            except ValueError:
                raise ConfigError(f"config argument {name}={text!r} is not a {kind.__name__}") from None
        out[name] = value
    out.lock()
    return out


def make_importable(config_file: str | Path) -> None:
    """Let a config or ablation file `from configs import default` wherever the command runs from.

    Such files live one folder below the repository root (`configs/`, `ablations/`), so that root
    goes on `sys.path`.
    """
    root = str(Path(str(config_file).split(":", 1)[0]).resolve().parent.parent)
    if root not in sys.path:
        sys.path.insert(0, root)


def load_module(path: str | Path) -> ModuleType:
    """Import a config or ablation file by path (ConfigError if there is none)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"no such file {str(path)!r}")
    make_importable(path)
    spec = importlib.util.spec_from_file_location(f"fmnist_config_{path.stem}", path)
    assert spec is not None and spec.loader is not None  # a .py file that exists
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def flatten(tree: dict[str, Any]) -> dict[str, Any]:
    """{'a': {'b': (1, 2)}} -> {'a.b': [1, 2]}: dotted keys, sequences as lists (as they are in JSON)."""
    from flax import traverse_util  # flax (and JAX) load only here: the CLI parses flags with this module

    flat = traverse_util.flatten_dict(tree, sep=".")
    return {k: list(v) if isinstance(v, (tuple, list)) else v for k, v in flat.items()}


def with_added_keys(saved: dict[str, Any]) -> dict[str, Any]:
    """A saved config (nested dict) with every `ADDED_KEYS` entry it predates filled in; the input is not changed."""
    out = copy.deepcopy(saved)
    for dotted, value in ADDED_KEYS.items():
        *parents, leaf = dotted.split(".")
        node = out
        for key in parents:
            node = node.setdefault(key, {})
        node.setdefault(leaf, value)
    return out


def differences(saved: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """'key: saved -> current' for every config key that differs, ignoring `MUTABLE_KEYS` and `name`.

    A key the saved config predates counts as its `ADDED_KEYS` value, so older runs still resume. The name
    says what a run is called, not what it computes, so a grid's baseline finished under another grid's
    name (the same config) counts as done there too (`scripts/study.sh` shares baselines so).
    """
    a, b = flatten(with_added_keys(saved)), flatten(current)
    keys = sorted(
        k
        for k in a.keys() | b.keys()
        if not under(k, (*MUTABLE_KEYS, "name")) and a.get(k, "<absent>") != b.get(k, "<absent>")
    )
    return [f"{k}: {a.get(k, '<absent>')!r} -> {b.get(k, '<absent>')!r}" for k in keys]


def from_dict(saved: dict[str, Any]) -> ml_collections.ConfigDict:
    """A config saved as JSON, with lists turned back into the tuples configs use and keys it predates added."""

    def tuples(x: Any) -> Any:
        if isinstance(x, dict):
            return {k: tuples(v) for k, v in x.items()}
        return tuple(tuples(v) for v in x) if isinstance(x, list) else x

    return ml_collections.ConfigDict(tuples(with_added_keys(saved)))


def with_overrides(base: ml_collections.ConfigDict, overrides: dict[str, Any]) -> ml_collections.ConfigDict:
    """A copy of `base` with dotted-key `overrides`; an unknown key or a value of another type is a ConfigError
    (a typo in a grid must not train silently)."""
    c = ml_collections.ConfigDict(base.to_dict())
    c.lock()
    for key, value in overrides.items():
        try:
            c.update_from_flattened_dict({key: value})
        except (KeyError, TypeError) as e:
            raise ConfigError(f"{key!r}: {e.args[0] if e.args else e}") from None
    c.unlock()
    return c
