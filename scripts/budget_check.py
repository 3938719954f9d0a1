"""The study's learning-curve check (issue 17): do a grid's top points keep their ranking at a longer budget?

    .venv/bin/python scripts/budget_check.py --short results/study/augmentation \\
        --long results/study/budget_check/long --top 3 --out results/study/budget_check

`--short` and `--long` are `fmnist-jax ablate --out` folders of the same grid at two budgets (their
`summaries/`); the long one needs only the short one's top points (`--point`). Writes `budget_check.json`,
`budget_check.md` and `budget_check.png` (val accuracy of the top points at both budgets, ± 1 std).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from fmnist_jax import ablation, plots, stats, writers  # noqa: E402


def summaries(folder: Path) -> dict[str, dict]:
    return {p.stem: json.loads(p.read_text()) for p in sorted((folder / "summaries").glob("*.json"))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--short", required=True, type=Path)
    ap.add_argument("--long", required=True, type=Path)
    ap.add_argument("--top", type=int, default=3)
    ap.add_argument("--out", required=True, type=Path)
    a = ap.parse_args()
    short, long = summaries(a.short), summaries(a.long)
    if not short:
        sys.exit(f"error: no summaries in {a.short / 'summaries'}")
    check = ablation.budget_agreement(short, long, a.top)
    epochs = {"short": next(iter(short.values()))["epochs"], "long": next(iter(long.values()), {}).get("epochs")}
    a.out.mkdir(parents=True, exist_ok=True)
    writers.write_json(a.out / "budget_check.json", check | {"epochs": epochs})
    verdict = {True: "**the same order**", False: "**a different order**", None: "not finished"}[check["same_order"]]
    lines = [
        f"# Learning-curve check: top {len(check['top'])} points at {epochs['short']} and {epochs['long']} epochs",
        "",
        f"Short budget `{a.short}`, long budget `{a.long}`: {verdict}.",
        "",
        f"| point | val acc % at {epochs['short']} epochs | val acc % at {epochs['long']} epochs |",
        "| --- | ---: | ---: |",
    ]
    for p in check["top"]:
        cells = [stats.pct_of(s[p]["val_accuracy"]) if p in s else "–" for s in (short, long)]
        lines.append(f"| {p} | {cells[0]} | {cells[1]} |")
    lines += ["", "| pair | Δ val at short budget (95% CI), points | Δ val at long budget (95% CI), points |"]
    lines.append("| --- | ---: | ---: |")
    for pair in check["pairs"]:
        cells = []
        for budget in ("short", "long"):
            d = pair.get(budget)
            cells.append(f"{100 * d['delta']:+.2f} [{100 * d['ci'][0]:+.2f}, {100 * d['ci'][1]:+.2f}]" if d else "–")
        lines.append(f"| {pair['better']} − {pair['worse']} | {cells[0]} | {cells[1]} |")
    cmd = " ".join(["scripts/budget_check.py", *sys.argv[1:]])
    lines += ["", f"Command: `.venv/bin/python {cmd}`", ""]
    writers.write_text(a.out / "budget_check.md", "\n".join(lines))
    fig = plots.budget_chart(
        {p: [s[p]["val_accuracy"] if p in s else None for s in (short, long)] for p in check["top"]},
        [epochs["short"], epochs["long"]],
    )
    plots.save(fig, a.out / "budget_check.png")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
