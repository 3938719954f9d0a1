"""The original study's tuning, one change at a time from the study's base (`configs/study.py`): learning rate,
batch size, optimizer and schedule (epochs are chosen by the learning-curve check of the study, not here).

Batch sizes keep the number of epochs, so a larger batch takes fewer, larger steps; the learning rate
is not rescaled with it (the study asks what the tuned knob does, as the original study tuned them).
"""

import ml_collections

from configs import study

BASELINE = "base"


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    c = study.get_config(arg)
    c.name = "training"
    return c


def get_grid(config: ml_collections.ConfigDict) -> list[tuple[str, dict]]:
    lr = config.optim.lr
    return [
        ("base", {}),
        ("lr_x0.3", {"optim.lr": lr * 0.3}),
        ("lr_x3", {"optim.lr": lr * 3}),
        ("batch64", {"train.batch_size": 64}),
        ("batch256", {"train.batch_size": 256}),
        ("adamw", {"optim.name": "adamw", "optim.weight_decay": 0.05}),
        ("constant_lr", {"optim.schedule": "constant"}),
        ("warmup", {"optim.warmup_epochs": 1.0}),
    ]
