"""`fmnist-jax COMMAND [flags]`: a thin dispatcher (flax-examples style) over the command modules.

Each command lives in the module that does its job and exposes `main(argv) -> int`;
imports are lazy so `--help` and argument errors are instant. Bad input (unknown config
key, wrong type, a model over budget, missing or corrupt data) ends with one clear
message and exit code 2, never a traceback; a diverged training stops with one line and exit code 1.
"""

from __future__ import annotations

import importlib
import sys

from fmnist_jax.cmdline import UsageError
from fmnist_jax.errors import BudgetError, CheckpointDamaged, ConfigError, DataError, Diverged, WorkdirBusy

COMMANDS = {
    "train": ("fmnist_jax.train_cli", "train k folds x seeds of a config together"),
    "evaluate": ("fmnist_jax.evaluate", "restore a run's checkpoint and report test metrics"),
    "ablate": ("fmnist_jax.ablate", "run a grid of configs (ablations/*.py) and compare"),
    "predict": ("fmnist_jax.predict", "classify image files with a trained run"),
    "export": ("fmnist_jax.export", "export a trained model as a self-contained artifact"),
    "serve": ("fmnist_jax.serve", "HTTP inference service over an exported model"),
    "report": ("fmnist_jax.report", "figures and a Markdown report for a run or an ablation"),
}


def usage() -> str:
    lines = ["usage: fmnist-jax COMMAND [flags]   (fmnist-jax COMMAND --help for its flags)", "", "commands:"]
    lines += [f"  {name:10s} {text}" for name, (_, text) in COMMANDS.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0 if argv else 2
    if argv[0] not in COMMANDS:
        print(f"fmnist-jax: unknown command {argv[0]!r}\n\n{usage()}", file=sys.stderr)
        return 2
    try:
        module = importlib.import_module(COMMANDS[argv[0]][0])
        return module.main(argv[1:])
    except (UsageError, DataError, BudgetError, ConfigError, WorkdirBusy, CheckpointDamaged) as e:
        print(f"fmnist-jax {argv[0]}: error: {e}", file=sys.stderr)
        return 2
    except (FileExistsError, NotADirectoryError) as e:  # --workdir/--out naming a file
        print(f"fmnist-jax {argv[0]}: error: {e.filename} exists and is not a folder", file=sys.stderr)
        return 2
    except Diverged as e:
        print(f"fmnist-jax {argv[0]}: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
