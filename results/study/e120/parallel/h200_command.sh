# The command run on the NVIDIA H200 on 2026-12-04 13:22 UTC (one call of the sessions' device tool, in a copy of
# the checkout at 86dbcbd; .gpu/ carried Debian's four Fashion-MNIST .gz files and wheels of ml_collections 1.1.0,
# flax 0.12.8, optax 0.2.8, orbax-checkpoint 0.12.8, chex 0.1.92; $OUT is the folder whose files came back).
export PYTHONUNBUFFERED=1; nvidia-smi -L
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .gpu/whl/*.whl || exit 9
export PYTHONPATH=/tmp/site:$PWD FMNIST_DATA_DIR=$PWD/.gpu/data XLA_FLAGS=--xla_gpu_deterministic_ops=true XLA_PYTHON_CLIENT_PREALLOCATE=false
python3 -c "import fmnist_jax.train, jax, flax; print(jax.__version__, flax.__version__, jax.devices())" || { rm -rf /tmp/site; python3 -m pip install -q --no-index --no-deps --target /tmp/site .gpu/whl/ml_collections*; python3 -c "import fmnist_jax.train" || exit 9; }
nvidia-cuda-mps-control -d && { timeout 60 python3 -c "import jax.numpy as n; print(n.ones(3).sum())" && echo MPS on || echo quit | nvidia-cuda-mps-control; }
nvidia-smi --query-gpu=timestamp,utilization.gpu,memory.used --format=csv -l 15 > $OUT/smi.csv &
A="python3 -m fmnist_jax.cli ablate ablations/augmentation.py --progress=false --pack=on --config.checkpoint.max_to_keep=1 --config.wandb.mode=disabled"; D=results/study/e120; mkdir -p $D/parallel
$A --workdir $D/augmentation/grid --out /tmp/a --point=none --point=hflip --point=hflip_alt --point=vflip --point=hflip_vflip --config.train.epochs=120 > $D/parallel/aug120.log 2>&1 & P1=$!
$A --workdir $D/budget_check/long/grid --out /tmp/b --point=crop --point=crop_hflip --point=crop_hflip_erase --config.train.epochs=240 > $D/parallel/long240.log 2>&1 & P2=$!
for i in $(seq 45); do sleep 10; { kill -0 $P1 || kill -0 $P2; } 2>/dev/null || break; done; kill -TERM $P1 $P2; sleep 35; kill -9 $P1 $P2; tail -4 $D/parallel/*.log
cd $D; tar czf $OUT/results.tgz --exclude=checkpoints augmentation budget_check parallel
U=$(for d in */grid/*/ */*/grid/*/; do [ -e ${d}summary.json ] || ls -d ${d}checkpoints/[0-9]* 2>/dev/null; done | awk -F/ '{print $NF, $0}' | sort -rn | head -9 | cut -d' ' -f2 | sed 's,/[0-9]*$,,')
[ -n "$U" ] && tar czf - $U | split -b 15m -d - $OUT/ckpt.tgz.
ls -la $OUT; nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv
