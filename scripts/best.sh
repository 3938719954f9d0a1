#!/usr/bin/env bash
# Issue 5's result end to end: train configs/best.py (its seeds together, sharded over 2 host
# CPU devices), evaluate on test with and without flip averaging, export the member with the
# best validation accuracy, write the report, and copy what results/best/ commits (config,
# record, metrics, summary and the final Orbax checkpoint, which evaluate/export accept).
# Re-running resumes an interrupted training; extra arguments go to `train` (e.g. overrides).
set -euo pipefail
cd "$(dirname "$0")/.."
RUN=${RUN:-runs/best}
OUT=${OUT:-results/best}
export JAX_NUM_CPU_DEVICES=${JAX_NUM_CPU_DEVICES:-2}
cli() { python3 -m fmnist_jax.cli "$@"; }
cli train --config configs/best.py --workdir "$RUN" --noprogress --config.wandb.mode=disabled "$@"
cli evaluate --workdir "$RUN" --out "$OUT/eval"
cli evaluate --workdir "$RUN" --out "$OUT/eval" --tta_flip=false
cli export --workdir "$RUN" --out "$OUT/model"
cli report --workdir "$RUN" --out "$OUT/report"
rm -rf "$OUT/run" && mkdir -p "$OUT/run/checkpoints"
cp "$RUN"/{config.json,record.json,metrics.jsonl,summary.json} "$OUT/run/"
last=$(ls "$RUN/checkpoints" | grep -E '^[0-9]+$' | sort -n | tail -1)
cp -r "$RUN/checkpoints/$last" "$OUT/run/checkpoints/"
