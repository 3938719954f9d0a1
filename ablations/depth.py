"""Depth ablation of the study's network (`configs/study.py`): conv blocks per stage from (1,1,1) to (3,3,3).

`grid.fit_width=True` (the default) fits each depth's widths to the parameter budget
(`models.fit_width`), so depths are compared at equal parameter counts (~97-99k);
`depth.py:fixed` (or `:fixed,smoke`) gives every depth the same widths, those that fit the deepest net
within budget, so deeper also means more parameters.
"""

import ml_collections

from configs import study
from fmnist_jax import config_lib
from fmnist_jax import models

BASELINE = "d122"  # the study network's depths
DEPTHS = ((1, 1, 1), (1, 2, 2), (2, 2, 2), (2, 3, 3), (3, 3, 3))


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    a = config_lib.parse_arg(arg, smoke=False, fixed=False)
    c = study.get_config("smoke" if a.smoke else None)
    c.name = "depth"
    c.grid = ml_collections.ConfigDict(dict(fit_width=not a.fixed))
    return c


def get_grid(config: ml_collections.ConfigDict) -> list[tuple[str, dict]]:
    base = models.build(config).clone(depths=DEPTHS[-1])
    shared = models.fit_width(base, config.max_params).widths
    points = []
    for depths in DEPTHS:
        widths = (
            models.fit_width(base.clone(depths=depths), config.max_params).widths if config.grid.fit_width else shared
        )
        points.append(("d" + "".join(map(str, depths)), {"model.depths": depths, "model.widths": widths}))
    return points
