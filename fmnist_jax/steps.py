"""One model's training state and its pure train/eval steps (no member axis here).

The steps take the whole uint8 dataset and a vector of indices, so batches are
gathered, augmented and normalised on the device inside the compiled step: no host
input pipeline to wait for, and nothing but indices crosses per step.
"""

from __future__ import annotations

from typing import Any
from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import optax
from flax.training import train_state

from fmnist_jax import augment, models
from fmnist_jax.metrics import Metrics


class TrainState(train_state.TrainState):
    batch_stats: Any
    key: jax.Array  # this member's augmentation stream; folded with `step`, so resume is exact


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
    model: nn.Module, tx: optax.GradientTransformation, init_key: jax.Array, aug_key: jax.Array
) -> TrainState:
    variables = models.init_variables(model, init_key)
    return TrainState.create(
        apply_fn=model.apply,
        params=variables["params"],
        tx=tx,
        batch_stats=variables.get("batch_stats", {}),
        key=aug_key,
    )


def preprocess(images_u8: jax.Array) -> jax.Array:
    """uint8 [B, 28, 28] -> float [B, 28, 28, 1] in [0, 1] (augmentation works here)."""
    return images_u8[..., None].astype(jnp.float32) / 255.0


def normalize(images: jax.Array, config: ml_collections.ConfigDict) -> jax.Array:
    """torchvision Normalize((mean,), (std,)); 0.5/0.5 maps [0, 1] to [-1, 1]."""
    return (images - config.normalize.mean) / config.normalize.std


def _losses(logits: jax.Array, labels: jax.Array, smoothing: float) -> jax.Array:
    targets = optax.smooth_labels(jax.nn.one_hot(labels, logits.shape[-1]), smoothing)
    return optax.softmax_cross_entropy(logits, targets)


def make_train_step(config: ml_collections.ConfigDict) -> Callable:
    """`train_step(state, images_u8, labels, idx) -> (state, Metrics)` for one model."""
    aug = augment.parse(config.augment)
    smoothing = config.train.label_smoothing

    def train_step(state: TrainState, images_u8: jax.Array, labels: jax.Array, idx: jax.Array):
        x, y = preprocess(images_u8[idx]), labels[idx]
        x = normalize(aug(jax.random.fold_in(state.key, state.step), x), config)

        def loss_fn(params):
            logits, updates = state.apply_fn(
                {"params": params, "batch_stats": state.batch_stats}, x, train=True, mutable=["batch_stats"]
            )
            losses = _losses(logits, y, smoothing)
            return losses.mean(), (logits, losses, updates)

        (_, (logits, losses, updates)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
        state = state.apply_gradients(grads=grads, batch_stats=updates.get("batch_stats", {}))
        return state, Metrics.from_logits(logits, y, _losses(logits, y, 0.0) if smoothing else losses)

    return train_step


def infer(apply_fn: Callable, variables: dict, x: jax.Array, tta_flip: bool) -> jax.Array:
    """Eval-mode logits; with `tta_flip`, the mean of the logits of x and of x mirrored left-right.

    Test-time flip averaging costs a second forward pass and no training; it is sound only
    for models trained with `flip_lr` (mirrored garments are then in-distribution).
    """
    logits = apply_fn(variables, x, train=False)
    return (logits + apply_fn(variables, x[:, :, ::-1], train=False)) / 2 if tta_flip else logits


def variables(state: TrainState) -> dict[str, Any]:
    """The state's inference variables, as `model.apply` and the eval step take them."""
    return {"params": state.params, "batch_stats": state.batch_stats}


def make_eval_step(config: ml_collections.ConfigDict, apply_fn: Callable) -> Callable:
    """`eval_step(variables, images_u8, labels, idx, mask) -> (Metrics, logits)`; plain cross-entropy.

    It takes variables, not a TrainState, so a restored run evaluates without an optimiser.
    """
    tta_flip = config.eval.tta_flip

    def eval_step(variables: dict, images_u8: jax.Array, labels: jax.Array, idx: jax.Array, mask: jax.Array):
        x, y = normalize(preprocess(images_u8[idx]), config), labels[idx]
        logits = infer(apply_fn, variables, x, tta_flip)
        return Metrics.from_logits(logits, y, _losses(logits, y, 0.0), mask), logits

    return eval_step
