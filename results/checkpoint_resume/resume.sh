#!/usr/bin/env bash
# Real-data resume check on a frozen copy of one commit (the shared checkout changes under long runs).
set -u
cd /tmp/h3/frozen
R=/work/main/results/checkpoint_resume
W=/work/main/runs
ARGS="--config configs/default.py:smoke --config.train.epochs=2 --config.train.steps_per_epoch=40 --noprogress"
rm -rf $W/resume_killed $W/resume_ref
echo "code: git archive of $(cat REV)"
date -u +"start %FT%TZ"
PYTHONPATH=. python -m fmnist_jax.cli train $ARGS --workdir $W/resume_ref > $R/resume_uninterrupted.log 2>&1 &
ref=$!
PYTHONPATH=. python -m fmnist_jax.cli train $ARGS --workdir $W/resume_killed > $R/resume_killed.log 2>&1 &
pid=$!
until [ -d $W/resume_killed/checkpoints/1 ]; do sleep 1; kill -0 $pid 2>/dev/null || { echo "ended before checkpoint 1"; exit 1; }; done
sleep 3
kill -9 $pid; wait $pid 2>/dev/null
date -u +"killed %FT%TZ with -9 after checkpoints/1 appeared"
ls $W/resume_killed/checkpoints; wc -l < $W/resume_killed/metrics.jsonl
PYTHONPATH=. python -m fmnist_jax.cli train $ARGS --workdir $W/resume_killed > $R/resume_resumed.log 2>&1; echo "resumed rc=$?"
wait $ref; echo "reference rc=$?"
date -u +"done %FT%TZ"
