"""The study's learning-curve check (issue 17): do a grid's top points keep their ranking at a longer budget?

    .venv/bin/python scripts/budget_check.py --short results/study/e30/augmentation --top 3 --also crop_hflip --points
    .venv/bin/python scripts/budget_check.py --short results/study/e30/augmentation --top 3 --also crop_hflip \\
        --long results/study/e30/budget_check/long --out results/study/e30/budget_check
    .venv/bin/python scripts/budget_check.py --accepts 30 --out results/study/e30/budget_check

`--short` and `--long` are `fmnist-jax ablate --out` folders of the same grid at two budgets (their
`summaries/`). The checked points are the short budget's `--top` ones and those named by `--also`
(`ablation.budget_points`); `--points` prints them as `ablate --point=` flags, the long run to train. The budget
holds if every pair of checked points gets the same verdict (>, < or not separated, by the BH-adjusted paired
test) at both budgets (`ablation.budget_agreement`). The report: `budget_check.json`, `budget_check.md` and
`budget_check.png` (val accuracy of the checked points at both budgets, ± 1 std) in `--out`; the
table gives each point's paired test gain too, beside the check (which is decided on val alone). `--accepts EPOCHS`
exits 0 only if the report in `--out` accepts a short budget of EPOCHS (else one line, exit 2): the gate
`scripts/study.sh grids` passes before it trains every grid at that budget."""

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


def accepts(out: Path | None, epochs: int) -> int:
    """0 if the report in `out` accepts a short budget of `epochs`; else one line on stderr and 2."""
    try:
        if out is None:
            raise ValueError("--accepts needs --out, the check's report folder")
        check = json.loads((out / "budget_check.json").read_text())
        if check["epochs"]["short"] != epochs:
            raise ValueError(f"{out} checked {check['epochs']['short']} epochs, not {epochs}")
        if check["same_ranking"] is not True:
            state = "is not finished" if check["same_ranking"] is None else "found a different ranking"
            raise ValueError(f"the learning-curve check in {out} {state}: {epochs} epochs are not accepted")
    except (OSError, ValueError, KeyError, TypeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


def difference(d: dict | None, p: str) -> str:
    """A checked difference (`delta`, `ci`, and the p named `p`) as stats.difference writes it."""
    return stats.difference(None) if d is None else stats.difference(d["delta"], *d["ci"], **{p: d[p]})


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--short", type=Path)
    ap.add_argument("--top", type=int, default=3)
    ap.add_argument("--also", nargs="*", default=[], help="other points of the short budget to check")
    ap.add_argument("--points", action="store_true", help="print the checked points as ablate --point= flags")
    ap.add_argument("--long", type=Path)
    ap.add_argument("--out", type=Path)
    ap.add_argument("--accepts", type=int, metavar="EPOCHS", help="exit 0 only if --out's report accepts EPOCHS")
    a = ap.parse_args(argv)
    if a.accepts is not None:
        return accepts(a.out, a.accepts)
    try:
        if a.short is None:
            raise ValueError("--short is needed, unless --accepts")
        short = summaries(a.short)
        if not short:
            raise ValueError(f"no summaries in {a.short / 'summaries'}")
        if not a.points and not (a.long and a.out):
            raise ValueError("--long and --out are needed, unless --points")
        checked = ablation.budget_points(short, a.top, a.also)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if a.points:
        print(" ".join(f"--point={p}" for p in checked))
        return 0
    long = summaries(a.long)
    check = ablation.budget_agreement(short, long, checked)
    epochs = {"short": next(iter(short.values()))["epochs"], "long": next(iter(long.values()), {}).get("epochs")}
    a.out.mkdir(parents=True, exist_ok=True)
    writers.write_json(a.out / "budget_check.json", check | {"epochs": epochs})
    same = {True: "the same", False: "different", None: "not finished"}
    lines = [
        f"# Learning-curve check: {', '.join(check['checked'])} at {epochs['short']} and {epochs['long']} epochs",
        "",
        f"Short budget `{a.short}`, long budget `{a.long}`. Checked: the short budget's top {a.top}"
        + (f" and {', '.join(a.also)}" if a.also else "")
        + ", in the short budget's order.",
        "",
        f"- **Ranking: {same[check['same_ranking']]}.** The ranking is what the paired tests state: a pair is"
        f" ordered (> or <) where its Benjamini-Hochberg adjusted p over the {len(check['pairs'])} pairs at that"
        f" budget is below {check['alpha']}, else not separated (=); the budget holds if every pair has the same"
        " verdict at both budgets.",
        f"- Strict order of the means: {same[check['same_order']]}"
        + (f" ({' > '.join(check['long_order'])} at the long budget)" if check["long_order"] else "")
        + ". No test: points the paired test cannot separate swap places by chance.",
        "",
        f"| point | val acc % at {epochs['short']} epochs | val acc % at {epochs['long']} epochs "
        "| val gain, points (95% CI), p | test gain (not part of the check) |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for p in check["checked"]:
        cells = [stats.pct_of(s[p]["val_accuracy"]) if p in s else "–" for s in (short, long)]
        gains = [difference(check[g].get(p), "p") for g in ("gains", "test_gains")]
        lines.append(f"| {p} | {cells[0]} | {cells[1]} | {gains[0]} | {gains[1]} |")
    lines += ["", "| pair | Δ val at short budget, points (95% CI), adj. p | Δ val at long budget | verdicts |"]
    lines.append("| --- | ---: | ---: | :---: |")
    for pair in check["pairs"]:
        cells = [difference(pair.get(budget), "p_adj") for budget in ("short", "long")]
        verdicts = " / ".join(pair[b]["verdict"] if b in pair else "–" for b in ("short", "long"))
        lines.append(f"| {pair['better']} − {pair['worse']} | {cells[0]} | {cells[1]} | {verdicts} |")
    cmd = " ".join(["scripts/budget_check.py", *sys.argv[1:]])
    lines += ["", f"Command: `.venv/bin/python {cmd}`", ""]
    writers.write_text(a.out / "budget_check.md", "\n".join(lines))
    fig = plots.budget_chart(
        {p: [s[p]["val_accuracy"] if p in s else None for s in (short, long)] for p in check["checked"]},
        [epochs["short"], epochs["long"]],
    )
    plots.save(fig, a.out / "budget_check.png")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
