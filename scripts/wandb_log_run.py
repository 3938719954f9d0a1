"""Log finished runs whose W&B runs are missing or incomplete into W&B offline runs, the ones training would write.

    .venv/bin/python scripts/wandb_log_run.py results/study/e60/width/grid/w0.5 [more run folders...]

A run trained with `--config.wandb.mode=disabled` (on a machine without wandb, such as the accelerator the study's
grids trained on: `scripts/study_parallel.py`), or one with such a segment, or one resumed on a fresh checkout
whose earlier segments' offline runs are gone, has every metric in `metrics.jsonl` and `summary.json`. This
replays them (`fmnist_jax.wandb_replay`), so each member gets one complete offline run in `<run>/wandb/`, ready
for `wandb sync` and for `scripts/wandb_export.py`; the run's incomplete offline runs and their ids are replaced.
A run whose offline runs here hold it whole is skipped, so that it is never logged twice; an unfinished run is an
error (one line, exit 2) before anything is logged.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from fmnist_jax import wandb_replay  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("runs", nargs="+", type=Path, help="finished run folders (config, metrics, summary)")
    args = ap.parse_args(argv)
    missing = [f"{r}/{f}" for r in args.runs for f in ("config.json", "metrics.jsonl", "summary.json")]
    missing = [m for m in missing if not Path(m).is_file()]
    if missing:
        print(f"error: not finished runs: {', '.join(missing)} missing", file=sys.stderr)
        return 2
    try:  # every run read and checked before any is logged
        runs = [wandb_replay.load(run) for run in args.runs]
        done = [wandb_replay.complete(run, wandb_replay.on_disk(run.path).values()) for run in runs]
    except (OSError, ValueError, KeyError, TypeError) as e:
        print(f"error: a run folder is damaged: {e!r}", file=sys.stderr)
        return 2
    for run, whole in zip(runs, done, strict=True):
        if whole:
            print(f"{run.path}: has complete W&B runs already, skipped", flush=True)
        else:
            wandb_replay.replay(run)
            print(f"{run.path}: logged offline", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
