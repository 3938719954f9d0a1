"""Augmentation ablation: the original study's flips against crop and erasing, on the study's base.

`BASELINE` is the study's base (`configs/study.py`: horizontal flip), so `hflip_vflip` against it asks
whether the original study's added vertical flip helps, and `hflip_alt` whether alternating flips beat random
ones. Crops shift by up to 2 pixels (pad 2 of 28: Fashion-MNIST items are centred, so larger shifts cut them
off).
"""

import ml_collections

from configs import study

BASELINE = "hflip"


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    c = study.get_config(arg)
    c.name = "augmentation"
    return c


def get_grid(config: ml_collections.ConfigDict) -> list[tuple[str, dict]]:
    del config  # the same points whatever the base
    return [
        (name, {"augment": spec})
        for name, spec in [
            ("none", "none"),
            ("hflip", "flip_lr"),
            ("hflip_alt", "flip_alt"),  # the same flips, each image the other way every epoch (not a coin toss)
            ("vflip", "flip_ud"),
            ("hflip_vflip", "flip_lr|flip_ud"),
            ("crop", "crop(2)"),
            ("crop_hflip", "crop(2)|flip_lr"),
            ("crop_hflip_erase", "crop(2)|flip_lr|erase(0.5)"),
        ]
    ]
