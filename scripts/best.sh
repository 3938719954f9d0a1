#!/usr/bin/env bash
# Issue 18's final models end to end: train configs/best.py (seeds 0-3 together on all 60,000 training
# images, sharded over 2 host CPU devices) in results/best_final/run, where its latest checkpoints are
# committed while it is in flight; then evaluate on test with the recipe's views (flip x 1-pixel moves),
# flip alone and one view, export the first member (seed 0: nothing is held out to choose by), and write
# the report. Re-running resumes an interrupted training; extra arguments go to `train` (e.g. overrides).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-results/best_final}
RUN=${RUN:-$OUT/run}
export JAX_NUM_CPU_DEVICES=${JAX_NUM_CPU_DEVICES:-2}
cli() { .venv/bin/python -m fmnist_jax.cli "$@"; }
cli train --config configs/best.py --workdir "$RUN" --noprogress --config.wandb.mode=disabled "$@"
cli evaluate --workdir "$RUN" --out "$OUT/eval"
cli evaluate --workdir "$RUN" --out "$OUT/eval" --tta_shift=0
cli evaluate --workdir "$RUN" --out "$OUT/eval" --tta_flip=false --tta_shift=0
cli export --workdir "$RUN" --out "$OUT/model"
cli report --workdir "$RUN" --out "$OUT/report"
