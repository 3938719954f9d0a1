"""Grids on a cluster: one SLURM array task per ablation point, through submitit.

Why submitit: it is maintained, pickles the job (no shell scripts to template), turns a list of
points into one SLURM job array (`map_array`), and has a local executor that runs the very same
jobs as subprocesses, which is how this is tested without a cluster. Each task trains one point
into the shared workdir layout (`DIR/<point>`, resumable), so a preempted or failed task is
rerun by submitting again: finished points are skipped. The table is written by whoever waits
for the array (`wait=True`), or later by `fmnist-jax ablate` without `--launch`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from fmnist_jax import ablation
from fmnist_jax.errors import ConfigError

CLUSTERS = ("slurm", "local")


def _train_point(point: ablation.Point, workdir: str) -> dict[str, Any]:
    """The array task: train one point (resuming it) and return its summary."""
    ablation.run_grid([point], workdir, progress=False)
    return ablation.read_summary(Path(workdir), point.name)


def submit(
    grid: ablation.Grid,
    workdir: str | Path,
    cluster: str,
    folder: str | Path | None = None,
    only: Sequence[str] = (),
    parameters: dict[str, Any] | None = None,
) -> list[Any]:
    """Submit the grid's unfinished points as one job array; returns the submitit jobs.

    Args:
      grid: from `ablation.load` / `ablation.from_module`.
      workdir: the grid's workdir, on a filesystem every task sees (made absolute here).
      cluster: 'slurm', or 'local' (subprocesses on this machine; what the tests use).
      folder: where submitit keeps logs and pickles (default `WORKDIR/submitit/%j`).
      only: the points to submit (default: every unfinished one).
      parameters: executor parameters, e.g. {'slurm_partition': 'gpu', 'timeout_min': 120, 'gpus_per_node': 1,
        'cpus_per_task': 8, 'slurm_array_parallelism': 4}.

    Returns:
      One job per submitted point, in grid order (`job.result()` waits for its summary).
    """
    import submitit  # only when launching

    if cluster not in CLUSTERS:
        raise ConfigError(f"unknown cluster {cluster!r}; use one of {CLUSTERS}")
    workdir = Path(workdir).resolve()
    unknown = set(only) - {p.name for p in grid.points}
    if unknown:
        raise ConfigError(f"unknown grid point(s) {sorted(unknown)}; grid points: {[p.name for p in grid.points]}")
    todo = [
        p
        for p in grid.points
        if (not only or p.name in only) and ablation.point_status(p, workdir) != "done"  # refuses foreign runs now
    ]
    if not todo:
        return []
    executor = submitit.AutoExecutor(folder=str(folder or workdir / "submitit" / "%j"), cluster=cluster)
    executor.update_parameters(name=f"fmnist-{grid.name}", **(parameters or {}))
    return list(executor.map_array(_train_point, todo, [str(workdir)] * len(todo)))
