"""`fmnist-jax COMMAND [flags]`: a thin entry point (flax-examples style) over the library.

Configs follow ml_collections' convention: `--config configs/default.py[:arg]` and
overrides such as `--config.train.epochs=3`. Bad input (unknown key, wrong type, a
model over budget, missing data) ends with one clear message and exit code 2.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Callable

from absl import flags
from ml_collections import config_flags

from fmnist_jax.data import DataError
from fmnist_jax.models import BudgetError

USAGE = "usage: fmnist-jax {train} --config CONFIG.py[:arg] [--config.KEY=VALUE ...] --workdir DIR"


class UsageError(Exception):
    """Bad command-line input; printed without a traceback."""


def _configs_importable(argv: list[str]) -> None:
    """Let a config file `import configs.x` its siblings wherever the command runs from."""
    for i, a in enumerate(argv):
        path = a.split("=", 1)[1] if a.startswith("--config=") else argv[i + 1] if a == "--config" and i + 1 < len(argv) else None
        if path:
            root = str(Path(path.split(":", 1)[0]).resolve().parent.parent)
            if root not in sys.path:
                sys.path.insert(0, root)


def parse(argv: list[str], define: Callable[[flags.FlagValues], None]) -> flags.FlagValues:
    """Parse `argv` (without the command) into a fresh FlagValues set up by `define`."""
    fv = flags.FlagValues()
    define(fv)
    _configs_importable(argv)
    try:
        fv(["fmnist-jax"] + argv)
    except (flags.Error, KeyError, AttributeError, TypeError, ValueError) as e:
        raise UsageError(str(e).strip() or repr(e)) from e
    missing = [name for name in fv if fv[name].value is None and name in ("config", "workdir")]
    if missing:
        raise UsageError(f"missing --{' --'.join(missing)}")
    return fv


def _train_flags(fv: flags.FlagValues) -> None:
    config_flags.DEFINE_config_file("config", None, "Config file, e.g. configs/default.py[:smoke].", flag_values=fv)
    flags.DEFINE_string("workdir", None, "Where config, record, metrics and summary go.", flag_values=fv)
    flags.DEFINE_bool("progress", True, "Show progress bars.", flag_values=fv)


def cmd_train(argv: list[str]) -> int:
    from fmnist_jax import run  # heavy imports after argument errors are ruled out
    fv = parse(argv, _train_flags)
    summary = run.train_and_evaluate(fv.config, fv.workdir, progress=fv.progress)
    print(run.format_summary(summary))
    print(f"wrote {Path(fv.workdir) / 'summary.json'}")
    return 0


COMMANDS: dict[str, Callable[[list[str]], int]] = {"train": cmd_train}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        print(USAGE.replace("{train}", "{" + ",".join(COMMANDS) + "}"), file=sys.stderr)
        return 0 if argv and argv[0] in ("-h", "--help") else 2
    try:
        return COMMANDS[argv[0]](argv[1:])
    except (UsageError, DataError, BudgetError) as e:
        print(f"fmnist-jax {argv[0]}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
