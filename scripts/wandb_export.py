"""Export the W&B offline runs under run folders to one JSON Lines file (issue 17: the study's runs, committed).

    .venv/bin/python scripts/wandb_export.py results/study/e30/augmentation/grid \\
        --out results/study/e30/augmentation/wandb_runs.jsonl

Offline runs wait in `<workdir>/<point>/wandb/offline-run-*` for `wandb sync`, on the machine that trained them;
their images and checkpoint artifacts are too large to commit for every member (about 200 KB a run) and the
artifacts are staged outside the run folder. The export keeps what a comparison in W&B reads: each run's id, name,
group, job type, tags, config, per-epoch history and final summary (`tracking.offline_export`), one run a line.
An existing export is merged by run folder, not overwritten: a grid resumed on a fresh checkout, where the earlier
points' offline runs are gone (they are not committed), keeps their committed lines.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from fmnist_jax import tracking, writers  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("workdirs", nargs="+", type=Path, help="folders whose */wandb/offline-run-* to export")
    ap.add_argument("--out", required=True, type=Path, help="the JSON Lines file to write, merged into if it exists")
    a = ap.parse_args(argv)
    runs = sorted(d for w in a.workdirs for d in w.glob("*/wandb/offline-run-*") if any(d.glob("*.wandb")))
    if not runs:
        print(
            f"error: no W&B offline runs (*/wandb/offline-run-*) under {', '.join(map(str, a.workdirs))}",
            file=sys.stderr,
        )
        return 2
    try:
        kept = {r["folder"]: r for r in writers.read_jsonl(a.out)} if a.out.exists() else {}
    except (ValueError, KeyError, TypeError) as e:
        print(
            f"error: {a.out} is not an export to merge into (one JSON object with a 'folder' a line): {e}",
            file=sys.stderr,
        )
        return 2
    for d in runs:
        run = tracking.offline_export(d)
        run["folder"] = str(d.relative_to(d.parents[2]))  # <point>/wandb/offline-run-...
        kept[run["folder"]] = run
    lines = [json.dumps(kept[f], allow_nan=False, sort_keys=True) for f in sorted(kept)]
    a.out.parent.mkdir(parents=True, exist_ok=True)
    writers.write_text(a.out, "\n".join(lines) + "\n")
    print(f"wrote {a.out} ({len(runs)} runs exported, {len(lines)} in all)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
