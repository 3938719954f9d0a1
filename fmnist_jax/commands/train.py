"""`fmnist-jax train --config CONFIG.py[:arg] [--config.KEY=VALUE ...] --workdir DIR`.

Multi-process: the same command in every process, with `--coordinator HOST:PORT --num_processes N
--process_id I`, or `--distributed` where the cluster sets them (SLURM, Open MPI); README "Scale out".
"""

from __future__ import annotations

from pathlib import Path

from absl import flags

from fmnist_jax.commands import parsing


def _define(fv: flags.FlagValues) -> None:
    parsing.define_config(fv)
    flags.DEFINE_string("workdir", None, "Where config, record, metrics, checkpoints and summary go.", flag_values=fv)
    flags.DEFINE_bool("progress", True, "Show progress bars.", flag_values=fv)
    flags.DEFINE_string(
        "coordinator",
        None,
        "HOST:PORT of process 0, where the processes of a multi-process run meet (with --num_processes, "
        "--process_id). The workdir must be a folder every process sees.",
        flag_values=fv,
    )
    flags.DEFINE_integer("num_processes", None, "Processes of a multi-process run.", flag_values=fv)
    flags.DEFINE_integer(
        "process_id", None, "This process's index in a multi-process run, 0 to num_processes-1.", flag_values=fv
    )
    flags.DEFINE_bool(
        "distributed",
        False,
        "Join a multi-process run whose processes the cluster describes (SLURM, Open MPI, Cloud TPU, Kubernetes: "
        "jax.distributed.initialize() detects them); implied by --coordinator/--num_processes/--process_id.",
        flag_values=fv,
    )


def main(argv: list[str]) -> int:
    fv = parsing.parse(argv, _define, required=("config", "workdir"))
    from fmnist_jax import distributed, validate  # heavy imports only once the arguments are known good

    if fv.distributed or any(v is not None for v in (fv.coordinator, fv.num_processes, fv.process_id)):
        distributed.check_args(fv.coordinator, fv.num_processes, fv.process_id)
        validate.check(fv.config)  # a bad value stops here, not after the other processes have joined
        distributed.initialize(fv.coordinator, fv.num_processes, fv.process_id)
    from fmnist_jax import train

    summary = train.train_and_evaluate(fv.config, fv.workdir, progress=fv.progress)
    if distributed.is_main():
        print(train.format_summary(summary))
        print(f"wrote {Path(fv.workdir) / 'summary.json'}")
    return 0
