# How it was called (2026-12-06, from the checkout root, .gpu/ holding this script): `bash .gpu/run.sh`, then
# `GRIDS=architecture=architecture DEADLINE=280 bash .gpu/run.sh` with the other points' folders moved aside.
# Issue 17's grids on the lent GPU (session of 2026-12-06 from 10:53 UTC): the architecture and training grids'
# unfinished points at 120 epochs, side by side (scripts/study_parallel.py), to a deadline; their checkpoints
# come back and the CPU resumes them. .gpu/ carries the data (xz of the raw IDX) and wheels of this repository's
# flax, optax, orbax-checkpoint, chex and ml_collections versions.
export PYTHONUNBUFFERED=1; nvidia-smi -L; date -u
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .gpu/whl/*.whl || exit 9
mkdir -p /tmp/fm && python3 -c "
import glob, lzma, os
for f in glob.glob('.gpu/data/*.xz'): open('/tmp/fm/' + os.path.basename(f)[:-3], 'wb').write(lzma.open(f).read())" || exit 9
export PYTHONPATH=/tmp/site:$PWD FMNIST_DATA_DIR=/tmp/fm XLA_FLAGS=--xla_gpu_deterministic_ops=true XLA_PYTHON_CLIENT_PREALLOCATE=false
V='import fmnist_jax.train, jax, flax, optax, orbax.checkpoint as o, chex; print(jax.__version__, flax.__version__, optax.__version__, o.__version__, chex.__version__, jax.devices())'
python3 -c "$V" || { rm -rf /tmp/site; python3 -m pip install -q --no-index --no-deps --target /tmp/site .gpu/whl/ml_collections*; python3 -c "$V" || exit 9; }
nvidia-cuda-mps-control -d && { timeout 60 python3 -c "import jax.numpy as n; print(n.ones(3).sum())" && echo MPS on || echo quit | nvidia-cuda-mps-control; }
nvidia-smi --query-gpu=timestamp,utilization.gpu,memory.used --format=csv -l 15 > $OUT/smi.csv &
D=results/study/e120; date -u
timeout 500 python3 scripts/study_parallel.py --dir $D --epochs 120 --jobs 10 --deadline ${DEADLINE:-400} --grace 40 \
  ${GRIDS:-architecture=architecture training=training} -- --config.wandb.mode=disabled 2>&1 | tee $OUT/parallel.log
date -u; tail -3 $D/parallel/*.log
cd $D; tar czf $OUT/results.tgz --exclude=checkpoints --exclude=wandb architecture/grid training/grid parallel
U=$(for d in architecture/grid/*/ training/grid/*/; do [ -e ${d}summary.json ] || ls -d ${d}checkpoints 2>/dev/null; done)
echo "$U"; [ -n "$U" ] && tar cf - $U | split -b 15m -d - $OUT/ckpt.tar.
ls -la $OUT; nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv; date -u
