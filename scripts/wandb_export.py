"""Export the W&B offline runs under run folders to one JSON Lines file (issue 17: the study's runs, committed).

    .venv/bin/python scripts/wandb_export.py results/study/e30/augmentation/grid \\
        --out results/study/e30/augmentation/wandb_runs.jsonl

Offline runs wait in `<workdir>/<point>/wandb/offline-run-*` for `wandb sync`, on the machine that trained them;
their images and checkpoint artifacts are too large to commit for every member (about 200 KB a run) and the
artifacts are staged outside the run folder. The export keeps what a comparison in W&B reads: each run's id, name,
group, job type, tags, config, per-epoch history and final summary (`tracking.offline_export`), one run a line.
An existing export is merged by run folder, not overwritten: a grid resumed on a fresh checkout, where the earlier
points' offline runs are gone (they are not committed), keeps their committed lines. A point keeps only the lines
of its current run ids (`wandb_runs.json`), and a finished point whose lines do not hold it whole (a segment
trained without W&B, segments lost with a checkout, a point copied from another grid) is replayed from its
committed metrics first (`fmnist_jax.wandb_replay`), so every finished point has one complete run per member.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from fmnist_jax import tracking, wandb_replay, writers  # noqa: E402


def _held(point: Path, kept: dict[str, dict]) -> dict[str, dict]:
    """`point`'s lines: committed (`kept`) and on disk, under its current run ids where it has them (a replayed
    point's earlier runs are under ids it no longer has)."""
    mine = {f: r for f, r in kept.items() if f.split("/", 1)[0] == point.name} | wandb_replay.on_disk(point)
    ids_path = point / tracking.RUN_IDS
    if not ids_path.exists():
        return mine
    ids = set(json.loads(ids_path.read_text()).values())
    return {f: r for f, r in mine.items() if r.get("id") in ids}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("workdirs", nargs="+", type=Path, help="folders of run folders (<point>/config.json)")
    ap.add_argument("--out", required=True, type=Path, help="the JSON Lines file to write, merged into if it exists")
    a = ap.parse_args(argv)
    points = sorted(p.parent for w in a.workdirs for p in w.glob("*/config.json"))
    if not points:
        print(f"error: no run folders (*/config.json) under {', '.join(map(str, a.workdirs))}", file=sys.stderr)
        return 2
    try:
        kept = {r["folder"]: r for r in writers.read_jsonl(a.out)} if a.out.exists() else {}
    except (ValueError, KeyError, TypeError) as e:
        print(
            f"error: {a.out} is not an export to merge into (one JSON object with a 'folder' a line): {e}",
            file=sys.stderr,
        )
        return 2
    try:  # everything read and checked before anything is replayed or written
        held = {point: _held(point, kept) for point in points}
        finished = [wandb_replay.load(p) for p in points if (p / "summary.json").exists()]
        stale = [run for run in finished if not wandb_replay.complete(run, held[run.path].values())]
    except (OSError, ValueError, KeyError, TypeError) as e:
        print(f"error: a run folder under {', '.join(map(str, a.workdirs))} is damaged: {e!r}", file=sys.stderr)
        return 2
    for run in stale:
        wandb_replay.replay(run)  # its offline runs here (images, artifact) give way to one complete run
        print(f"{run.path}: W&B runs missing or incomplete, replayed from metrics.jsonl", flush=True)
        held[run.path] = wandb_replay.on_disk(run.path)
    names = {p.name for p in points}
    kept = {f: r for f, r in kept.items() if f.split("/", 1)[0] not in names}
    for point in points:
        kept |= held[point]
    lines = [json.dumps(kept[f], allow_nan=False, sort_keys=True) for f in sorted(kept)]
    a.out.parent.mkdir(parents=True, exist_ok=True)
    writers.write_text(a.out, "\n".join(lines) + "\n")
    print(f"wrote {a.out} ({len(lines)} runs, {len(stale)} of {len(points)} points replayed)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
