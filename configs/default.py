"""Default: the reference CNN (98k params), 5-fold CV x 1 seed, hflip, Adam + cosine.

`--config configs/default.py:smoke` is a tiny real-data run (2 folds, 150 steps) for CI; every
config and ablation file takes `:smoke` the same way (`config_lib.parse_arg`).
"""

import ml_collections

from fmnist_jax import config_lib


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    a = config_lib.parse_arg(arg, smoke=False)
    c = ml_collections.ConfigDict()
    c.name = "default"
    c.seeds = (0,)
    c.data = ml_collections.ConfigDict(dict(dir="", source="idx", verify=True))
    # holdout=False: train on all 60k (final models; nothing to validate on)
    c.cv = ml_collections.ConfigDict(dict(k=5, folds=(0, 1, 2, 3, 4), split_seed=0, holdout=True))
    # se: squeeze-excitation in every block with this reduction ratio (0: none; models.SqueezeExcite)
    c.model = ml_collections.ConfigDict(
        dict(widths=(32, 64, 56), depths=(2, 2, 1), batch_norm=True, residual=False, se=0)
    )
    c.max_params = 100_000  # the project's budget; every model and grid point is checked against it
    c.augment = "flip_lr"
    c.normalize = ml_collections.ConfigDict(dict(mean=0.5, std=0.5))
    # ema_decay > 0 also keeps an exponential moving average of the weights (steps.TrainState.ema), evaluated
    # beside them every epoch: it never changes training, so raw and averaged weights compare paired
    c.train = ml_collections.ConfigDict(
        dict(epochs=3, batch_size=128, steps_per_epoch=0, label_smoothing=0.0, ema_decay=0.0)
    )
    c.optim = ml_collections.ConfigDict(
        dict(name="adam", lr=1e-3, weight_decay=0.0, schedule="cosine", warmup_epochs=0.0)
    )
    # Knowledge distillation (fmnist_jax/distill.py): finished runs' workdirs as teachers, off by default
    c.distill = ml_collections.ConfigDict(dict(teachers=(), weight=0.0, temperature=1.0))
    # every_epochs: validate after every n-th epoch (and the last); test-time views multiply its cost
    c.eval = ml_collections.ConfigDict(dict(batch_size=1000, tta_flip=False, tta_shift=0, every_epochs=1))
    c.members = ml_collections.ConfigDict(dict(strategy="auto", devices=0))
    c.compile = ml_collections.ConfigDict(dict(cpu_conv="eigen"))  # fmnist_jax/backend.py: why Eigen
    # Where results go, not what is computed: these may change when a run is resumed.
    c.checkpoint = ml_collections.ConfigDict(dict(every_epochs=1, max_to_keep=2))
    c.wandb = ml_collections.ConfigDict(
        dict(mode="offline", project="fmnist_jax", entity="", group="", job_type="", tags=())
    )
    if a.smoke:
        c.name = "smoke"
        c.cv.folds = (0, 1)
        c.train.epochs = 1
        c.train.steps_per_epoch = 150
    return c
