"""The original study's recipe: 80/20 split (fold 0 of k=5), H+V flips, [-1, 1], Adam 1e-3, cross-entropy."""

import ml_collections

from configs import default
from fmnist_jax import config_lib


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    a = config_lib.parse_arg(arg, smoke=False)
    c = default.get_config(arg)
    c.name = "seed_study"
    c.cv.folds = (0,)
    c.augment = "flip_lr|flip_ud"
    c.optim.schedule = "constant"
    c.train.epochs = 1 if a.smoke else 10
    return c
