"""Which test-time views to fix in a recipe, chosen on validation data only (issue 18).

    .venv/bin/python scripts/tta_views.py --workdir results/long_budget/grid/long --out results/best/tta/long

Restores a trained run and evaluates each member on its own validation fold (the images it never trained
on) with every view set: one view, flip (2 views), flip + 1-pixel moves up/down/left/right (10 views),
the same with 2-pixel moves, and the 1-pixel moves alone (5). Writes `tta_views.json` and `tta_views.md`
under --out; no test image is read.
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from fmnist_jax import data, restore, stats, writers  # noqa: E402

VIEWS = {
    "single": (False, 0),
    "flip": (True, 0),
    "shift1": (False, 1),
    "flip+shift1": (True, 1),
    "flip+shift2": (True, 2),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--workdir", required=True)
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    run = restore.restore(a.workdir)
    if not run.config.cv.holdout:
        sys.exit("error: that run trained on all training images; pick views on a run with validation folds")
    dataset = data.for_config(run.config, run.data_digest)
    rows: list[dict[str, Any]] = []
    for name, (flip, shift) in VIEWS.items():
        run.config.eval.tta_flip, run.config.eval.tta_shift = flip, shift
        accs, t0 = [], time.perf_counter()
        for m in run.members:
            _, val = data.split(dataset.train_labels, run.config.cv, m.fold)
            metrics, _ = run.select(m.fold, m.seed).evaluate(dataset.train_images[val], dataset.train_labels[val])
            accs.append(float(metrics["accuracy"][0]))
        rows.append(
            {"views": name, "tta_flip": flip, "tta_shift": shift, "val_accuracy": accs}
            | {"mean": float(np.mean(accs)), "seconds": time.perf_counter() - t0}
        )
        print(
            f"{name:12s} val {stats.pct(float(np.mean(accs)), float(np.std(accs)), '')} ({rows[-1]['seconds']:.0f} s)"
        )
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    record = {"workdir": a.workdir, "epoch": run.epoch, "members": [m.tag for m in run.members], "rows": rows}
    writers.write_json(out / "tta_views.json", record | {"cpu": platform.processor() or platform.machine()})
    base = rows[0]["mean"]
    lines = [
        f"# Test-time views on validation data: `{a.workdir}` (epoch {run.epoch}, {len(run.members)} member(s))",
        "",
        f"Command: `.venv/bin/python scripts/tta_views.py --workdir {a.workdir} --out {a.out}`",
        "",
        "| views | val acc % | Δ vs single view (points) |",
        "| --- | ---: | ---: |",
        *[f"| {r['views']} | {100 * r['mean']:.2f} | {100 * (r['mean'] - base):+.2f} |" for r in rows],
        "",
    ]
    writers.write_text(out / "tta_views.md", "\n".join(lines))


if __name__ == "__main__":
    main()
