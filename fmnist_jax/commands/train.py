"""`fmnist-jax train --config CONFIG.py[:arg] [--config.KEY=VALUE ...] --workdir DIR`."""

from __future__ import annotations

from pathlib import Path

from absl import flags

from fmnist_jax.commands import parsing


def _define(fv: flags.FlagValues) -> None:
    parsing.define_config(fv)
    flags.DEFINE_string("workdir", None, "Where config, record, metrics, checkpoints and summary go.", flag_values=fv)
    flags.DEFINE_bool("progress", True, "Show progress bars.", flag_values=fv)


def main(argv: list[str]) -> int:
    fv = parsing.parse(argv, _define, required=("config", "workdir"))
    from fmnist_jax import train  # heavy imports only once the arguments are known good

    summary = train.train_and_evaluate(fv.config, fv.workdir, progress=fv.progress)
    print(train.format_summary(summary))
    print(f"wrote {Path(fv.workdir) / 'summary.json'}")
    return 0
