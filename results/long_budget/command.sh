python3 -m fmnist_jax.cli ablate ablations/long_budget.py --workdir results/long_budget/grid --out results/long_budget --progress=false --config.wandb.mode=disabled
