#!/usr/bin/env bash
# Real-data check: smoke config split into 2 epochs of 75 steps (same 150 steps) so a mid-run checkpoint exists.
set -u
cd /work/main
R=results/checkpoint_resume
ARGS="--config configs/default.py:smoke --config.train.epochs=2 --config.train.steps_per_epoch=75 --noprogress"
rm -rf runs/smoke3 runs/smoke3_ref
date -u +"start %FT%TZ"
fmnist-jax train $ARGS --workdir runs/smoke3 > $R/train_killed.log 2>&1 &
pid=$!
until [ -d runs/smoke3/checkpoints/1 ]; do sleep 1; kill -0 $pid 2>/dev/null || { echo "train ended before checkpoint 1"; exit 1; }; done
sleep 5   # epoch 2 under way
kill -9 $pid; wait $pid 2>/dev/null
date -u +"killed %FT%TZ with -9 after checkpoints/1 appeared"
ls runs/smoke3/checkpoints; wc -l runs/smoke3/metrics.jsonl
fmnist-jax train $ARGS --workdir runs/smoke3 > $R/train_resumed.log 2>&1; echo "resumed rc=$?"
date -u +"resumed-done %FT%TZ"
fmnist-jax train $ARGS --workdir runs/smoke3 > $R/train_rerun_finished.log 2>&1; echo "rerun rc=$?"
fmnist-jax train $ARGS --workdir runs/smoke3_ref > $R/train_uninterrupted.log 2>&1; echo "reference rc=$?"
date -u +"reference-done %FT%TZ"
fmnist-jax evaluate --workdir runs/smoke3 > $R/evaluate.log 2>&1; echo "evaluate rc=$?"
fmnist-jax evaluate --workdir runs/smoke3 --member 1,0 > $R/evaluate_member_1_0.log 2>&1; echo "evaluate member rc=$?"
cp runs/smoke3/summary.json $R/summary_resumed.json; cp runs/smoke3_ref/summary.json $R/summary_uninterrupted.json
cp runs/smoke3/metrics.jsonl $R/metrics_resumed.jsonl; cp runs/smoke3_ref/metrics.jsonl $R/metrics_uninterrupted.jsonl
cp runs/smoke3/record.json $R/record_resumed.json
cp runs/smoke3/eval/evaluation.json runs/smoke3/eval/confusion.png $R/
date -u +"done %FT%TZ"
