"""The cross-validation that chose `configs/best.py`: one change at a time from its base recipe.

Folds 0 and 1 of the stratified k=5 split (val = each member's held-out fifth of the 60k
training set), seed 0, 5 epochs: a selection budget, not the final one. Points are compared
on val accuracy only; test accuracy is in the table but never chose anything.
"""

import ml_collections

from configs import best

BASELINE = "base"


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    c = best.get_config(arg)
    c.name = "best_recipe"
    c.seeds = (0,)
    c.cv.folds = (0, 1)
    c.eval.tta_flip = False  # compares training recipes; flip averaging is measured on the final run
    if arg != "smoke":
        c.train.epochs = 5
    return c


def get_grid(config: ml_collections.ConfigDict) -> list[tuple[str, dict]]:
    del config  # the same points whatever the base
    return [
        ("base", {}),
        ("erase", {"augment": "crop(2)|flip_lr|erase(0.5)"}),
        ("smooth", {"train.label_smoothing": 0.1}),
        ("lean", {"model.widths": (32, 48, 64), "model.depths": (1, 1, 2)}),
    ]
