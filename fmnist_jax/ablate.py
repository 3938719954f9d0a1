"""`fmnist-jax ablate ABLATION.py[:arg] --workdir DIR [--config.KEY=VALUE ...]`: run a grid of configs and compare.

An ablation file (`ablations/*.py`) is code, in the style of big_vision's sweeps:
`get_config(arg)` is the base config, `get_grid(base) -> [(point, {dotted key: value})]`
the points, and `BASELINE` (default: the first point) the reference of the paired tests.
Every point is built and checked against the parameter budget before anything trains.
Each point trains its folds x seeds together (`run.train_and_evaluate`, members sharded
over whatever devices JAX sees) in `DIR/<point>`; a finished point is skipped and an
unfinished one resumes, so an interrupted grid is continued by running the command
again. `--point` runs a subset, which is how `wandb agent` spreads a grid exported with
`--export_sweep` over machines. The table (CSV, Markdown) and chart cover finished points.
"""

from __future__ import annotations

import csv
import dataclasses
import importlib.util
import json
import re
import shlex
import shutil
import sys
import time
from pathlib import Path
from types import ModuleType
from typing import Any
from collections.abc import Sequence

import ml_collections
import numpy as np
import yaml
from absl import flags
from matplotlib.figure import Figure
from scipy import stats

from fmnist_jax import checkpoints, cmdline, models, plots, validate
from fmnist_jax.writers import write_json

Table = list[dict[str, Any]]
COLUMNS = (
    "point",
    "overrides",
    "params",
    "flops_per_image",
    "members",
    "val_acc_mean",
    "val_acc_std",
    "test_acc_mean",
    "test_acc_std",
    "test_delta",
    "test_p",
    "val_delta",
    "val_p",
    "wall_s",
)


@dataclasses.dataclass(frozen=True)
class Point:
    name: str
    overrides: dict[str, Any]
    config: ml_collections.ConfigDict

    def describe(self) -> str:
        return " ".join(f"{k}={_fmt_value(v)}" for k, v in self.overrides.items())


def _fmt_value(v: Any) -> str:
    return ",".join(map(str, v)) if isinstance(v, (tuple, list)) else str(v)


def load_grid_module(path: str | Path) -> ModuleType:
    """Import an ablation file by path (`configs` importable from its repository root)."""
    path = Path(path)
    root = str(path.resolve().parent.parent)
    if root not in sys.path:
        sys.path.insert(0, root)
    if not path.is_file():
        raise cmdline.UsageError(f"no ablation file {str(path)!r}")
    spec = importlib.util.spec_from_file_location(f"fmnist_ablation_{path.stem}", path)
    assert spec is not None and spec.loader is not None  # a .py file that exists
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _set(config: ml_collections.ConfigDict, dotted: str, value: Any) -> None:
    """config[dotted] = value, refusing keys the base config lacks (a typo must not train silently)."""
    *parents, leaf = dotted.split(".")
    node = config
    for key in parents:
        node = node[key] if isinstance(node, ml_collections.ConfigDict) and key in node else None
        if node is None:
            raise KeyError(f"grid key {dotted!r} is not in the config")
    if not isinstance(node, ml_collections.ConfigDict) or leaf not in node:
        raise KeyError(f"grid key {dotted!r} is not in the config")
    node[leaf] = value


def expand(base: ml_collections.ConfigDict, grid: Sequence[tuple[str, dict[str, Any]]]) -> list[Point]:
    """One full config per grid point: the base (without its `grid` options) plus the point's values.

    W&B runs, when configured, are grouped by ablation with the point as job type.
    """
    points, seen = [], set()
    for name, overrides in grid:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.+-]*", name) or name in seen:
            raise ValueError(f"grid point name {name!r} is empty, repeated or not usable as a directory name")
        seen.add(name)
        c = ml_collections.ConfigDict(base.to_dict())
        if "grid" in c:
            del c["grid"]
        for key, value in overrides.items():
            _set(c, key, value)
        c.name = f"{base.name}-{name}"
        if "wandb" in c:
            c.wandb.group, c.wandb.job_type = base.name, name
        points.append(Point(name, dict(overrides), c))
    if not points:
        raise ValueError("the grid has no points")
    return points


def check_budgets(points: Sequence[Point]) -> dict[str, int]:
    """Parameter count per point; ConfigError for a bad value, BudgetError naming every over-budget point
    (nothing has trained yet)."""
    counts, over = {}, []
    for p in points:
        try:
            validate.check(p.config)
        except validate.ConfigError as e:
            raise validate.ConfigError(f"grid point {p.name}: {e}") from None
        counts[p.name] = n = models.count_params(models.build(p.config))
        if n > p.config.max_params:
            over.append(f"{p.name} has {n:,} (limit {p.config.max_params:,})")
    if over:
        raise models.BudgetError(
            f"{len(over)} of {len(points)} grid points over the parameter budget: " + "; ".join(over)
        )
    return counts


def point_status(point: Point, workdir: Path) -> str:
    """'done', 'partial' (resumable) or 'new'; a directory left by a different config is an error.

    Checked here, before any point trains, so a changed grid or override cannot mix runs into one table.
    """
    d = workdir / point.name
    if not (d / "config.json").exists():
        return "new"
    diffs = checkpoints.config_differences(json.loads((d / "config.json").read_text()), point.config.to_dict())
    if diffs:
        raise cmdline.UsageError(
            f"{d} holds a run of a different config ({'; '.join(diffs)}); "
            "use another --workdir, or delete that directory to redo the point"
        )
    return "done" if (d / "summary.json").exists() else "partial"


def run_grid(points: Sequence[Point], workdir: str | Path, only: Sequence[str] = (), progress: bool = True) -> None:
    """Train every (selected) point that has not finished; each point's wall time accumulates in ablate.json."""
    from fmnist_jax import run  # heavy imports only once the grid is known good

    workdir = Path(workdir)
    unknown = set(only) - {p.name for p in points}
    if unknown:
        raise cmdline.UsageError(f"unknown --point {sorted(unknown)}; grid points: {[p.name for p in points]}")
    selected = [p for p in points if not only or p.name in only]
    statuses = [point_status(p, workdir) for p in selected]
    for i, (p, status) in enumerate(zip(selected, statuses)):
        head = f"[{i + 1}/{len(selected)}] {p.name} ({p.describe()})"
        if status == "done":
            print(f"{head}: finished, skipped")
            continue
        print(f"{head}: {'resuming' if status == 'partial' else 'training'}", flush=True)
        d = workdir / p.name
        d.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        try:
            summary = run.train_and_evaluate(p.config, d, progress=progress)
        finally:
            record = json.loads((d / "ablate.json").read_text()) if (d / "ablate.json").exists() else {}
            record["wall_s"] = record.get("wall_s", 0.0) + time.perf_counter() - t0
            write_json(d / "ablate.json", record, indent=None)
        print(run.format_summary(summary), flush=True)


def paired(a: Sequence[dict], b: Sequence[dict], key: str) -> tuple[float, float]:
    """Mean of b - a over the same (fold, seed) members, and the paired t-test's two-sided p-value.

    NaN when the two points do not share exactly the same members, or (p only) with fewer than two.
    """
    va = {(m["fold"], m["seed"]): m[key] for m in a}
    vb = {(m["fold"], m["seed"]): m[key] for m in b}
    if set(va) != set(vb):
        return float("nan"), float("nan")
    order = sorted(va)
    x, y = np.array([va[k] for k in order]), np.array([vb[k] for k in order])
    delta = float((y - x).mean())
    if len(order) < 2 or np.all(y - x == (y - x)[0]):
        return delta, float("nan")  # no spread of differences: the t statistic is undefined
    return delta, float(stats.ttest_rel(y, x).pvalue)


def build_table(points: Sequence[Point], workdir: str | Path, baseline: str) -> Table:
    """One row per finished point (see COLUMNS); deltas and p-values are paired against `baseline`."""
    workdir = Path(workdir)
    summaries = {
        p.name: json.loads((workdir / p.name / "summary.json").read_text())
        for p in points
        if (workdir / p.name / "summary.json").exists()
    }
    ref = summaries.get(baseline)
    rows = []
    for p in points:
        s = summaries.get(p.name)
        if s is None:
            continue
        extra = workdir / p.name / "ablate.json"
        row = {
            "point": p.name,
            "overrides": p.describe(),
            "params": s["params"],
            "flops_per_image": s["flops_per_image"],
            "members": len(s["members"]),
            "val_acc_mean": s["val_accuracy"]["mean"],
            "val_acc_std": s["val_accuracy"]["std"],
            "test_acc_mean": s["test_accuracy"]["mean"],
            "test_acc_std": s["test_accuracy"]["std"],
            "wall_s": json.loads(extra.read_text())["wall_s"] if extra.exists() else float("nan"),
        }
        for split in ("test", "val"):
            row[f"{split}_delta"], row[f"{split}_p"] = (
                paired(ref["members"], s["members"], f"{split}_accuracy")
                if ref and p.name != baseline
                else (float("nan"), float("nan"))
            )
        rows.append(row)
    return rows


def write_csv(table: Table, path: str | Path) -> None:
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=COLUMNS)
        w.writeheader()
        w.writerows(table)


def _pct(mean: float, std: float) -> str:
    return f"{100 * mean:.2f} ± {100 * std:.2f}"


def _delta(d: float, p: float) -> str:
    if np.isnan(d):
        return "—"
    return f"{100 * d:+.2f} (p={p:.3f})" if not np.isnan(p) else f"{100 * d:+.2f} (p n/a)"


def to_markdown(table: Table, baseline: str) -> str:
    """A Markdown table; accuracies in %, deltas (points - baseline) with paired t-test p-values."""
    lines = [
        "| point | overrides | params | MFLOPs/img | members | val acc % | test acc % | "
        f"Δ test vs {baseline} | Δ val vs {baseline} | wall s |",
        "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for r in table:
        name = f"**{r['point']}**" if r["point"] == baseline else r["point"]
        overrides = r["overrides"].replace("|", "\\|")  # a bare | would split the cell
        lines.append(
            f"| {name} | `{overrides}` | {r['params']:,} | {r['flops_per_image'] / 1e6:.2f} | "
            f"{r['members']} | {_pct(r['val_acc_mean'], r['val_acc_std'])} | "
            f"{_pct(r['test_acc_mean'], r['test_acc_std'])} | {_delta(r['test_delta'], r['test_p'])} | "
            f"{_delta(r['val_delta'], r['val_p'])} | {r['wall_s']:.0f} |"
        )
    return "\n".join(lines) + "\n"


def bar_chart(table: Table, title: str = "", baseline: str | None = None) -> Figure:
    """Val and test accuracy per point, mean ± std over members as error bars (y axis zoomed to the data).

    Takes any table with `point`, `{val,test}_acc_{mean,std}` columns (ablations, reports).
    """
    names = [r["point"] for r in table]
    x = np.arange(len(names))
    fig = Figure(figsize=(max(4.0, 0.9 * len(names) + 1.5), 3.6))
    ax = fig.add_subplot()
    lows = []
    for offset, split, color in ((-0.2, "val", "tab:blue"), (0.2, "test", "tab:orange")):
        mean = np.array([100 * r[f"{split}_acc_mean"] for r in table])
        std = np.array([100 * r[f"{split}_acc_std"] for r in table])
        ax.bar(x + offset, mean, 0.4, yerr=std, capsize=3, color=color, label=split)
        lows.append((mean - std).min())
    top = max(100 * max(r[f"{s}_acc_mean"] + r[f"{s}_acc_std"] for s in ("val", "test")) for r in table)
    pad = max(0.5, 0.15 * (top - min(lows)))
    ax.set_ylim(min(lows) - pad, top + pad)
    ax.set_xticks(x, [f"{n}\n(baseline)" if n == baseline else n for n in names], rotation=30, ha="right")
    ax.set_ylabel("accuracy % (mean ± std)")
    ax.set_title(title, fontsize=9)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return fig


def sweep_yaml(ablation: str, points: Sequence[Point], workdir: str, overrides: Sequence[str]) -> str:
    """A W&B grid sweep over the points: each agent run trains one point (`--point`) into the shared layout."""
    spec = {
        "name": Path(ablation.split(":", 1)[0]).stem,
        "method": "grid",
        "program": "fmnist_jax/cli.py",
        "command": [
            "${env}",
            "${interpreter}",
            "${program}",
            "ablate",
            ablation,
            f"--workdir={workdir}",
            "--progress=false",
            *overrides,
            "${args}",
        ],
        "parameters": {"point": {"values": [p.name for p in points]}},
    }
    return yaml.safe_dump(spec, sort_keys=False)


def budget_line(points: Sequence[Point]) -> str:
    """What each point trained on: the shared folds, seeds, epochs and step cap."""
    c = points[0].config
    steps = f", at most {c.train.steps_per_epoch} steps/epoch" if c.train.steps_per_epoch else ""
    return (
        f"{len(tuple(c.cv.folds))} fold(s) {tuple(c.cv.folds)} of k={c.cv.k} x seeds {tuple(c.seeds)}, "
        f"{c.train.epochs} epoch(s) of batch {c.train.batch_size}{steps}"
    )


def write_results(name: str, points: Sequence[Point], workdir: Path, out: Path, baseline: str, command: str) -> Table:
    """Table (CSV, Markdown), chart, per-point summaries and the command of ablation `name` into `out`."""
    table = build_table(points, workdir, baseline)
    out.mkdir(parents=True, exist_ok=True)
    if not table:
        return table
    write_csv(table, out / "table.csv")
    pending = [p.name for p in points if p.name not in {r["point"] for r in table}]
    (out / "table.md").write_text(
        f"# Ablation: {name}\n\nBudget: {budget_line(points)}. Baseline: **{baseline}**. "
        f"Accuracy is mean ± std over members; Δ is the mean paired difference (point - baseline) over the same "
        f"(fold, seed) members, p the paired t-test's two-sided p-value.\n\n"
        + to_markdown(table, baseline)
        + (f"\nNot finished yet: {', '.join(pending)}\n" if pending else "")
        + f"\nCommand: `{command}`\n"
    )
    fig = bar_chart(table, f"{name}\n{budget_line(points)}", baseline)
    plots.save(fig, out / "chart.png")
    (out / "command.txt").write_text(command + "\n")
    (out / "summaries").mkdir(exist_ok=True)
    for r in table:
        shutil.copyfile(workdir / r["point"] / "summary.json", out / "summaries" / f"{r['point']}.json")
    return table


def _define(fv: flags.FlagValues) -> None:
    cmdline.define_config(fv)
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
        raise cmdline.UsageError("usage: fmnist-jax ablate ABLATION.py[:arg] --workdir DIR [--config.KEY=VALUE ...]")
    ablation, rest = argv[0], argv[1:]
    fv = cmdline.parse(["--config", ablation] + rest, _define, required=("workdir",))
    module = load_grid_module(ablation.split(":", 1)[0])
    try:
        points = expand(fv.config, module.get_grid(fv.config))
    except (KeyError, TypeError, ValueError) as e:
        raise cmdline.UsageError(f"{ablation}: {e.args[0] if e.args else e}") from e
    baseline = getattr(module, "BASELINE", points[0].name)
    if baseline not in {p.name for p in points}:
        raise cmdline.UsageError(f"{ablation}: BASELINE {baseline!r} is not a grid point")
    counts = check_budgets(points)
    overrides = [a for a in rest if a.startswith("--config.")]
    if fv.export_sweep:
        Path(fv.export_sweep).write_text(sweep_yaml(ablation, points, fv.workdir, overrides))
        print(f"wrote {fv.export_sweep}: `wandb sweep {fv.export_sweep}`, then `wandb agent SWEEP_ID` on each machine")
        return 0
    if fv.dry_run:
        for p in points:
            print(f"{p.name:20s} {counts[p.name]:>8,} params  {p.describe()}")
        print(f"{len(points)} points within budget; baseline {baseline}; {budget_line(points)}")
        return 0
    workdir = Path(fv.workdir)
    run_grid(points, workdir, fv.point, fv.progress)
    command = shlex.join(["fmnist-jax", "ablate", *argv])
    table = write_results(fv.config.name, points, workdir, workdir, baseline, command)
    if fv.out:
        write_results(fv.config.name, points, workdir, Path(fv.out), baseline, command)
    print(to_markdown(table, baseline) if table else "no finished points yet")
    print(f"wrote {workdir / 'table.md'}" + (f" and {fv.out}" if fv.out else ""))
    return 0
