"""The CNN family (width x depth x BatchNorm x residual) and its parameter count against a budget.

`widths[i]` channels and `depths[i]` 3x3 conv blocks in stage i, 2x2 max-pool between
stages, global average pooling and one dense layer. The reference CNN of the speed
study is `widths=(32, 64, 56), depths=(2, 2, 1)`: 98,122 parameters here (convs before
BatchNorm carry no bias; PyTorch's default biases make it 98,370).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
from fmnist_jax.errors import BudgetError


class SqueezeExcite(nn.Module):
    """Channel gates from the feature map's global average (Hu et al. 2018): 2c²/r + c + c/r parameters and next to
    no FLOPs, where a conv of the same parameters would cost them at every pixel."""

    reduction: int

    @nn.compact
    def __call__(self, y: jax.Array) -> jax.Array:
        c = y.shape[-1]
        s = nn.relu(nn.Dense(max(1, c // self.reduction))(y.mean(axis=(1, 2))))
        return y * nn.sigmoid(nn.Dense(c)(s))[:, None, None, :]


class ConvBlock(nn.Module):
    """conv3x3 -> (BatchNorm) -> (squeeze-excitation) -> ReLU, with an identity shortcut when asked and shapes
    allow (added after the gates, as in SE-ResNet)."""

    features: int
    batch_norm: bool
    residual: bool
    se: int = 0  # squeeze-excitation's reduction ratio; 0: none

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        y = nn.Conv(self.features, (3, 3), use_bias=not self.batch_norm)(x)
        if self.batch_norm:
            y = nn.BatchNorm(use_running_average=not train, momentum=0.9)(y)
        if self.se:
            y = SqueezeExcite(self.se)(y)
        if self.residual and x.shape[-1] == self.features:
            y = y + x
        return nn.relu(y)


def max_pool_2x2(x: jax.Array) -> jax.Array:
    """2x2/2 max-pool as a reshape and a max: the same values as `nn.max_pool(x, (2, 2), (2, 2))`
    (odd edges dropped alike), but its gradient is an elementwise mask where reduce_window's
    lowers on XLA:CPU to four index iotas, a 5-output reduce_window and a scatter; train steps
    of the reference CNN 1.09-1.30x faster (paired medians of interleaved rounds on the 2-core
    CPU, 1.30x when quiet; results/bench/amd_epyc_zen4/README.md).
    """
    b, h, w, c = x.shape
    x = x[:, : h - h % 2, : w - w % 2]
    return x.reshape(b, h // 2, 2, w // 2, 2, c).max(axis=(2, 4))


class CNN(nn.Module):
    widths: Sequence[int] = (32, 64, 56)
    depths: Sequence[int] = (2, 2, 1)
    batch_norm: bool = True
    residual: bool = False
    se: int = 0
    num_classes: int = 10

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        for stage, (width, depth) in enumerate(zip(self.widths, self.depths)):
            if stage:
                x = max_pool_2x2(x)
            for _ in range(depth):
                x = ConvBlock(width, self.batch_norm, self.residual, self.se)(x, train)
        return nn.Dense(self.num_classes)(x.mean(axis=(1, 2)))


def build(config: ml_collections.ConfigDict) -> CNN:
    """The model a config names (`config.model`)."""
    m = config.model
    if len(m.widths) != len(m.depths) or not m.widths:
        raise ValueError(f"model.widths {tuple(m.widths)} and model.depths {tuple(m.depths)} need one entry per stage")
    return CNN(widths=tuple(m.widths), depths=tuple(m.depths), batch_norm=m.batch_norm, residual=m.residual, se=m.se)


def init_variables(model: nn.Module, key: jax.Array) -> dict:
    return dict(model.init(key, jnp.zeros((1, 28, 28, 1), jnp.float32), train=False))


def count_params(model: nn.Module) -> int:
    """Trainable parameters, from the initialised shapes (no compute)."""
    shapes = jax.eval_shape(functools.partial(init_variables, model), jax.random.key(0))
    return sum(x.size for x in jax.tree.leaves(shapes["params"]))


def cpu_flops(fn: Callable[..., Any], *args: Any) -> float:
    """FLOPs of `fn(*args)` (abstract args) from XLA's cost analysis of its graph lowered for the host CPU.

    Placing the inputs on the CPU picks that backend wherever the run is: GPU and TPU plugins give no cost
    analysis before compilation (an H100 run of the study lost its summaries to that), and one backend for all
    keeps the figure comparable between runs made on different machines."""
    cpu = jax.sharding.SingleDeviceSharding(jax.local_devices(backend="cpu")[0])
    placed = jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=cpu), args)
    cost = jax.jit(fn).lower(*placed).cost_analysis()
    if cost is None:
        raise RuntimeError("XLA's CPU backend gave no cost analysis")
    return float(cost["flops"])


def flops_per_image(model: nn.Module) -> float:
    """Forward FLOPs for one image (`cpu_flops`)."""
    variables = jax.eval_shape(functools.partial(init_variables, model), jax.random.key(0))
    x = jax.ShapeDtypeStruct((1, 28, 28, 1), jnp.float32)
    return cpu_flops(lambda v, x: model.apply(v, x, train=False), variables, x)


def check_budget(model: nn.Module, limit: int) -> int:
    """The parameter count, or BudgetError naming it when over `limit`."""
    n = count_params(model)
    if n > limit:
        raise BudgetError(
            f"model has {n:,} parameters, over the budget of {limit:,} "
            f"({n - limit:,} too many) with widths={tuple(model.widths)}, depths={tuple(model.depths)}"
        )
    return n


def fit_width(model: CNN, limit: int) -> CNN:
    """`model` with every stage's width scaled by one factor, the largest whose count stays within `limit`.

    Compares depths at equal parameter counts: a deeper net gets narrower stages, a
    shallower one wider, all keeping the reference's width ratios.
    """

    def scaled(s: float) -> CNN:
        return model.clone(widths=tuple(max(1, round(w * s)) for w in model.widths))

    lo, hi = 0.0, 1.0
    while count_params(scaled(hi)) <= limit:
        lo, hi = hi, 2 * hi
    while max(h - w for h, w in zip(scaled(hi).widths, scaled(lo).widths)) > 1:  # to within a channel
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if count_params(scaled(mid)) <= limit else (lo, mid)
    if count_params(scaled(lo)) > limit:
        raise BudgetError(f"no width fits depths={tuple(model.depths)} within {limit:,} parameters")
    return scaled(lo)
