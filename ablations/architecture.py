"""Architecture switches of the study's network (`configs/study.py`, residual with BatchNorm) at the same widths:
BatchNorm and residual shortcuts on and off.

Shortcuts add no parameters (identity where a block keeps its width), and dropping BatchNorm gives the
convolutions their biases back, so every point stays within a few hundred parameters of the baseline.
"""

import ml_collections

from configs import study

BASELINE = "bn_residual"


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    c = study.get_config(arg)
    c.name = "architecture"
    return c


def get_grid(config: ml_collections.ConfigDict) -> list[tuple[str, dict]]:
    del config  # the same points whatever the base
    return [
        ("bn_residual", {}),
        ("residual_no_bn", {"model.batch_norm": False}),
        ("bn", {"model.residual": False}),
        ("no_bn", {"model.residual": False, "model.batch_norm": False}),
    ]
