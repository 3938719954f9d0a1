"""One model's training state and its pure train/eval steps (no member axis here).

The steps take the whole uint8 dataset and a vector of indices, so batches are
gathered, augmented and normalised on the device inside the compiled step: no host
input pipeline to wait for, and nothing but indices crosses per step.
"""

from __future__ import annotations

from typing import Any, NamedTuple
from collections.abc import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import optax
from flax.training import train_state

from fmnist_jax import augment, config_lib, models
from fmnist_jax.metrics import Metrics


class TrainState(train_state.TrainState):
    batch_stats: Any
    key: jax.Array  # this member's augmentation stream; folded with `step`, so resume is exact
    # {'params', 'batch_stats'} averaged over steps (`train.ema_decay` > 0), else None: an empty subtree, so
    # checkpoints saved without it restore unchanged
    ema: Any = None


def schedule(config: ml_collections.ConfigDict, steps_per_epoch: int) -> optax.Schedule:
    o, total = config.optim, config.train.epochs * steps_per_epoch
    warmup = int(o.warmup_epochs * steps_per_epoch)
    if o.schedule == "constant":
        return optax.constant_schedule(o.lr)
    if o.schedule == "cosine":
        return optax.warmup_cosine_decay_schedule(0.0, o.lr, warmup, max(total, warmup + 1))
    if o.schedule == "onecycle":
        return optax.cosine_onecycle_schedule(max(total, 1), o.lr)
    raise ValueError(f"unknown optim.schedule {o.schedule!r}; use constant, cosine or onecycle")


def optimizer(config: ml_collections.ConfigDict, steps_per_epoch: int) -> optax.GradientTransformation:
    lr, o = schedule(config, steps_per_epoch), config.optim
    if o.name == "adam":
        return optax.adam(lr)
    if o.name == "adamw":
        return optax.adamw(lr, weight_decay=o.weight_decay)
    raise ValueError(f"unknown optim.name {o.name!r}; use adam or adamw")


def create_state(
    model: nn.Module,
    tx: optax.GradientTransformation,
    init_key: jax.Array,
    aug_key: jax.Array,
    ema: bool = False,
) -> TrainState:
    """A fresh state; with `ema`, its weight average starts at the initial weights."""
    variables = models.init_variables(model, init_key)
    params, batch_stats = variables["params"], variables.get("batch_stats", {})
    return TrainState.create(
        apply_fn=model.apply,
        params=params,
        tx=tx,
        batch_stats=batch_stats,
        key=aug_key,
        # copies: buffers of their own, so a train step may donate the state even when it was made outside jit
        ema=jax.tree.map(jnp.copy, {"params": params, "batch_stats": batch_stats}) if ema else None,
    )


def ema_update(ema: Any, variables: Any, decay: float, step: jax.Array | int) -> Any:
    """One step of the weights' exponential moving average (Polyak averaging, as in big_vision and timm).

    The decay ramps up as min(decay, (1 + t) / (10 + t)) (TensorFlow's ExponentialMovingAverage with
    num_updates), so the early average is not dominated by the random initial weights.
    """
    rate = jnp.minimum(decay, (1.0 + step) / (10.0 + step))
    return optax.incremental_update(variables, ema, step_size=1.0 - rate)


def preprocess(images_u8: jax.Array) -> jax.Array:
    """uint8 [B, 28, 28] -> float [B, 28, 28, 1] in [0, 1] (augmentation works here)."""
    return images_u8[..., None].astype(jnp.float32) / 255.0


def normalize(images: jax.Array, config: ml_collections.ConfigDict) -> jax.Array:
    """torchvision Normalize((mean,), (std,)); 0.5/0.5 maps [0, 1] to [-1, 1]."""
    return (images - config.normalize.mean) / config.normalize.std


def background(config: ml_collections.ConfigDict) -> float:
    """The normalised value of a black pixel: what a test-time shift uncovers (a training crop pads with it too)."""
    return (0.0 - config.normalize.mean) / config.normalize.std  # plain Python: also inside a trace


def _losses(logits: jax.Array, labels: jax.Array, smoothing: float) -> jax.Array:
    targets = optax.smooth_labels(jax.nn.one_hot(labels, logits.shape[-1]), smoothing)
    return optax.softmax_cross_entropy(logits, targets)


def distillation_losses(logits: jax.Array, targets: jax.Array, temperature: float) -> jax.Array:
    """Per-example KL(targets || softmax(logits / T)) x T^2 (Hinton et al. 2015: T^2 keeps the gradient's scale
    as T changes); `targets` are the teachers' softened probabilities (`fmnist_jax.distill`)."""
    return optax.kl_divergence(jax.nn.log_softmax(logits / temperature), targets) * temperature**2


# What points packed into one program may set apart (`pack_key`): the train step takes them per member. The
# network, data, batch, epochs and evaluation are one for all, and so is the optimiser's name, whose state's
# structure must stack (adam's and adamw's differ).
PER_MEMBER_KEYS = (
    "augment",
    "train.label_smoothing",
    "optim.lr",
    "optim.weight_decay",
    "optim.schedule",
    "optim.warmup_epochs",
)
IDENTITY_KEYS = ("name", "seeds", "cv.folds", *config_lib.MUTABLE_KEYS)  # which run it is, and where it goes


def pack_key(config: ml_collections.ConfigDict) -> dict[str, Any]:
    """The config less what packed points may differ in: configs with equal keys can train as one program."""
    flat = config_lib.flatten(config.to_dict())
    drop = PER_MEMBER_KEYS + IDENTITY_KEYS
    return {k: v for k, v in flat.items() if not config_lib.under(k, drop)}


class Recipe(NamedTuple):
    """A packed point's own part of the train step: augmentation, label smoothing, optimiser (with its schedule)."""

    augment: augment.BatchOp
    label_smoothing: float
    tx: optax.GradientTransformation | None  # None: the state's own (`TrainState.tx`)


def recipe(config: ml_collections.ConfigDict, steps_per_epoch: int) -> Recipe:
    return Recipe(augment.parse(config.augment), config.train.label_smoothing, optimizer(config, steps_per_epoch))


# An example's fixed key (`augment.Draw.fixed`) folds its dataset index into this branch of the member's
# stream: no step number reaches it (each step's key folds in the step), so it is drawn from nothing else.
FIXED_STREAM = 2**32 - 1


def make_train_step(
    config: ml_collections.ConfigDict,
    recipes: Sequence[Recipe] = (),
    teachers: Callable[[jax.Array], jax.Array] | None = None,
    steps_per_epoch: int = 0,
) -> Callable:
    """`train_step(state, images_u8, labels, idx, variant=0) -> (state, Metrics)` for one model.

    With `teachers` (`distill.make_targets`: augmented images in [0, 1] -> softened probabilities) the loss is
    (1 - distill.weight) x the label loss + distill.weight x `distillation_losses` on the same batch.

    Without `recipes` it trains `config` (the state's own optimiser). With them (points packed into one program,
    `train.setup(..., packed=...)`), `variant` picks the member's recipe by `lax.switch`: an unrolled member runs
    its own branch only, a vmapped one computes each branch and keeps its own, which is cheap, since the
    branches hold only the augmentation, the label smoothing and the optimiser update. The forward and backward
    pass, where the time goes, is the same code for every member.

    `steps_per_epoch` tells augmentations that alternate by epoch (`flip_alt`) which epoch a step is in; 0
    counts every step as the first epoch (benchmarks, tests).
    """
    recipes = recipes or (Recipe(augment.parse(config.augment), config.train.label_smoothing, None),)
    plain = teachers is not None or any(r.label_smoothing for r in recipes)  # metrics: the plain cross-entropy
    weight, temperature = config.distill.weight, config.distill.temperature

    def pick(variant: jax.Array | int, branches: list[Callable], *args: Any) -> Any:
        return branches[0](*args) if len(branches) == 1 else jax.lax.switch(variant, branches, *args)

    def train_step(
        state: TrainState, images_u8: jax.Array, labels: jax.Array, idx: jax.Array, variant: jax.Array | int = 0
    ):
        x, y = preprocess(images_u8[idx]), labels[idx]
        fixed = jax.vmap(jax.random.fold_in, (None, 0))(jax.random.fold_in(state.key, FIXED_STREAM), idx)
        epoch = state.step // steps_per_epoch if steps_per_epoch else 0
        aug_key = jax.random.fold_in(state.key, state.step)
        x = pick(variant, [r.augment for r in recipes], aug_key, x, fixed, epoch)
        soft = None if teachers is None else teachers(x)
        x = normalize(x, config)

        def loss_fn(params):
            logits, updates = state.apply_fn(
                {"params": params, "batch_stats": state.batch_stats}, x, train=True, mutable=["batch_stats"]
            )
            losses = pick(variant, [lambda lg, r=r: _losses(lg, y, r.label_smoothing) for r in recipes], logits)
            if soft is not None:
                losses = (1 - weight) * losses + weight * distillation_losses(logits, soft, temperature)
            return losses.mean(), (logits, losses, updates)

        (_, (logits, losses, updates)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
        txs = [r.tx or state.tx for r in recipes]
        step, opt_state = pick(variant, [tx.update for tx in txs], grads, state.opt_state, state.params)
        new = {"params": optax.apply_updates(state.params, step), "batch_stats": updates.get("batch_stats", {})}
        ema = None if state.ema is None else ema_update(state.ema, new, config.train.ema_decay, state.step)
        state = state.replace(step=state.step + 1, opt_state=opt_state, ema=ema, **new)
        return state, Metrics.from_logits(logits, y, _losses(logits, y, 0.0) if plain else losses)

    return train_step


def shifted(x: jax.Array, dy: int, dx: int, fill: float) -> jax.Array:
    """[B, H, W, C] images moved down dy and right dx pixels (negative: up, left), uncovered pixels `fill`."""
    s = max(abs(dy), abs(dx))
    padded = jnp.pad(x, ((0, 0), (s, s), (s, s), (0, 0)), constant_values=fill)
    h, w = x.shape[1:3]
    return padded[:, s - dy : s - dy + h, s - dx : s - dx + w]


def infer(
    apply_fn: Callable, variables: dict, x: jax.Array, tta_flip: bool, tta_shift: int = 0, fill: float = 0.0
) -> jax.Array:
    """Eval-mode logits; with `tta_flip`, the mean of the logits of x and of x mirrored left-right; with
    `tta_shift` s, also of each of those moved s pixels up, down, left and right (5x the views; `fill` is the
    normalised background the move uncovers).

    Test-time views cost forward passes and no training; each is sound only for a model trained with the
    matching augmentation (`flip_lr`, `crop`), so its views are in-distribution.
    """
    if tta_shift:  # all views in one batch: one larger convolution per layer
        base = [x, x[:, :, ::-1]] if tta_flip else [x]
        moves = [(0, 0), (tta_shift, 0), (-tta_shift, 0), (0, tta_shift), (0, -tta_shift)]
        views = [shifted(v, dy, dx, fill) if (dy, dx) != (0, 0) else v for v in base for dy, dx in moves]
        logits = apply_fn(variables, jnp.concatenate(views), train=False)
        return logits.reshape(len(views), x.shape[0], -1).mean(0)
    logits = apply_fn(variables, x, train=False)
    return (logits + apply_fn(variables, x[:, :, ::-1], train=False)) / 2 if tta_flip else logits


def variables(state: TrainState, ema: bool = False) -> dict[str, Any]:
    """The state's inference variables (with `ema`, the averaged ones), as `model.apply` and the eval step take
    them."""
    return state.ema if ema else {"params": state.params, "batch_stats": state.batch_stats}


def make_eval_step(config: ml_collections.ConfigDict, apply_fn: Callable) -> Callable:
    """`eval_step(variables, images_u8, labels, idx, mask) -> (Metrics, logits)`; plain cross-entropy.

    It takes variables, not a TrainState, so a restored run evaluates without an optimiser.
    """
    tta = config.eval.tta_flip, config.eval.tta_shift, background(config)

    def eval_step(variables: dict, images_u8: jax.Array, labels: jax.Array, idx: jax.Array, mask: jax.Array):
        x, y = normalize(preprocess(images_u8[idx]), config), labels[idx]
        logits = infer(apply_fn, variables, x, *tta)
        return Metrics.from_logits(logits, y, _losses(logits, y, 0.0), mask), logits

    return eval_step
