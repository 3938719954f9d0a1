"""The study's base (issue 17): the default recipe on `configs/best.py`'s FLOP-lean residual network.

The default training recipe (horizontal flip, Adam 1e-3 with cosine decay, batch 128, no label smoothing, 5-fold
CV x 1 seed), so each grid asks what one change does to a plain recipe, as the original study tuned one. The
network is the lean one rather than the reference CNN because its train step is 1.78x as fast on this CPU at the
same budget (96,978 against 98,122 parameters; 1,163 against 652 img/s, median, paired in one run on the 2-core
AMD EPYC with AVX-512: `results/bench/lean/cpu.md`), which cuts the study's compute from about 30 CPU hours to
about 15-17, and because it is the network the project deploys.
"""

import ml_collections

from configs import best, default
from fmnist_jax import config_lib


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    c = config_lib.with_overrides(default.get_config(arg), best.NETWORK)
    c.name = "study"
    return c
