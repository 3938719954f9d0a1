"""`fmnist-jax COMMAND [flags]`: a thin dispatcher (flax-examples style) over `fmnist_jax.commands`.

Each command is one module of `fmnist_jax.commands` with `main(argv) -> int`, imported only when
it is run, so `fmnist-jax --help` loads no JAX. Bad input (unknown config key, wrong type, a model
over budget, missing or corrupt data or checkpoint) ends with one clear message and exit code 2,
never a traceback; a diverged training stops with one line and exit code 1. SIGTERM (a scheduler's, a
session's or `kill`'s stop) unwinds like Ctrl-C (`fmnist_jax.stops`), with one line and exit code 143 (Ctrl-C: 130).
"""

from __future__ import annotations

import importlib
import sys

from fmnist_jax import errors, stops
from fmnist_jax.commands.parsing import UsageError

COMMANDS = {
    "train": ("fmnist_jax.commands.train", "train k folds x seeds of a config together"),
    "evaluate": ("fmnist_jax.commands.evaluate", "restore a run's checkpoint and report test metrics"),
    "ablate": ("fmnist_jax.commands.ablate", "run a grid of configs (ablations/*.py) and compare"),
    "predict": ("fmnist_jax.commands.predict", "classify image files with a trained run"),
    "export": ("fmnist_jax.commands.export", "export a trained model as a self-contained artifact"),
    "serve": ("fmnist_jax.commands.serve", "HTTP inference service over an exported model"),
    "monitor": ("fmnist_jax.commands.monitor", "plots and a report of a served model's monitoring store"),
    "retrain": ("fmnist_jax.commands.retrain", "fine-tune a run on new labelled images; export if the gate passes"),
    "report": ("fmnist_jax.commands.report", "figures and a Markdown report for a run or an ablation"),
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
    with stops.sigterm_unwinds():
        try:
            module = importlib.import_module(COMMANDS[argv[0]][0])
            return module.main(argv[1:])
        except KeyboardInterrupt as e:
            sigterm = e.args == ("SIGTERM",)
            print(f"fmnist-jax {argv[0]}: stopped by {'SIGTERM' if sigterm else 'Ctrl-C'}", file=sys.stderr)
            return 143 if sigterm else 130
        except (UsageError, errors.Error) as e:
            print(f"fmnist-jax {argv[0]}: error: {e}", file=sys.stderr)
            return 2
        except (FileExistsError, NotADirectoryError) as e:  # --workdir/--out naming a file
            print(f"fmnist-jax {argv[0]}: error: {e.filename} exists and is not a folder", file=sys.stderr)
            return 2
        except errors.Diverged as e:
            print(f"fmnist-jax {argv[0]}: {e}", file=sys.stderr)
            return 1


if __name__ == "__main__":
    sys.exit(main())
