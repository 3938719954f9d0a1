"""The cross-validation that chose `configs/best.py`: one change at a time from a candidate base.

The base (`configs/best.py`'s `recipe`) is the recipe written down before any of these runs
(a FLOP-lean residual CNN, crop + hflip, AdamW with warmup and cosine decay); each point
changes one thing. Folds 0 and 1 of the stratified k=5 split (val = each member's held-out
fifth of the 60k training set), seed 0, 5 epochs: a selection budget, not the final one.
Points are compared on val accuracy only; test accuracy is in the table but chose nothing.
"""

import ml_collections

from configs import best
from fmnist_jax import config_lib

BASELINE = "base"


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    a = config_lib.parse_arg(arg, smoke=False)
    c = best.recipe(arg)
    c.name = "best_recipe"
    c.cv.folds = (0, 1)
    if not a.smoke:
        c.train.epochs = 5
    return c


def get_grid(config: ml_collections.ConfigDict) -> list[tuple[str, dict]]:
    del config  # the same points whatever the base
    return [
        ("base", {}),
        ("erase", {"augment": "crop(2)|flip_lr|erase(0.5)"}),
        ("smooth", best.CHOSEN),
        ("lean", {"model.widths": (32, 48, 64), "model.depths": (1, 1, 2)}),
    ]
