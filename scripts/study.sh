#!/usr/bin/env bash
# Issue 17's study on the real data: every grid with 5 members per point (folds 0-4 of k=5, seed 0) at one
# budget of EPOCHS epochs, into results/study/e<EPOCHS>/: each grid's results in <grid>/ (table.md/csv, chart.png,
# deltas.png, summaries/) with each point's run under <grid>/grid/<point>/, so that in-flight points' latest
# checkpoints can be committed at a session's stop and the same command resumes them; and the learning-curve
# check of that budget in budget_check/. A budget the check rejects keeps its folder as the evidence.
#
#   EPOCHS=30 bash scripts/study.sh check   # the learning-curve check: augmentation at EPOCHS, then its top 3
#                                           # and crop_hflip at LONG_EPOCHS (default 2 x EPOCHS), compared by
#                                           # scripts/budget_check.py (where an earlier check's long run gave
#                                           # points at EPOCHS, their long run comes first: budget_check/provisional/)
#   EPOCHS=30 bash scripts/study.sh grids   # every grid at EPOCHS, which the check must have accepted (the
#                                           # default recipe, every grid's baseline, is trained once)
#   bash scripts/study.sh prune             # drop finished points' checkpoints (their results stay)
# EPOCHS=10 LONG_EPOCHS=30 bash scripts/study.sh check reproduces the first check, which rejected 10 epochs.
# SMOKE=1 OUT=/tmp/study EXTRA='--config.train.steps_per_epoch=5' EPOCHS=1 bash scripts/study.sh check  # a try
set -euo pipefail
shopt -s globstar
cd "$(dirname "$0")/.."
# One host device: points then train one after another, 5 members each, which on this 2-core CPU is 1.13-1.19x as
# fast as on 2 devices for the points that cannot pack (width, depth, BatchNorm/residual) and within 5% of packing
# 2 devices for those that can (results/bench/packing/lean_*.md); and only one point is in flight at a stop.
export JAX_NUM_CPU_DEVICES=${JAX_NUM_CPU_DEVICES:-1}
OUT=${OUT:-results/study}
DIR=$OUT/e${EPOCHS:-}
ablate() {  # ablate GRID NAME [extra ablate flags...]: GRID's points at EPOCHS into $DIR/NAME; with VS=POINT, the
  local grid=$1 name=$2 spec  # finished points' table paired against POINT instead, into $DIR/NAME/vs_POINT
  shift 2
  spec="ablations/${grid%%:*}.py"
  if [[ $grid == *:* ]]; then spec+=":${grid#*:}${SMOKE:+,smoke}"; elif [ -n "${SMOKE:-}" ]; then spec+=":smoke"; fi
  # shellcheck disable=SC2086
  .venv/bin/fmnist-jax ablate "$spec" --workdir "$DIR/$name/grid" --out "$DIR/$name${VS:+/vs_$VS}" \
    ${VS:+--baseline "$VS"} --progress=false --config.train.epochs="$EPOCHS" --config.checkpoint.max_to_keep=1 \
    ${EXTRA:-} "$@"
  # the W&B offline runs, exported to one committed file (they wait in grid/*/wandb/ for `wandb sync`); a VS
  # table trains nothing, so the grid's own call has exported them already
  if [ -z "${VS:-}" ] && compgen -G "$DIR/$name/grid/*/wandb/offline-run-*" > /dev/null; then
    .venv/bin/python scripts/wandb_export.py "$DIR/$name/grid" --out "$DIR/$name/wandb_runs.jsonl"
  fi
}
share() {  # share FROM TO: a finished point's results, for a point of the same computation elsewhere
  if [ ! -e "$2/summary.json" ]; then  # (`ablate` refuses a copy whose config differs from its point's)
    mkdir -p "$2"  # ablate.json only where a point trained before 2026-12-03; summary last: it marks the copy done
    for f in config.json record.json metrics.jsonl ablate.json summary.json; do
      if [ -e "$1/$f" ]; then cp "$1/$f" "$2/"; fi
    done
  fi
}
long_check() {  # long_check SHORT OUT: the learning-curve check of grid results SHORT into OUT: its top 3, and
  # crop_hflip (the augmentation configs/best.py deploys; augmentation that regularises pays off only with longer
  # training, so the longer budget may lift it), trained at LONG_EPOCHS into $DIR/budget_check/long
  local check=(--short "$1" --top 3 --also crop_hflip) points
  points=$(.venv/bin/python scripts/budget_check.py "${check[@]}" --points)  # set -e: a failure stops here
  # shellcheck disable=SC2086
  EPOCHS=${LONG_EPOCHS:-$((2 * EPOCHS))} ablate augmentation budget_check/long $points
  .venv/bin/python scripts/budget_check.py "${check[@]}" --long "$DIR/budget_check/long" --out "$2"
}
epochs_of() { .venv/bin/python -c 'import json, sys; print(json.load(open(sys.argv[1]))["train"]["epochs"])' "$1"; }
case ${1:-} in
  check)
    : "${EPOCHS:?set EPOCHS, the budget under test}"
    # an earlier check's long run at this budget is this budget's augmentation points: copied, not retrained
    earlier=
    for s in "$OUT"/e*/budget_check/long/grid/*/summary.json; do
      if [ -e "$s" ] && [ "$(epochs_of "$(dirname "$s")/config.json")" = "$EPOCHS" ]; then
        share "$(dirname "$s")" "$DIR/augmentation/grid/$(basename "$(dirname "$s")")"
        earlier=${s%/grid/*}
      fi
    done
    # those points led the grid at the shorter budget, so they are the likely top 3 here: their long run first
    # gives a provisional verdict a whole grid sooner (and a rejection then costs no grid at this budget); the
    # verdict is the finished grid's, whose top 3 train long as well where they differ
    if [ -n "$earlier" ]; then long_check "$earlier" "$DIR/budget_check/provisional"; fi
    ablate augmentation augmentation
    long_check "$DIR/augmentation" "$DIR/budget_check"
    ;;
  grids)
    : "${EPOCHS:?set EPOCHS, the budget the check accepted}"
    # only at a budget the learning-curve check accepted (a smoke try checks the plumbing, not the budget)
    if [ -z "${SMOKE:-}" ]; then
      .venv/bin/python scripts/budget_check.py --accepts "$EPOCHS" --out "$DIR/budget_check"
    fi
    ablate augmentation augmentation
    # what the baseline (flip alone) cannot ask: whether erasing, or flip, adds to crop + flip, the augmentation
    # configs/best.py deploys; and whether each augmentation beats none at all
    VS=crop_hflip ablate augmentation augmentation
    VS=none ablate augmentation augmentation
    # the study's base (configs/study.py) is every one of these grids' baseline: trained once, shared (the same
    # computation under another name); so is the deepest network, the same in both depth grids
    for to in training/grid/base architecture/grid/bn_residual width/grid/w1.0 depth/grid/d122; do
      share "$DIR/augmentation/grid/hflip" "$DIR/$to"
    done
    ablate architecture architecture
    ablate training training
    ablate width width
    ablate depth depth
    share "$DIR/depth/grid/d333" "$DIR/depth_fixed/grid/d333"
    ablate depth:fixed depth_fixed
    .venv/bin/python scripts/study_findings.py "$DIR"  # findings.md: each point's verdict, read off the tables
    ;;
  prune)
    for s in "$OUT"/**/grid/*/summary.json; do
      if [ -e "$s" ]; then rm -rf "$(dirname "$s")/checkpoints"; fi
    done
    ;;
  *) echo "usage: EPOCHS=N [LONG_EPOCHS=M] bash scripts/study.sh check|grids, or bash scripts/study.sh prune" >&2; exit 2 ;;
esac
