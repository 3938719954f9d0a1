"""`fmnist-jax ablate ABLATION.py[:arg] --workdir DIR [--config.KEY=VALUE ...]`: run a grid of configs and compare.

An ablation file (`ablations/*.py`) is code, in the style of big_vision's sweeps:
`get_config(arg)` is the base config, `get_grid(base) -> [(point, {dotted key: value})]`
the points, and `BASELINE` (default: the first point) the reference of the paired tests
(`fmnist_jax.ablation`). A finished point is skipped and an unfinished one resumes, so an
interrupted grid is continued by running the command again. `--point` runs a subset, which
is how `wandb agent` spreads a grid exported with `--export_sweep` over machines.
"""

from __future__ import annotations

import shlex
from pathlib import Path

from absl import flags

from fmnist_jax.commands import parsing


def _define(fv: flags.FlagValues) -> None:
    parsing.define_config(fv)
    flags.DEFINE_string("workdir", None, "One subdirectory per point, plus the table and chart.", flag_values=fv)
    flags.DEFINE_multi_string("point", [], "Run only these points (repeatable); default all.", flag_values=fv)
    flags.DEFINE_string(
        "out", None, "Also write table, chart, summaries and command here (e.g. results/...).", flag_values=fv
    )
    flags.DEFINE_string(
        "export_sweep", None, "Write the grid as a W&B sweep YAML to this path and exit.", flag_values=fv
    )
    flags.DEFINE_bool("dry_run", False, "Expand the grid, check budgets, list the points and exit.", flag_values=fv)
    flags.DEFINE_bool("progress", True, "Show progress bars.", flag_values=fv)


def main(argv: list[str]) -> int:
    if not argv or argv[0].startswith("-"):
        raise parsing.UsageError("usage: fmnist-jax ablate ABLATION.py[:arg] --workdir DIR [--config.KEY=VALUE ...]")
    spec, rest = argv[0], argv[1:]
    fv = parsing.parse(["--config", spec] + rest, _define, required=("workdir",))
    from fmnist_jax import ablation, config_lib  # heavy imports only once the arguments are known good
    from fmnist_jax.errors import Error

    try:
        grid = ablation.from_module(config_lib.load_module(spec.split(":", 1)[0]), fv.config)
    except Error as e:
        raise type(e)(f"{spec}: {e}") from None
    overrides = [a for a in rest if a.startswith("--config.")]
    if fv.export_sweep:
        Path(fv.export_sweep).write_text(ablation.sweep_yaml(spec, grid.points, fv.workdir, overrides))
        print(f"wrote {fv.export_sweep}: `wandb sweep {fv.export_sweep}`, then `wandb agent SWEEP_ID` on each machine")
        return 0
    if fv.dry_run:
        counts = ablation.check_budgets(grid.points)
        for p in grid.points:
            print(f"{p.name:20s} {counts[p.name]:>8,} params  {p.describe()}")
        print(f"{len(grid.points)} points within budget; baseline {grid.baseline}; {ablation.budget_line(grid.points)}")
        return 0
    command = shlex.join(["fmnist-jax", "ablate", *argv])
    table = ablation.run(grid, fv.workdir, fv.point, fv.progress, fv.out, command)
    print(ablation.to_markdown(table, grid.baseline) if table else "no finished points yet")
    print(f"wrote {Path(fv.workdir) / 'table.md'}" + (f" and {fv.out}" if fv.out else ""))
    return 0
