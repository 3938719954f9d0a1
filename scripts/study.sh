#!/usr/bin/env bash
# Issue 17's study on the real data: every grid with 5 members per point (folds 0-4 of k=5, seed 0) at one
# budget, into results/study/<grid>/ (table.md/csv, chart.png, deltas.png, summaries/) with each point's run under
# results/study/<grid>/grid/<point>/, so that in-flight points' latest checkpoints can be committed at a
# session's stop and the same command resumes them.
#
#   EPOCHS=10 bash scripts/study.sh check   # the learning-curve check: augmentation at EPOCHS, then its
#                                           # top 3 and crop_hflip at 3 x EPOCHS, compared by
#                                           # scripts/budget_check.py
#   EPOCHS=10 bash scripts/study.sh grids   # every grid at EPOCHS, which the check must have accepted (the
#                                           # default recipe, every grid's baseline, is trained once)
#   bash scripts/study.sh prune             # drop finished points' checkpoints (their results stay)
# SMOKE=1 OUT=/tmp/study EXTRA='--config.train.steps_per_epoch=5' EPOCHS=1 bash scripts/study.sh check  # a try
set -euo pipefail
cd "$(dirname "$0")/.."
# One host device: points then train one after another, 5 members each, which on this 2-core CPU is 1.13-1.19x as
# fast as on 2 devices for the points that cannot pack (width, depth, BatchNorm/residual) and within 5% of packing
# 2 devices for those that can (results/bench/packing/lean_*.md); and only one point is in flight at a stop.
export JAX_NUM_CPU_DEVICES=${JAX_NUM_CPU_DEVICES:-1}
OUT=${OUT:-results/study}
ablate() {  # ablate GRID NAME [extra ablate flags...]
  local grid=$1 name=$2 spec
  shift 2
  : "${EPOCHS:?set EPOCHS, the budget under test}"
  spec="ablations/${grid%%:*}.py"
  if [[ $grid == *:* ]]; then spec+=":${grid#*:}${SMOKE:+,smoke}"; elif [ -n "${SMOKE:-}" ]; then spec+=":smoke"; fi
  # shellcheck disable=SC2086
  .venv/bin/fmnist-jax ablate "$spec" --workdir "$OUT/$name/grid" --out "$OUT/$name" \
    --progress=false --config.train.epochs="$EPOCHS" --config.checkpoint.max_to_keep=1 ${EXTRA:-} "$@"
  # the W&B offline runs, exported to one committed file (they wait in grid/*/wandb/ for `wandb sync`)
  if compgen -G "$OUT/$name/grid/*/wandb/offline-run-*" > /dev/null; then
    .venv/bin/python scripts/wandb_export.py "$OUT/$name/grid" --out "$OUT/$name/wandb_runs.jsonl"
  fi
}
share() {  # share FROM TO: a finished point's results, for a point of the same computation in another grid
  if [ ! -e "$OUT/$2/summary.json" ]; then
    mkdir -p "$OUT/$2"
    cp "$OUT/$1"/{config,record,metrics,summary,ablate}.json* "$OUT/$2/"
  fi
}
case ${1:-} in
  check)
    ablate augmentation augmentation
    # the long run: augmentation's top 3 at EPOCHS, and crop_hflip, the augmentation configs/best.py deploys
    # (augmentation that regularises pays off only with longer training, so the longer budget may lift it)
    check=(--short "$OUT/augmentation" --top 3 --also crop_hflip)
    points=$(.venv/bin/python scripts/budget_check.py "${check[@]}" --points)  # set -e: a failure stops here
    # shellcheck disable=SC2086
    EPOCHS=$((3 * EPOCHS)) ablate augmentation budget_check/long $points
    .venv/bin/python scripts/budget_check.py "${check[@]}" --long "$OUT/budget_check/long" --out "$OUT/budget_check"
    ;;
  grids)
    # only at a budget the learning-curve check accepted (a smoke try checks the plumbing, not the budget)
    if [ -z "${SMOKE:-}" ]; then
      .venv/bin/python scripts/budget_check.py --accepts "${EPOCHS:?set EPOCHS}" --out "$OUT/budget_check"
    fi
    ablate augmentation augmentation
    # the study's base (configs/study.py) is every one of these grids' baseline: trained once, shared (the same
    # computation under another name); so is the deepest network, the same in both depth grids
    for to in training/grid/base architecture/grid/bn_residual width/grid/w1.0 depth/grid/d122; do
      share augmentation/grid/hflip "$to"
    done
    ablate architecture architecture
    ablate training training
    ablate width width
    ablate depth depth
    share depth/grid/d333 depth_fixed/grid/d333
    ablate depth:fixed depth_fixed
    .venv/bin/python scripts/study_findings.py "$OUT"  # findings.md: each point's verdict, read off the tables
    ;;
  prune)
    for s in "$OUT"/*/grid/*/summary.json "$OUT"/*/*/grid/*/summary.json; do
      if [ -e "$s" ]; then rm -rf "$(dirname "$s")/checkpoints"; fi
    done
    ;;
  *) echo "usage: EPOCHS=N bash scripts/study.sh check|grids|prune" >&2; exit 2 ;;
esac
