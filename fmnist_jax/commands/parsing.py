"""Shared command-line plumbing: parse flags into a fresh FlagValues, with errors as UsageError.

Each command module defines its flags on the FlagValues it is handed and exposes
`main(argv) -> int`; `fmnist_jax.cli` dispatches to it and prints these errors cleanly.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

from absl import flags
from ml_collections import config_flags

from fmnist_jax import config_lib


class UsageError(Exception):
    """Bad command-line input; printed without a traceback."""


def _config_file(argv: list[str]) -> str | None:
    for i, a in enumerate(argv):
        if a.startswith("--config="):
            return a.split("=", 1)[1]
        if a == "--config" and i + 1 < len(argv):
            return argv[i + 1]
    return None


def define_config(fv: flags.FlagValues) -> None:
    """`--config FILE[:arg]` with `--config.KEY=VALUE` overrides (unknown keys are errors)."""
    config_flags.DEFINE_config_file("config", None, "Config file, e.g. configs/default.py[:smoke].", flag_values=fv)


def define_member(fv: flags.FlagValues, help_text: str) -> None:
    """`--member FOLD,SEED`, read back with `member(fv)`."""
    flags.DEFINE_string("member", None, help_text, flag_values=fv)


def define_ema(fv: flags.FlagValues) -> None:
    """`--ema`: the run's weight average (`train.ema_decay`) instead of its weights."""
    flags.DEFINE_bool(
        "ema", False, "Use the run's weight average (train.ema_decay > 0) instead of its weights.", flag_values=fv
    )


def member(fv: flags.FlagValues) -> tuple[int, int] | None:
    """`--member FOLD,SEED` as (fold, seed), or None when not given."""
    if fv.member is None:
        return None
    try:
        fold, seed = (int(x) for x in fv.member.split(","))
    except ValueError as e:
        raise UsageError(f"--member must be FOLD,SEED (two integers), got {fv.member!r}") from e
    return fold, seed


def _one_line(e: Exception) -> str:
    """config_flags wraps KeyErrors whose text comes quoted and escaped; make it one plain line."""
    msg = (str(e.args[0]) if e.args else repr(e)).replace("\\'", "'").replace("\\n", " ").replace("\n", " ")
    return msg[1:-1] if len(msg) > 1 and msg[0] == msg[-1] == "'" else msg


def parse(
    argv: list[str], define: Callable[[flags.FlagValues], None], required: tuple[str, ...] = ()
) -> flags.FlagValues:
    """Parse `argv` (without the command name) into a fresh FlagValues set up by `define`."""
    keys = [a.split("=", 1)[0] for a in argv if a.startswith("--config.")]
    repeated = sorted({k for k in keys if keys.count(k) > 1})
    if repeated:  # absl would concatenate repeated tuple overrides: (1,) and (2,) -> (1, 2)
        raise UsageError(f"{', '.join(repeated)} given more than once")
    fv = flags.FlagValues()
    if "--help" in argv or "-h" in argv:  # a fresh FlagValues has no --help of its own (absl.app defines it)
        define(fv)
        print(fv.get_help(include_special_flags=False) or "(no flags)")
        raise SystemExit(0)
    config_file = _config_file(argv)
    if config_file:
        config_lib.make_importable(config_file)
    saved, sys.argv = sys.argv, ["fmnist-jax"] + argv  # config_flags reads sys.argv to define override flags
    try:
        define(fv)
        fv(sys.argv)
    except (flags.Error, KeyError, AttributeError, TypeError, ValueError) as e:
        raise UsageError(_one_line(e)) from e
    finally:
        sys.argv = saved
    missing = [name for name in required if fv[name].value is None]
    if missing:
        raise UsageError("missing " + " ".join(f"--{m}" for m in missing))
    return fv
