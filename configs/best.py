"""The best recipe found within 100k parameters and this project's CPU budget (issues 5 and 18).

Chosen by cross-validation on the training set only (`ablations/best_recipe.py`, val
accuracy of folds 0 and 1; results/best/README.md): that grid's base, a FLOP-lean residual
CNN that does one conv at 28x28 and the rest at 14x14 and 7x7 (96,978 params, 16.8
MFLOP/image against the reference CNN's 36.8, so about twice the epochs per CPU hour), random
2-pixel crops + horizontal flips (no vertical flip: it cost 3.6 points in
results/ablation_augmentation), AdamW with warmup and cosine decay, plus its winning point,
label smoothing 0.1 (random erasing and a leaner net lost).

Then, on validation data of the 80/20 split only (issue 18): 100 epochs instead of 36
(`ablations/long_budget.py`: val 93.99% against 93.53%) and test-time views of flip x 1-pixel
moves (`scripts/tta_views.py`: val +0.34 and +0.12 points over flip alone on two 100-epoch runs).
With the recipe fixed, the final models (seeds 0-3, trained together) learn from all 60,000
training images (`cv.holdout=False`): nothing is left to validate on, and test is touched once,
at the end. `configs/best.py:holdout` is the same recipe on the original 80/20 split.
"""

import ml_collections

from configs import default
from fmnist_jax import config_lib

CHOSEN = {"train.label_smoothing": 0.1}  # ablations/best_recipe.py's point "smooth", chosen by val accuracy


# The FLOP-lean residual CNN: one conv at 28x28, the rest at 14x14 and 7x7 (96,978 params, 16.8 MFLOP/image)
NETWORK = {"model.widths": (24, 48, 64), "model.depths": (1, 2, 2), "model.residual": True}


def recipe(arg: str | None = None) -> ml_collections.ConfigDict:
    """The recipe written down before the cross-validation: the base of `ablations/best_recipe.py`."""
    c = config_lib.with_overrides(default.get_config(arg), NETWORK)
    c.augment = "crop(2)|flip_lr"
    c.optim.update(name="adamw", lr=2e-3, weight_decay=0.05, schedule="cosine", warmup_epochs=1.0)
    return c


def cross_validated(smoke: bool = False) -> ml_collections.ConfigDict:
    """The recipe as `ablations/best_recipe.py` chose it: seeds 0-3 on fold 0, 36 epochs, flip averaging
    (results/best/'s 36-epoch run; the base of `ablations/long_budget.py`)."""
    c = config_lib.with_overrides(recipe("smoke" if smoke else None), CHOSEN)
    c.name = "best_smoke" if smoke else "best"
    c.seeds = (0, 1, 2, 3)
    c.cv.folds = (0,)
    c.eval.tta_flip = True
    if not smoke:
        c.train.epochs = 36
    return c


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    """The final recipe; `:holdout` on the 80/20 split; `:cross_validated` the 36-epoch run of results/best/."""
    a = config_lib.parse_arg(arg, smoke=False, holdout=False, cross_validated=False)
    if a.cross_validated:
        return cross_validated(a.smoke)
    c = cross_validated(a.smoke)
    c.name = ("best_holdout" if a.holdout else "best") + ("_smoke" if a.smoke else "")
    c.cv.holdout = a.holdout
    c.eval.tta_shift = 1
    if not a.smoke:
        c.train.epochs = 100
    return c
