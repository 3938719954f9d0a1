"""Issue 18's last ideas, each against the best recipe it would join: alternating flip and squeeze-excitation.

`configs/best.py:cross_validated` (the 36-epoch recipe on fold 0, the original 80/20 split, whose 4 seeds reached
val 93.57 ± 0.06% with flip averaging) with seeds 0 and 1. `flip_alt` is the same network (it trains packed with
the baseline) mirrored the other way each epoch instead of by a coin toss; `se` adds squeeze-excitation with
ratio 16 in every block (98,889 parameters). Every point also keeps a weight average (`train.ema_decay` 0.999, as
`configs/distill.py`), which never changes training: each run's weights against their own average is a paired
measurement of weight averaging at this budget too. Compared on val accuracy only; test chooses nothing.
36 epochs, not the final 100: the budget at which the 4-seed spread is known, at about a third of the compute.
"""

import ml_collections

from configs import best
from fmnist_jax import config_lib

BASELINE = "base"


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    a = config_lib.parse_arg(arg, smoke=False)
    c = best.cross_validated(a.smoke)
    c.name = "recipe_ideas"
    c.seeds = (0, 1)
    c.train.ema_decay = 0.999
    # validation with two views, twice (the weights, their average), costs about a third of an epoch
    c.eval.every_epochs = 1 if a.smoke else 6
    return c


def get_grid(config: ml_collections.ConfigDict) -> list[tuple[str, dict]]:
    del config  # the same points whatever the base
    return [
        ("base", {}),
        ("flip_alt", {"augment": "crop(2)|flip_alt"}),
        ("se", {"model.se": 16}),
    ]
