"""Grids of configs (ablations): expand, check, train point by point, and compare with paired tests.

An ablation file (`ablations/*.py`) is code, in the style of big_vision's sweeps:
`get_config(arg)` is the base config, `get_grid(base) -> [(point, {dotted key: value})]`
the points, and `BASELINE` (default: the first point) the reference of the paired tests.
Every point is built and checked against the parameter budget before anything trains.
Each point trains its folds x seeds together (`train.train_and_evaluate`, members sharded
over whatever devices JAX sees) in `DIR/<point>`; a finished point is skipped and an
unfinished one resumes, so an interrupted grid is continued by running the command
again. Points that differ only in what the train step takes per member (augmentation, label smoothing,
optimiser hyperparameters: `steps.PER_MEMBER_KEYS`) can train as one program (`pack`, `train.train_packed`):
each still gets its own workdir and numbers. `--point` runs a subset, which is how `wandb agent` spreads a
grid exported with `--export_sweep` over machines. The table (CSV, Markdown) and chart cover finished points.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import os
import re
import shutil
from pathlib import Path
from types import ModuleType
from typing import Any
from collections.abc import Sequence

import jax
import ml_collections
import numpy as np
import yaml

from fmnist_jax import config_lib, members, models, plots, stats, steps, tracking, train, validate
from fmnist_jax.errors import BudgetError, ConfigError, RunError
from fmnist_jax.writers import write_json, write_text

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
    "test_ci_low",
    "test_ci_high",
    "test_p",
    "test_p_adj",
    "val_delta",
    "val_ci_low",
    "val_ci_high",
    "val_p",
    "val_p_adj",
    # the weight average (`train.ema_decay`), NaN where a point keeps none; its delta is average - weights over
    # the point's own members (paired: the same run)
    "ema_val_acc_mean",
    "ema_val_acc_std",
    "ema_val_delta",
    "ema_val_ci_low",
    "ema_val_ci_high",
    "ema_val_p",
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


@dataclasses.dataclass(frozen=True)
class Grid:
    """An ablation: its points (each a full config) and the baseline the paired tests compare against."""

    name: str
    points: list[Point]
    baseline: str


def expand(base: ml_collections.ConfigDict, grid: Sequence[tuple[str, dict[str, Any]]]) -> list[Point]:
    """One full config per grid point: the base (without its `grid` options) plus the point's values.

    An override of a key the base lacks, or of another type, is a ConfigError (a typo must not train
    silently). W&B runs keep the user's group (the ablation's name when none is given) and get the point as job
    type and the ablation and point as tags.
    """
    points, seen = [], set()
    plain = ml_collections.ConfigDict(base.to_dict())
    if "grid" in plain:
        del plain["grid"]
    for name, overrides in grid:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.+-]*", name) or name in seen:
            raise ConfigError(f"grid point name {name!r} is empty, repeated or not usable as a directory name")
        seen.add(name)
        try:
            c = config_lib.with_overrides(plain, overrides)
        except ConfigError as e:
            raise ConfigError(f"grid point {name}: {e}") from None
        if not c.cv.holdout:
            raise ConfigError(f"grid point {name}: points are compared on held-out data; cv.holdout must be true")
        c.name = f"{base.name}-{name}"
        c.wandb.group = base.wandb.group or base.name
        c.wandb.job_type = name
        c.wandb.tags = (*base.wandb.tags, base.name, name)
        points.append(Point(name, dict(overrides), c))
    if not points:
        raise ConfigError("the grid has no points")
    return points


def from_module(module: ModuleType, base: ml_collections.ConfigDict, baseline: str | None = None) -> Grid:
    """The grid an ablation module defines over `base` (its `get_config(arg)`, overridden as the user asked);
    every point validated and within the parameter budget before anything trains. `baseline` (default: the
    module's BASELINE, else its first point) is the point the paired tests compare against."""
    points = expand(base, module.get_grid(base))
    baseline = baseline or getattr(module, "BASELINE", points[0].name)
    if baseline not in {p.name for p in points}:
        raise ConfigError(f"baseline {baseline!r} is not a point of the grid")
    check_budgets(points)
    return Grid(base.name, points, baseline)


def load(spec: str | Path, overrides: dict[str, Any] | None = None) -> Grid:
    """The grid of an ablation file.

    Args:
      spec: `path/to/ablation.py` or `path/to/ablation.py:arg` (e.g. `ablations/width.py:smoke`).
      overrides: dotted config keys applied to the base config of every point, e.g. `{"train.epochs": 20}`.

    Returns:
      The validated grid (ConfigError or BudgetError before anything trains).
    """
    path, _, arg = str(spec).partition(":")
    module = config_lib.load_module(path)
    base = config_lib.with_overrides(module.get_config(arg or None), overrides or {})
    return from_module(module, base)


def check_budgets(points: Sequence[Point]) -> dict[str, int]:
    """Parameter count per point; ConfigError for a bad value, BudgetError naming every over-budget point
    (nothing has trained yet)."""
    counts, over = {}, []
    for p in points:
        try:
            validate.check(p.config)
        except ConfigError as e:
            raise ConfigError(f"grid point {p.name}: {e}") from None
        counts[p.name] = n = models.count_params(models.build(p.config))
        if n > p.config.max_params:
            over.append(f"{p.name} has {n:,} (limit {p.config.max_params:,})")
    if over:
        raise BudgetError(f"{len(over)} of {len(points)} grid points over the parameter budget: " + "; ".join(over))
    return counts


def point_status(point: Point, workdir: Path) -> str:
    """'done', 'partial' (resumable) or 'new'; a directory left by a different config is an error.

    Checked here, before any point trains, so a changed grid or override cannot mix runs into one table.
    """
    d = workdir / point.name
    if not (d / "config.json").exists():
        return "new"
    diffs = config_lib.differences(json.loads((d / "config.json").read_text()), point.config.to_dict())
    if diffs:
        raise RunError(
            f"{d} holds a run of a different config ({'; '.join(diffs)}); "
            "use another --workdir, or delete that directory to redo the point"
        )
    return "done" if (d / "summary.json").exists() else "partial"


PACK_MODES = ("auto", "on", "off")


def packs(points: Sequence[Point], workdir: Path, mode: str = "auto") -> list[list[Point]]:
    """The points grouped into programs: with packing, the points of one network, loop and evaluation
    (`steps.pack_key`) at the same checkpoint epoch train together; otherwise one point each.

    'auto' packs on more than one device, or where members are vmapped (accelerators), and not on one CPU
    device. Measured on the 2-core AMD EPYC (AVX-512), two points of 5 members (results/bench/packing/): on 2
    host CPU devices packed 1.21x separate for the reference CNN and 1.19x for the lean residual net (5 members
    pad to 6 slots on 2 devices, 10 fill them); on 1 device 0.95x and 1.05x (unrolled members run one after
    another either way): no gain worth a program that holds every point in flight. Not measured on a GPU.
    """
    if mode not in PACK_MODES:
        raise ConfigError(f"pack={mode!r} must be one of {', '.join(PACK_MODES)}")
    if not points:
        return []
    vmapped = members.resolve_strategy(points[0].config.members.strategy) == "vmap"
    if mode == "off" or (mode == "auto" and not vmapped and jax.device_count() == 1):
        return [[p] for p in points]
    groups: dict[str, list[Point]] = {}
    for p in points:
        key = json.dumps([steps.pack_key(p.config), _latest_epoch(workdir / p.name)], sort_keys=True, default=list)
        groups.setdefault(key, []).append(p)
    return list(groups.values())


def _latest_epoch(d: Path) -> int:
    return max((int(c.name) for c in (d / "checkpoints").glob("[0-9]*") if c.name.isdigit()), default=0)


def run_grid(
    points: Sequence[Point], workdir: str | Path, only: Sequence[str] = (), progress: bool = True, pack: str = "auto"
) -> None:
    """Train every (selected) point that has not finished, packed into programs as `pack` says (`packs`).

    Each point's wall time is its summary's `wall_seconds`, which its checkpoints carry from segment to segment
    (a packed point's is its program's: `build_table` shares it out)."""
    workdir = Path(workdir)
    unknown = set(only) - {p.name for p in points}
    if unknown:
        raise ConfigError(f"unknown grid point(s) {sorted(unknown)}; grid points: {[p.name for p in points]}")
    selected = [p for p in points if not only or p.name in only]
    statuses = {p.name: point_status(p, workdir) for p in selected}
    heads = {p.name: f"[{i + 1}/{len(selected)}] {p.name} ({p.describe()})" for i, p in enumerate(selected)}
    for p in selected:
        if statuses[p.name] == "done":
            print(f"{heads[p.name]}: finished, skipped")
    for group in packs([p for p in selected if statuses[p.name] != "done"], workdir, pack):
        for p in group:
            verb = "resuming" if statuses[p.name] == "partial" else "training"
            packed = f", packed with {len(group) - 1} more" if len(group) > 1 else ""
            print(f"{heads[p.name]}: {verb}{packed}", flush=True)
            (workdir / p.name).mkdir(parents=True, exist_ok=True)
        if len(group) == 1:
            summaries = [train.train_and_evaluate(group[0].config, workdir / group[0].name, progress=progress)]
        else:
            summaries = train.train_packed([(p.config, workdir / p.name) for p in group], progress=progress)
        for s in summaries:
            print(train.format_summary(s), flush=True)


def build_table(points: Sequence[Point], workdir: str | Path, baseline: str) -> Table:
    """One row per finished point (see COLUMNS), paired against `baseline` over the same (fold, seed) members:
    the mean difference, its 95% t-interval, the paired t-test's p and the Benjamini-Hochberg adjusted p
    over the grid's comparisons (per split)."""
    workdir = Path(workdir)
    summaries = {p.name: read_summary(workdir, p.name) for p in points if (workdir / p.name / "summary.json").exists()}
    ref = summaries.get(baseline)
    rows = []
    for p in points:
        s = summaries.get(p.name)
        if s is None:
            continue
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
            "wall_s": _wall(s, workdir / p.name),
        }
        for split in ("test", "val"):
            compared = (np.nan,) * 4
            if ref is not None and p.name != baseline:
                compared = stats.compare(ref["members"], s["members"], f"{split}_accuracy")
            row.update(zip((f"{split}_{k}" for k in ("delta", "p", "ci_low", "ci_high")), compared))
        row.update(_weight_average(s))
        rows.append(row)
    for split in ("test", "val"):
        for row, adjusted in zip(rows, stats.adjust([r[f"{split}_p"] for r in rows])):
            row[f"{split}_p_adj"] = adjusted
    return rows


def _wall(s: dict[str, Any], point_dir: Path) -> float:
    """A point's wall time: its share of its program's `wall_seconds`. Points trained before summaries kept it
    have theirs in ablate.json, which lost any segment that ended without cleanup (NaN if it has none)."""
    if "wall_seconds" in s:
        return s["wall_seconds"] / (1 + len(s.get("packed_with", ())))
    legacy = point_dir / "ablate.json"
    return json.loads(legacy.read_text())["wall_s"] if legacy.exists() else float("nan")


def _weight_average(s: dict[str, Any]) -> dict[str, float]:
    """A summary's weight-average columns (NaN without one): its val accuracy, and its paired difference from
    the run's own weights over the same members."""
    keys = ("ema_val_acc_mean", "ema_val_acc_std", "ema_val_delta", "ema_val_p", "ema_val_ci_low", "ema_val_ci_high")
    if "ema" not in s:
        return dict.fromkeys(keys, np.nan)
    ema = s["ema"]
    compared = stats.compare(s["members"], ema["members"], "val_accuracy")
    return dict(zip(keys, (ema["val_accuracy"]["mean"], ema["val_accuracy"]["std"], *compared)))


def read_summary(workdir: str | Path, point: str) -> dict[str, Any]:
    """A finished point's summary (RunError if it has none or it is damaged)."""
    path = Path(workdir) / point / "summary.json"
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise RunError(f"{path}: no readable summary ({e}); train the point again to rewrite it") from None


def write_csv(table: Table, path: str | Path) -> None:
    f = io.StringIO(newline="")
    w = csv.DictWriter(f, fieldnames=COLUMNS)
    w.writeheader()
    w.writerows(table)
    write_text(path, f.getvalue())


def _delta(r: dict[str, Any], split: str) -> str:
    """A row's `split` difference from the baseline (stats.difference) from its `{split}_...` columns."""
    return stats.difference(*(r.get(f"{split}_{k}") for k in ("delta", "ci_low", "ci_high", "p", "p_adj")))


def to_markdown(table: Table, baseline: str) -> str:
    """A Markdown table; accuracies in %, deltas (points - baseline) with 95% CIs, paired t-test p-values and
    Benjamini-Hochberg adjusted ones; where points keep a weight average, its val accuracy and its paired
    difference from the point's own weights."""
    ema = any(not np.isnan(r.get("ema_val_acc_mean", np.nan)) for r in table)
    lines = [
        "| point | overrides | params | MFLOPs/img | members | val acc % | test acc % | "
        f"Δ test vs {baseline} | Δ val vs {baseline} | "
        + ("weight average val acc % | Δ val, average vs weights | " if ema else "")
        + "wall s |",
        "|---|---|--:|--:|--:|--:|--:|--:|--:|" + ("--:|--:|" if ema else "") + "--:|",
    ]
    for r in table:
        name = f"**{r['point']}**" if r["point"] == baseline else r["point"]
        overrides = r["overrides"].replace("|", "\\|")  # a bare | would split the cell
        average = ""
        if ema:
            kept = not np.isnan(r.get("ema_val_acc_mean", np.nan))
            acc = stats.pct(r["ema_val_acc_mean"], r["ema_val_acc_std"], "") if kept else "—"
            average = f"{acc} | {_delta(r, 'ema_val') if kept else '—'} | "
        lines.append(
            f"| {name} | `{overrides}` | {r['params']:,} | {r['flops_per_image'] / 1e6:.2f} | "
            f"{r['members']} | {stats.pct(r['val_acc_mean'], r['val_acc_std'], '')} | "
            f"{stats.pct(r['test_acc_mean'], r['test_acc_std'], '')} | {_delta(r, 'test')} | "
            f"{_delta(r, 'val')} | {average}{r['wall_s']:.0f} |"
        )
    return "\n".join(lines) + "\n"


def sweep_yaml(ablation: str, points: Sequence[Point], workdir: str | Path, overrides: Sequence[str]) -> str:
    """A W&B grid sweep over the points: each agent run trains one point (`--point`) into the shared layout.

    Paths are absolute, so agents may start anywhere that sees the same filesystem; W&B is online unless the
    overrides say otherwise (an agent reports to its sweep); the sweep's metric is the point's mean validation
    accuracy over its members (`val/accuracy` of the agent's run, see `tracking`).
    """
    path, _, arg = ablation.partition(":")
    mode = [] if any(o.startswith("--config.wandb.mode") for o in overrides) else ["--config.wandb.mode=online"]
    spec = {
        "name": Path(path).stem,
        "method": "grid",
        "metric": {"name": "val/accuracy", "goal": "maximize"},
        "program": str(Path(__file__).resolve().with_name("cli.py")),
        "command": [
            "${env}",
            "${interpreter}",
            "${program}",
            "ablate",
            str(Path(path).resolve()) + (f":{arg}" if arg else ""),
            f"--workdir={Path(workdir).resolve()}",
            "--progress=false",
            *overrides,
            *mode,
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


def budget_points(short: dict[str, dict], top: int = 3, also: Sequence[str] = ()) -> list[str]:
    """The points a learning-curve check trains again at a longer budget, in the short budget's order (best mean
    val accuracy first): the `top` ones, and those named in `also` (points a longer budget may lift, such as
    augmentation that regularises and so pays off only with longer training)."""
    unknown = [p for p in also if p not in short]
    if unknown:
        raise ValueError(f"unknown point(s) {', '.join(unknown)}: the short budget has {', '.join(short)}")
    by_val = sorted(short, key=lambda p: -short[p]["val_accuracy"]["mean"])
    return [p for i, p in enumerate(by_val) if i < top or p in also]


def budget_agreement(
    short: dict[str, dict], long: dict[str, dict], ranked: Sequence[str], alpha: float = 0.05
) -> dict[str, Any]:
    """Does a longer budget keep the short budget's ranking of the checked points (`ranked`, from `budget_points`)?

    The learning-curve check a study's budget rests on: `short` and `long` map point names to their summaries
    at the two budgets. The ranking is the one the study's tests can state: for every pair of checked points, the
    paired val difference with its 95% t-interval, and the verdict ">" or "<" where its Benjamini-Hochberg
    adjusted p (over the pairs at that budget) is below `alpha`, else "=" (not separated). `same_ranking`: every
    pair has the same verdict at both budgets (None while a long run is missing). The strict order of the means
    (`same_order`) is reported too, but it is no test: points a paired test cannot separate swap places by chance.
    `gains`: each point's paired val difference long - short over the same members (what the longer budget buys);
    `test_gains` the same on test accuracy, reported beside the check, never part of it (budgets are chosen on val).
    """
    ranked = list(ranked)
    done = all(p in long for p in ranked)
    order = sorted(ranked, key=lambda p: -long[p]["val_accuracy"]["mean"]) if done else None
    pairs: list[dict[str, Any]] = [{"better": a, "worse": b} for i, a in enumerate(ranked) for b in ranked[i + 1 :]]
    for budget, s in (("short", short), ("long", long)):
        tested = [pair for pair in pairs if pair["better"] in s and pair["worse"] in s]
        results = [
            stats.compare(s[pair["worse"]]["members"], s[pair["better"]]["members"], "val_accuracy") for pair in tested
        ]
        for pair, (delta, p, low, high), p_adj in zip(tested, results, stats.adjust([r[1] for r in results])):
            verdict = (">" if delta > 0 else "<") if p_adj < alpha else "="
            pair[budget] = _defined({"delta": delta, "ci": [low, high], "p": p, "p_adj": p_adj}) | {"verdict": verdict}
    same_ranking = all(pair["short"]["verdict"] == pair["long"]["verdict"] for pair in pairs) if done else None
    gains: dict[str, dict] = {}
    test_gains: dict[str, dict] = {}
    for point in (p for p in ranked if p in long):
        for key, out in (("val_accuracy", gains), ("test_accuracy", test_gains)):
            delta, p, low, high = stats.compare(short[point]["members"], long[point]["members"], key)
            out[point] = _defined({"delta": delta, "ci": [low, high], "p": p})
    return {
        "checked": ranked,
        "long_order": order,
        "same_order": order == ranked if done else None,
        "same_ranking": same_ranking,
        "alpha": alpha,
        "pairs": pairs,
        "gains": gains,
        "test_gains": test_gains,
    }


def _defined(stat: dict[str, Any]) -> dict[str, Any]:
    """A statistic's numbers with None where undefined (NaN, as a p of identical differences): strict JSON."""
    return jax.tree.map(lambda x: None if np.isnan(x) else x, stat)


def write_results(name: str, points: Sequence[Point], workdir: Path, out: Path, baseline: str, command: str) -> Table:
    """Table (CSV, Markdown), charts (`chart.png` accuracies, `deltas.png` paired differences from the baseline),
    per-point summaries, the command, and `grid.json` (name, baseline, budget, points not finished, the runs'
    folder: what readers of the table such as `scripts/study_findings.py` and `fmnist-jax report` need) into
    `out`."""
    table = build_table(points, workdir, baseline)
    out.mkdir(parents=True, exist_ok=True)
    if not table:
        return table
    write_csv(table, out / "table.csv")
    pending = [p.name for p in points if p.name not in {r["point"] for r in table}]
    write_text(
        out / "table.md",
        f"# Ablation: {name}\n\nBudget: {budget_line(points)}. Baseline: **{baseline}**. "
        f"Accuracy is mean ± std over members; Δ is the mean paired difference (point - baseline) over the same "
        f"(fold, seed) members in points, with its 95% t-interval in brackets; p is the paired t-test's two-sided "
        f"p-value and adj. the Benjamini-Hochberg adjusted one over this grid's comparisons.\n\n"
        + to_markdown(table, baseline)
        + (f"\nNot finished yet: {', '.join(pending)}\n" if pending else "")
        + f"\nCommand: `{command}`\n",
    )
    plots.save(plots.bar_chart(table, f"{name}\n{budget_line(points)}", baseline), out / "chart.png")
    plots.save(plots.delta_chart(table, f"{name}: each point against {baseline}", baseline), out / "deltas.png")
    write_text(out / "command.txt", command + "\n")
    write_json(
        out / "grid.json",
        {
            "name": name,
            "baseline": baseline,
            "budget": budget_line(points),
            "pending": pending,
            "command": command,
            "workdir": os.path.relpath(workdir, out),  # where the points' runs are, from here
        },
    )
    (out / "summaries").mkdir(exist_ok=True)
    for r in table:
        shutil.copyfile(workdir / r["point"] / "summary.json", out / "summaries" / f"{r['point']}.json")
    return table


def run(
    grid: Grid,
    workdir: str | Path,
    only: Sequence[str] = (),
    progress: bool = True,
    out: str | Path | None = None,
    command: str = "",
    pack: str = "auto",
) -> Table:
    """Train a grid's unfinished points (resuming interrupted ones) and write its table and chart.

    Args:
      grid: from `load` (or `from_module`).
      workdir: one subdirectory per point; the table, chart and summaries too, unless `out` is given.
      only: names of the points to train (default all); the table covers every finished point.
      progress: show progress bars.
      out: where the table, chart, summaries and command go instead (e.g. under `results/`), once: a copy in
        `workdir` too would leave two of each in a results folder that holds the runs.
      command: the command line recorded with the results.
      pack: 'auto', 'on' or 'off': train points of one network as one program (`packs`).

    Returns:
      One row per finished point (see `COLUMNS`), paired against the baseline.
    """
    workdir = Path(workdir)
    run_grid(grid.points, workdir, only, progress, pack)
    table = write_results(grid.name, grid.points, workdir, Path(out or workdir), grid.baseline, command)
    if not only and not os.environ.get(tracking.SWEEP_ENV):  # the whole grid's table, once it is this process's
        tracking.log_table(grid.points[0].config, workdir, grid.name, table, grid.baseline)
    return table
