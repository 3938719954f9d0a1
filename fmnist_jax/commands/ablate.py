"""`fmnist-jax ablate ABLATION.py[:arg] --workdir DIR [--config.KEY=VALUE ...]`: run a grid of configs and compare.

An ablation file (`ablations/*.py`) is code, in the style of big_vision's sweeps:
`get_config(arg)` is the base config, `get_grid(base) -> [(point, {dotted key: value})]`
the points, and `BASELINE` (default: the first point) the reference of the paired tests
(`fmnist_jax.ablation`). A finished point is skipped and an unfinished one resumes, so an
interrupted grid is continued by running the command again. `--point` runs a subset, which
is how `wandb agent` spreads a grid exported with `--export_sweep` over machines. `--baseline`
pairs a finished grid against another of its points (into another `--out`) without training
again: whether erasing adds to crop + flip is a question the grid's BASELINE does not ask.
"""

from __future__ import annotations

from pathlib import Path

from absl import flags

from fmnist_jax.commands import parsing


def _define(fv: flags.FlagValues) -> None:
    parsing.define_config(fv)
    flags.DEFINE_string("workdir", None, "One subdirectory per point, and the table unless --out.", flag_values=fv)
    flags.DEFINE_multi_string("point", [], "Run only these points (repeatable); default all.", flag_values=fv)
    flags.DEFINE_string(
        "out",
        None,
        "Write table, chart, summaries and command here instead of --workdir (e.g. results/...).",
        flag_values=fv,
    )
    flags.DEFINE_string("baseline", None, "Compare against this point instead of the grid's BASELINE.", flag_values=fv)
    flags.DEFINE_string(
        "export_sweep", None, "Write the grid as a W&B sweep YAML to this path and exit.", flag_values=fv
    )
    flags.DEFINE_bool("dry_run", False, "Expand the grid, check budgets, list the points and exit.", flag_values=fv)
    flags.DEFINE_bool("progress", True, "Show progress bars.", flag_values=fv)
    flags.DEFINE_enum(
        "pack",
        "auto",
        ["auto", "on", "off"],
        "Train points that share one network (they differ only in augmentation, label smoothing or optimiser "
        "hyperparameters) as one program; auto: on several devices or where members are vmapped (GPU/TPU), not on "
        "one CPU device (results/bench/packing/).",
        flag_values=fv,
    )
    flags.DEFINE_enum(
        "launch", None, ["slurm", "local"], "Submit the points as a job array (submitit) instead.", flag_values=fv
    )
    flags.DEFINE_list(
        "launch_params",
        [],
        "submitit executor parameters KEY=VALUE, e.g. slurm_partition=gpu,timeout_min=120,gpus_per_node=1.",
        flag_values=fv,
    )
    flags.DEFINE_bool("wait", False, "With --launch: wait for every task, then write the table.", flag_values=fv)


def _launch_params(items: list[str]) -> dict[str, int | float | str]:
    """['timeout_min=120', 'slurm_partition=gpu'] -> {'timeout_min': 120, 'slurm_partition': 'gpu'}."""
    out: dict[str, int | float | str] = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise parsing.UsageError(f"--launch_params wants KEY=VALUE items, got {item!r}")
        for kind in (int, float):
            try:
                out[key] = kind(text)
                break
            except ValueError:
                out[key] = text
    return out


def main(argv: list[str]) -> int:
    if argv and argv[0] in ("-h", "--help"):
        print("usage: fmnist-jax ablate ABLATION.py[:arg] --workdir DIR [--config.KEY=VALUE ...] [flags]")
        parsing.parse(argv, _define)  # prints the flags and exits
    if not argv or argv[0].startswith("-"):
        raise parsing.UsageError("usage: fmnist-jax ablate ABLATION.py[:arg] --workdir DIR [--config.KEY=VALUE ...]")
    spec, rest = argv[0], argv[1:]
    fv = parsing.parse(["--config", spec] + rest, _define, required=("workdir",))
    from fmnist_jax import ablation, config_lib, record, writers  # heavy imports only once the arguments are known good
    from fmnist_jax.errors import Error

    try:
        grid = ablation.from_module(config_lib.load_module(spec.split(":", 1)[0]), fv.config, fv.baseline)
    except Error as e:
        raise type(e)(f"{spec}: {e}") from None
    overrides = [a for a in rest if a.startswith("--config.")]
    if fv.export_sweep:
        writers.write_text(fv.export_sweep, ablation.sweep_yaml(spec, grid.points, fv.workdir, overrides))
        print(f"wrote {fv.export_sweep}: `wandb sweep {fv.export_sweep}`, then `wandb agent SWEEP_ID` on each machine")
        return 0
    if fv.dry_run:
        counts = ablation.check_budgets(grid.points)
        for p in grid.points:
            print(f"{p.name:20s} {counts[p.name]:>8,} params  {p.describe()}")
        print(f"{len(grid.points)} points within budget; baseline {grid.baseline}; {ablation.budget_line(grid.points)}")
        return 0
    command = record.command_line(["fmnist-jax", "ablate", *argv])
    if fv.launch:
        from fmnist_jax import cluster

        jobs = cluster.submit(grid, fv.workdir, fv.launch, only=fv.point, parameters=_launch_params(fv.launch_params))
        print(f"submitted {len(jobs)} point(s) to {fv.launch}: {', '.join(j.job_id for j in jobs) or 'all done'}")
        if not fv.wait:
            print("when they have finished, run the same command without --launch to write the table")
            return 0
        for job in jobs:
            job.result()  # raises the task's error, if any
    only = [] if fv.launch else fv.point  # after a launch the table covers every finished point
    table = ablation.run(grid, fv.workdir, only, fv.progress, fv.out, command, fv.pack)
    print(ablation.to_markdown(table, grid.baseline) if table else "no finished points yet")
    print(f"wrote {Path(fv.out or fv.workdir) / 'table.md'}")
    return 0
