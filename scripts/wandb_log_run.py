"""Log finished runs that trained without W&B into W&B offline runs, the ones training would have written.

    .venv/bin/python scripts/wandb_log_run.py results/study/e60/width/grid/w0.5 [more run folders...]

A run trained with `--config.wandb.mode=disabled` (on a machine without wandb, such as the accelerator the study's
grids trained on: `scripts/study_parallel.py`) has every metric in `metrics.jsonl` and `summary.json`. This replays
them through `tracking.WandbWriter`, the writer training uses, so each member gets its offline run in
`<run>/wandb/` (history per epoch, final summary, config with the run's versions and git revision from
`record.json`), ready for `wandb sync` and for `scripts/wandb_export.py`. A run that has offline runs already is
skipped, so that it is never logged twice; an unfinished run is an error (one line, exit 2) before anything is
logged.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from fmnist_jax import config_lib, members, tracking  # noqa: E402
from fmnist_jax.writers import read_jsonl  # noqa: E402


def log_run(run: Path) -> bool:
    """Replay `run` into offline W&B runs; False if it has some already."""
    if any(run.glob("wandb/offline-run-*")):
        return False
    config = config_lib.from_dict(json.loads((run / "config.json").read_text()))
    config.wandb.mode = "offline"
    summary = json.loads((run / "summary.json").read_text())
    extra = {"params": summary["params"], "data_digest": summary["data_digest"]}
    writer = tracking.WandbWriter(config, members.members_of(config), run, extra=extra)
    try:
        for _, rows in itertools.groupby(read_jsonl(run / "metrics.jsonl"), key=lambda r: r["epoch"]):
            writer.write(list(rows))
        writer.write_summary(summary)
    finally:
        writer.close()
    return True


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("runs", nargs="+", type=Path, help="finished run folders (config, metrics, summary)")
    args = ap.parse_args(argv)
    missing = [f"{r}/{f}" for r in args.runs for f in ("config.json", "metrics.jsonl", "summary.json")]
    missing = [m for m in missing if not Path(m).is_file()]
    if missing:
        print(f"error: not finished runs: {', '.join(missing)} missing", file=sys.stderr)
        return 2
    for run in args.runs:
        print(f"{run}: {'logged offline' if log_run(run) else 'has W&B runs already, skipped'}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
