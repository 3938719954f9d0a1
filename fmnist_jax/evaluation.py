"""Test metrics of a restored run: per member, mean ± std, per class, and confusion matrices.

What `fmnist-jax evaluate` prints and saves, and what `report` shows; restoring goes through
`fmnist_jax.restore`, so the numbers are the ones training's eval step gives.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from fmnist_jax import data, plots, restore, stats


def evaluate_run(
    workdir: str | Path,
    member: tuple[int, int] | None = None,
    step: int | None = None,
    tta_flip: bool | None = None,
    tta_shift: int | None = None,
    ema: bool = False,
) -> dict[str, Any]:
    """Test metrics of the restored members (all, or `member=(fold, seed)`; with `ema`, their weight averages):
    per member, mean ± std, per class, confusion matrices; test-time views (`tta_flip`, `tta_shift`) None
    evaluate as the run was configured."""
    run = restore.restore(workdir, step, ema)
    if member is not None:
        run = run.select(*member)
    dataset = data.for_config(run.config, run.data_digest)
    tta_flip = run.config.eval.tta_flip if tta_flip is None else tta_flip
    tta_shift = run.config.eval.tta_shift if tta_shift is None else tta_shift
    test, logits = run.evaluate(dataset.test_images, dataset.test_labels, tta_flip, tta_shift)
    labels = dataset.test_labels
    cms = [plots.confusion_matrix(labels, lg.argmax(-1)) for lg in logits]
    per_class = np.stack([np.diag(c) / np.maximum(c.sum(1), 1) for c in cms])
    return {
        "workdir": str(Path(workdir).resolve()),
        "name": run.config.name,
        "epoch": run.epoch,
        "data_digest": dataset.digest,
        "tta_flip": tta_flip,
        "tta_shift": tta_shift,
        "ema": ema,
        "members": [
            {
                "fold": m.fold,
                "seed": m.seed,
                "test_accuracy": float(test["accuracy"][i]),
                "test_loss": float(test["loss"][i]),
                "per_class_accuracy": dict(zip(data.CLASS_NAMES, per_class[i].tolist())),
                "confusion": cms[i].tolist(),
            }
            for i, m in enumerate(run.members)
        ],
        "test_accuracy": stats.mean_std(test["accuracy"]),
        "per_class_accuracy": {c: stats.mean_std(per_class[:, k]) for k, c in enumerate(data.CLASS_NAMES)},
        "classes": list(data.CLASS_NAMES),
        "confusion": np.sum(cms, axis=0).tolist(),  # pooled over members: rows true, columns predicted
    }


def format_report(r: dict[str, Any]) -> str:
    lines = [
        f"{r['name']} at epoch {r['epoch']} ({r['workdir']}); test-time flip averaging "
        f"{'on' if r['tta_flip'] else 'off'}, moves of {r.get('tta_shift', 0)} pixel(s)"
        + ("; weight average" if r.get("ema") else ""),
        "member          test acc   test loss",
    ]
    lines += [
        f"fold {m['fold']} seed {m['seed']:<4d} {100 * m['test_accuracy']:8.2f}%  {m['test_loss']:9.4f}"
        for m in r["members"]
    ]
    lines += [
        f"test accuracy over {len(r['members'])} member(s): {stats.pct_of(r['test_accuracy'])}",
        "",
        "per-class test accuracy (mean ± std over members):",
    ]
    lines += [f"  {c:12s} {stats.pct_of(v)}" for c, v in r["per_class_accuracy"].items()]
    width = max(len(c) for c in r["classes"])
    lines += [
        "",
        "confusion matrix, members pooled (rows: true, columns: predicted):",
        " " * (width + 1) + " ".join(f"{c[:5]:>5s}" for c in r["classes"]),
    ]
    lines += [f"{c:>{width}s} " + " ".join(f"{n:5d}" for n in row) for c, row in zip(r["classes"], r["confusion"])]
    return "\n".join(lines)
