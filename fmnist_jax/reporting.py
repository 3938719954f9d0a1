"""PNG figures and a Markdown report for a run or an ablation (what `fmnist-jax report` writes).

A run dir (summary.json + metrics.jsonl) gets learning curves, the per-member table, the
model summary and, when it holds a checkpoint, a test-set confusion matrix and sample
predictions. An ablation dir gets its table, bar chart and per-point validation curves. `--eda` writes the
data-exploration figures instead. Everything lands in `DIR/report/` (or `--out`) next to
`report.md`, which links the PNGs by relative path so the folder can be copied anywhere.
"""

from __future__ import annotations

import csv
import functools
import json
import re
from pathlib import Path
from typing import Any
from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from fmnist_jax import config_lib, data, models, plots, restore, stats
from fmnist_jax.errors import RunError
from fmnist_jax.writers import read_jsonl, write_json, write_text


def _interior_calls(model: nn.Module, variables: Any, x: jax.ShapeDtypeStruct) -> list[tuple[nn.Module, tuple, Any]]:
    """(unbound submodule, call args, output) for each direct child of `model`, in call order."""
    calls = []

    def record(next_fun, args, kwargs, context):
        out = next_fun(*args, **kwargs)
        if context.method_name == "__call__" and len(context.module.path) == 1:
            calls.append((context.module.clone(parent=None, name=context.module.path[0]), args, out))
        return out

    with nn.intercept_methods(record):
        jax.eval_shape(lambda v, x: model.apply(v, x, train=False), variables, x)
    return calls


def _describe(layer: nn.Module, x: Any) -> str:
    if not isinstance(layer, models.ConvBlock):
        return type(layer).__name__
    skip = layer.residual and x.shape[-1] == layer.features  # as ConvBlock decides
    return "conv3x3" + " + BN" * layer.batch_norm + " + SE" * bool(layer.se) + " + ReLU" + " + skip" * skip


def model_table(model: nn.Module) -> list[dict[str, Any]]:
    """One row per layer (each conv block, the head) with output shape, parameters and forward FLOPs.

    Per-layer FLOPs come from XLA's cost analysis of that layer alone (`models.cpu_flops`), like the total
    (`models.flops_per_image`); what the rows do not cover (max-pool, global average pool)
    is shown as its own row, so the column adds up to the total.
    """
    variables = jax.eval_shape(functools.partial(models.init_variables, model), jax.random.key(0))
    x = jax.ShapeDtypeStruct((1, 28, 28, 1), jnp.float32)
    rows = []
    for layer, args, out in _interior_calls(model, variables, x):
        own = {col: tree[layer.name] for col, tree in variables.items() if layer.name in tree}
        apply = functools.partial(lambda v, x, layer, rest: layer.apply(v, x, *rest), layer=layer, rest=args[1:])
        flops = models.cpu_flops(apply, own, args[0])
        rows.append(
            {
                "layer": layer.name,
                "op": _describe(layer, args[0]),
                "output": tuple(out.shape[1:]),
                "params": sum(p.size for p in jax.tree.leaves(own.get("params", {}))),
                "flops": float(flops),
            }
        )
    total = models.flops_per_image(model)
    rows.append(
        {
            "layer": "(pooling)",
            "op": "max-pool, global average pool",
            "output": "",
            "params": 0,
            "flops": total - sum(r["flops"] for r in rows),
        }
    )
    rows.append({"layer": "total", "op": "", "output": (10,), "params": models.count_params(model), "flops": total})
    return rows


def markdown_table(rows: Sequence[dict[str, Any]], columns: Sequence[str] | None = None) -> str:
    """A GitHub Markdown table; ints get thousands separators, floats 4 significant digits."""
    columns = list(columns or rows[0].keys())

    def cell(v: Any) -> str:
        if isinstance(v, (bool, str)) or v is None:
            return str(v if v is not None else "")
        if isinstance(v, (int, np.integer)):
            return f"{v:,}"
        if isinstance(v, (float, np.floating)):
            return f"{v:,.0f}" if abs(v) >= 1000 else f"{v:.4g}"
        return " × ".join(map(str, v)) if isinstance(v, tuple) else str(v)

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(r.get(c)) for c in columns) + " |" for r in rows]
    return "\n".join(lines)


def write_eda(dataset: data.Dataset, out: str | Path) -> list[Path]:
    """The data figures: random examples per class, class balance, mean/std image per class."""
    out = Path(out)
    figs = {
        "samples.png": plots.sample_grid(dataset.train_images, dataset.train_labels),
        "class_balance.png": plots.class_balance({"train": dataset.train_labels, "test": dataset.test_labels}),
        "mean_images.png": plots.mean_images(dataset.train_images, dataset.train_labels),
    }
    return [plots.save(fig, out / name) for name, fig in figs.items()]


def top_confusions(counts: np.ndarray, n: int = 5) -> list[dict[str, Any]]:
    """The `n` most frequent (true -> predicted) mistakes."""
    off = counts * (1 - np.eye(len(counts), dtype=counts.dtype))
    order = np.argsort(off, axis=None)[::-1][:n]
    return [
        {
            "true": data.CLASS_NAMES[i],
            "predicted": data.CLASS_NAMES[j],
            "count": int(off[i, j]),
            "% of true class": 100 * off[i, j] / max(counts[i].sum(), 1),
        }
        for i, j in zip(*np.unravel_index(order, counts.shape))
        if off[i, j]
    ]


def test_logits(workdir: Path) -> tuple[np.ndarray, data.Dataset] | None:
    """(per-member test logits [M, N, 10], dataset) from the run's latest checkpoint; None without one."""
    try:
        run = restore.restore(workdir)
    except FileNotFoundError:
        return None
    dataset = data.for_config(run.config, run.data_digest)
    return run.evaluate(dataset.test_images, dataset.test_labels)[1], dataset


def write_test_figures(out: Path, logits: np.ndarray, dataset: data.Dataset, members: Sequence[dict]) -> list[str]:
    """Confusion (pooled over members) and member 0's sample predictions; returns the Markdown section."""
    labels = dataset.test_labels
    preds = logits.argmax(-1)
    counts = np.sum([plots.confusion_matrix(labels, p) for p in preds], axis=0)
    plots.save(
        plots.confusion(
            counts,
            title=f"Test confusion, {len(preds)} member(s) pooled "
            f"(% of true class; accuracy {100 * np.trace(counts) / counts.sum():.2f}%)",
        ),
        out / "confusion.png",
    )
    write_json(out / "confusion.json", {"classes": data.CLASS_NAMES, "counts": counts.tolist()}, indent=None)
    probs = np.asarray(jax.nn.softmax(logits[0]))
    idx = plots.pick_examples(labels, preds[0])
    m0 = members[0]
    plots.save(
        plots.predictions(
            dataset.test_images,
            labels,
            probs,
            idx,
            title=f"Member 0 (fold {m0['fold']}, seed {m0['seed']}) on test: "
            f"{int((preds[0][idx] != labels[idx]).sum())} of {len(idx)} shown misclassified "
            "(red; over-sampled)",
        ),
        out / "predictions.png",
    )
    return [
        "## Test set",
        "",
        "![confusion](confusion.png)",
        "",
        "Most frequent mistakes (all members pooled):",
        "",
        markdown_table(top_confusions(counts)),
        "",
        "![predictions](predictions.png)",
        "",
    ]


def member_rows(summary: dict[str, Any]) -> list[dict[str, Any]]:
    """The per-member lines of a summary, accuracies in %."""
    return [
        {
            "fold": m["fold"],
            "seed": m["seed"],
            "val accuracy %": "none held out" if m["val_accuracy"] is None else f"{100 * m['val_accuracy']:.2f}",
            "test accuracy %": f"{100 * m['test_accuracy']:.2f}",
            "test loss": f"{m['test_loss']:.4f}",
        }
        for m in summary["members"]
    ]


def run_report(workdir: str | Path, out: str | Path | None = None) -> Path:
    """Figures and report.md for a run dir; returns the report path."""
    workdir = Path(workdir)
    out = Path(out or workdir / "report")
    out.mkdir(parents=True, exist_ok=True)
    try:
        summary = json.loads((workdir / "summary.json").read_text())
        config = config_lib.from_dict(json.loads((workdir / "config.json").read_text()))
    except ValueError as e:
        raise RunError(
            f"{workdir}: summary.json or config.json is not valid JSON ({e}); run the same "
            "`fmnist-jax train` command in that workdir again to rewrite them"
        ) from None
    record_path = workdir / "record.json"
    record = json.loads(record_path.read_text()) if record_path.exists() else {}
    rows = read_jsonl(workdir / "metrics.jsonl")
    plots.save(
        plots.learning_curves(
            rows, title=f"{summary['name']}: learning curves ({len(summary['members'])} members; band ± 1 std)"
        ),
        out / "learning_curves.png",
    )
    md = [
        f"# Run report: {summary['name']}",
        "",
        f"Run dir `{workdir}`, git `{record.get('git')}`, data digest `{summary['data_digest']}`, "
        f"jax {record.get('versions', {}).get('jax')}, devices {record.get('devices')}.",
        "",
        "## Summary",
        "",
        markdown_table(
            [
                {
                    "members": len(summary["members"]),
                    "params": summary["params"],
                    "FLOPs/image": summary["flops_per_image"],
                    "epochs": summary["epochs"],
                    "steps/epoch": summary["steps_per_epoch"],
                    "train img/s": f"{summary['train_images_per_s']:.0f} on {summary['devices']} device(s)",
                    "val accuracy": stats.pct_of(v) if (v := summary["val_accuracy"]) else "none held out",
                    "test accuracy": stats.pct_of(summary["test_accuracy"]),
                }
            ]
        ),
        "",
        markdown_table(member_rows(summary)),
        "",
    ]
    if "ema" in summary:  # a run that kept a weight average: its own numbers, member by member
        md += [
            f"Weight average (`train.ema_decay={config.train.ema_decay}`): val accuracy "
            f"{stats.pct_of(v) if (v := summary['ema']['val_accuracy']) else 'none held out'}, test accuracy "
            f"{stats.pct_of(summary['ema']['test_accuracy'])}",
            "",
            markdown_table(member_rows(summary["ema"])),
            "",
        ]
    md += [
        "## Learning curves",
        "",
        "![learning curves](learning_curves.png)",
        "",
    ]
    found = test_logits(workdir)
    if found:
        md += write_test_figures(out, *found, summary["members"])
    else:
        md += ["## Test set", "", "No checkpoint in this run dir: no confusion matrix or sample predictions.", ""]
    md += [
        "## Model",
        "",
        markdown_table(model_table(models.build(config))),
        "",
        "## Config",
        "",
        "```json",
        json.dumps(config.to_dict(), indent=1),
        "```",
        "",
    ]
    path = out / "report.md"
    write_text(path, "\n".join(md))
    return path


def _number(text: str) -> Any:
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def read_ablation(directory: str | Path) -> tuple[list[dict[str, Any]], str, str]:
    """(table rows, baseline point, table.md text) of an ablation dir written by `fmnist-jax ablate`."""
    directory = Path(directory)
    with open(directory / "table.csv", newline="") as f:
        table = [
            {k: v if k in ("point", "overrides") else _number(v) for k, v in row.items()} for row in csv.DictReader(f)
        ]
    text = (directory / "table.md").read_text()
    found = re.search(r"Baseline: \*\*([^*]+)\*\*", text)
    return table, found.group(1) if found else table[0]["point"], text


def ablation_report(directory: str | Path, out: str | Path | None = None) -> Path:
    """Bar chart (mean ± std per point), paired differences from the baseline, validation curves of every
    point with logged metrics (found through `grid.json`'s workdir where the table was written apart), report.md.
    """
    directory = Path(directory)
    out = Path(out or directory / "report")
    out.mkdir(parents=True, exist_ok=True)
    table, baseline, table_md = read_ablation(directory)
    plots.save(
        plots.bar_chart(table, f"{directory.name}: accuracy per point (mean ± std over members)", baseline),
        out / "ablation.png",
    )
    plots.save(
        plots.delta_chart(table, f"{directory.name}: each point against {baseline}", baseline), out / "deltas.png"
    )
    md = [f"# Ablation report: {directory.name}", "", "![accuracy per point](ablation.png)", ""]
    md += ["![paired differences from the baseline](deltas.png)", ""]
    grid = directory / "grid.json"
    runs_dir = directory / json.loads(grid.read_text()).get("workdir", ".") if grid.exists() else directory
    runs: dict[str, Sequence[dict[str, Any]]] = {
        r["point"]: read_jsonl(runs_dir / r["point"] / "metrics.jsonl")
        for r in table
        if (runs_dir / r["point"] / "metrics.jsonl").exists()
    }
    if runs:
        plots.save(plots.compare_curves(runs, "val_accuracy"), out / "ablation_curves.png")
        md += ["![validation accuracy per epoch](ablation_curves.png)", ""]
    md += [re.sub(r"^# ", "## ", table_md, flags=re.M)]
    path = out / "report.md"
    write_text(path, "\n".join(md))
    return path
