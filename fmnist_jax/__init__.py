"""fmnist_jax: reproducible ablation studies of small (<=100k parameter) CNNs on Fashion-MNIST.

The Python API, five entry points (each documented where it lives):

    import fmnist_jax
    from configs import default

    summary = fmnist_jax.train_and_evaluate(default.get_config("smoke"), "runs/smoke")  # folds x seeds together
    a, b = fmnist_jax.train_packed([(config_a, "runs/a"), (config_b, "runs/b")])  # two configs, one program
    run = fmnist_jax.restore_run("runs/smoke")                  # latest checkpoint, model and eval step only
    probs = run.predict(images_u8)                              # uint8 [N, 28, 28] -> [members, N, 10]
    probs0 = run.select(fold=0, seed=0).predict(images_u8)[0]   # one member: [N, 10]
    table = fmnist_jax.run_grid(fmnist_jax.load_grid("ablations/width.py:smoke"), "runs/width")

(The names differ from the modules that hold them, `fmnist_jax.train` and `fmnist_jax.restore`,
because a submodule, once imported, would shadow a package attribute of the same name.)

Names resolve on first use (PEP 562), so `import fmnist_jax` and the CLI's `--help` load no JAX.
"""

from __future__ import annotations

import importlib
from typing import Any

_API = {
    "train_and_evaluate": ("fmnist_jax.train", "train_and_evaluate"),
    "train_packed": ("fmnist_jax.train", "train_packed"),
    "restore_run": ("fmnist_jax.restore", "restore"),
    "Restored": ("fmnist_jax.restore", "Restored"),
    "load_grid": ("fmnist_jax.ablation", "load"),
    "run_grid": ("fmnist_jax.ablation", "run"),
}
__all__ = sorted(_API)


def __getattr__(name: str) -> Any:
    if name not in _API:
        raise AttributeError(f"module 'fmnist_jax' has no attribute {name!r}")
    module, attr = _API[name]
    return getattr(importlib.import_module(module), attr)
