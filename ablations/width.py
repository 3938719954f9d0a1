"""Width ablation: the study's network (`configs/study.py`) with every stage's width scaled by one factor (6k to 97k
params)."""

import ml_collections

from configs import study

BASELINE = "w1.0"
FACTORS = (0.25, 0.5, 0.75, 1.0)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    c = study.get_config(arg)
    c.name = "width"
    return c


def get_grid(config: ml_collections.ConfigDict) -> list[tuple[str, dict]]:
    base = tuple(config.model.widths)
    return [(f"w{f}", {"model.widths": tuple(max(1, round(w * f)) for w in base)}) for f in FACTORS]
