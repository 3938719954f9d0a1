"""The study's findings in words, from its tables (issue 17): one line per point, with the verdict the statistics
allow and no more.

    .venv/bin/python scripts/study_findings.py results/study/e30    # writes results/study/e30/findings.md

Reads every `fmnist-jax ablate --out` folder under the given root (its `grid.json` and `table.csv`), and the
`vs_<point>/` tables within them (`--baseline`: the same grid against another of its points). A point
"helps" or "hurts" only when its paired val difference from the grid's baseline has a Benjamini-Hochberg adjusted
p below 0.05; otherwise the line says no difference was shown, with the 95% interval, which says how large a
difference the grid could have missed. Written so that the README's findings are read off a file that a command
made, not copied by hand.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from fmnist_jax import stats, writers  # noqa: E402

ALPHA = 0.05


def _num(row: dict[str, str], key: str) -> float:
    value = row.get(key, "")
    return float(value) if value not in ("", None) else math.nan


def verdict(row: dict[str, str]) -> str:
    """'helps', 'hurts' or 'no difference shown' from the val difference and its adjusted p."""
    d, p = _num(row, "val_delta"), _num(row, "val_p_adj")
    if math.isnan(p) or p >= ALPHA:
        return "no difference shown"
    return "helps" if d > 0 else "hurts"


def point_line(row: dict[str, str], baseline: str) -> str:
    d, lo, hi = (_num(row, k) for k in ("val_delta", "val_ci_low", "val_ci_high"))
    acc = f"val {100 * _num(row, 'val_acc_mean'):.2f} ± {100 * _num(row, 'val_acc_std'):.2f}%"
    what = f"**{row['point']}** (`{row['overrides']}`, {int(float(row['params'])):,} params)"
    if math.isnan(d):
        return f"- {what}: {acc}; not paired with {baseline} (other members)"
    diff = stats.difference(d, lo, hi, p_adj=_num(row, "val_p_adj"))
    return f"- {what}: {acc}; against {baseline} (val points): {diff}: **{verdict(row)}**"


def grid_section(folder: Path, root: Path) -> str:
    grid = json.loads((folder / "grid.json").read_text())
    with open(folder / "table.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    base = next((r for r in rows if r["point"] == grid["baseline"]), None)
    title = f"## {grid['name']} against {grid['baseline']} (`{folder.relative_to(root)}/`)"
    lines = [title, "", f"Budget: {grid['budget']}.", ""]
    if base is not None:
        lines.append(
            f"Baseline **{grid['baseline']}**: val {100 * _num(base, 'val_acc_mean'):.2f} ± "
            f"{100 * _num(base, 'val_acc_std'):.2f}% over {base['members']} members."
        )
        lines.append("")
    lines += [point_line(r, grid["baseline"]) for r in rows if r["point"] != grid["baseline"]]
    if grid["pending"]:
        lines += ["", f"Not finished yet: {', '.join(grid['pending'])}."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("root", type=Path, help="folder holding the grids' --out folders (results/study/e30)")
    ap.add_argument("--out", type=Path, help="default: ROOT/findings.md")
    a = ap.parse_args(argv)
    folders = sorted(p.parent for pattern in ("*/grid.json", "*/vs_*/grid.json") for p in a.root.glob(pattern))
    if not folders:
        print(f"error: no grid results (*/grid.json) under {a.root}", file=sys.stderr)
        return 2
    text = (
        "# The study's findings, read off its tables\n\n"
        f"Made by `python scripts/study_findings.py {a.root}`. Differences are in val accuracy points, paired over "
        f"the same (fold, seed) members, with 95% t-intervals; a point helps or hurts only where the "
        f"Benjamini-Hochberg adjusted p (over its grid's comparisons) is below {ALPHA}.\n\n"
        + "\n".join(grid_section(f, a.root) for f in folders)
    )
    out = a.out or a.root / "findings.md"
    writers.write_text(out, text)
    print(f"wrote {out} ({len(folders)} tables)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
