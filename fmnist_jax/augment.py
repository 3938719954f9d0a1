"""Augmentation ops as a small registry composed from a string (big_vision style).

`parse("flip_lr|crop(4)|erase(0.5)")` returns one pure function
`(key, images[B, H, W, C] float in [0, 1], fixed=None, epoch=0) -> images`; each example draws
its own randomness from `key`, so an augmentation ablation is a one-line config change.
Ops run before normalisation, so 0.0 is the (black) Fashion-MNIST background.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp


class Draw(NamedTuple):
    """What an op may draw on for one example."""

    key: jax.Array  # fresh at every step
    fixed: jax.Array  # the same every time this example is seen (the train step folds its index into the stream)
    epoch: jax.Array  # the training epoch, from 0


ImageOp = Callable[[Draw, jax.Array], jax.Array]  # (draw, image[H, W, C]) -> image
BatchOp = Callable[..., jax.Array]  # (key, images[B, H, W, C], fixed=None, epoch=0) -> images

REGISTRY: dict[str, Callable[..., ImageOp]] = {}


def register(name: str) -> Callable[[Callable[..., ImageOp]], Callable[..., ImageOp]]:
    """Add an op factory under `name`; a name taken twice is an error (big_vision's registry refuses it too),
    since the second op would silently change what every config using the name trains."""

    def wrap(factory: Callable[..., ImageOp]) -> Callable[..., ImageOp]:
        if name in REGISTRY:
            raise ValueError(f"augmentation op {name!r} is registered twice")
        REGISTRY[name] = factory
        return factory

    return wrap


def _probability(op: str, p: float) -> None:
    if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0 <= p <= 1:
        raise ValueError(f"{op}({p!r}): the probability must be a number in [0, 1]")


@register("flip_lr")
def flip_lr(p: float = 0.5) -> ImageOp:
    """Mirror left-right with probability p (torchvision RandomHorizontalFlip)."""
    _probability("flip_lr", p)
    return lambda d, img: jnp.where(jax.random.bernoulli(d.key, p), img[:, ::-1], img)


@register("flip_alt")
def flip_alt() -> ImageOp:
    """Alternating flip (Keller Jordan's CIFAR-10 speed runs): each example is mirrored left-right at random
    the first time it is seen, then the opposite way each epoch after, so every pair of epochs shows it both
    ways instead of each epoch repeating a coin toss. Issue 18 lists it as fewer epochs to the same accuracy.
    """
    return lambda d, img: jnp.where(jax.random.bernoulli(d.fixed) ^ (d.epoch % 2 == 1), img[:, ::-1], img)


@register("flip_ud")
def flip_ud(p: float = 0.5) -> ImageOp:
    """Mirror top-bottom with probability p (torchvision RandomVerticalFlip)."""
    _probability("flip_ud", p)
    return lambda d, img: jnp.where(jax.random.bernoulli(d.key, p), img[::-1], img)


@register("crop")
def crop(pad: int = 4) -> ImageOp:
    """Random translation by up to `pad` pixels: zero-pad, then crop back to size."""
    if isinstance(pad, bool) or not isinstance(pad, int) or not 0 <= pad <= 13:
        raise ValueError(f"crop({pad!r}): pad must be an integer in [0, 13] (half the image)")

    def op(d, img):
        h, w, c = img.shape
        padded = jnp.pad(img, ((pad, pad), (pad, pad), (0, 0)))
        dy, dx = jax.random.randint(d.key, (2,), 0, 2 * pad + 1)
        return jax.lax.dynamic_slice(padded, (dy, dx, 0), (h, w, c))

    return op


@register("erase")
def erase(p: float = 0.5, area: tuple[float, float] = (0.02, 0.25), ratio: tuple[float, float] = (0.3, 3.3)) -> ImageOp:
    """Random erasing (Zhong et al. 2017): blank a random rectangle with probability p."""
    _probability("erase", p)
    if not (0 < area[0] <= area[1] <= 1 and 0 < ratio[0] <= ratio[1]):
        raise ValueError(f"erase: need 0 < area[0] <= area[1] <= 1 and 0 < ratio[0] <= ratio[1], got {area}, {ratio}")

    def op(d, img):
        h, w, _ = img.shape
        k_apply, k_area, k_ratio, k_y, k_x = jax.random.split(d.key, 5)
        a = jax.random.uniform(k_area, (), minval=area[0], maxval=area[1]) * h * w
        r = jnp.exp(jax.random.uniform(k_ratio, (), minval=jnp.log(ratio[0]), maxval=jnp.log(ratio[1])))
        eh = jnp.clip(jnp.round(jnp.sqrt(a * r)), 1, h).astype(jnp.int32)
        ew = jnp.clip(jnp.round(jnp.sqrt(a / r)), 1, w).astype(jnp.int32)
        y0 = jax.random.randint(k_y, (), 0, h - eh + 1)
        x0 = jax.random.randint(k_x, (), 0, w - ew + 1)
        ys, xs = jnp.arange(h)[:, None, None], jnp.arange(w)[None, :, None]
        box = (ys >= y0) & (ys < y0 + eh) & (xs >= x0) & (xs < x0 + ew)
        return jnp.where(box & jax.random.bernoulli(k_apply, p), 0.0, img)

    return op


_TERM = re.compile(r"^\s*([a-z_]+)\s*(?:\((.*)\))?\s*$")


def _parse_term(term: str) -> ImageOp:
    m = _TERM.match(term)
    if not m or m.group(1) not in REGISTRY:
        raise ValueError(f"unknown augmentation {term!r}; known: {', '.join(sorted(REGISTRY))}")
    args = ast.literal_eval(f"({m.group(2)},)") if m.group(2) else ()
    return REGISTRY[m.group(1)](*args)


def parse(spec: str) -> BatchOp:
    """Compose ops from `"op|op(arg)|..."`; `""` or `"none"` is the identity.

    The result's `fixed` is one key per example that stays the same whenever the example is seen again, and
    `epoch` is the training epoch; without them (a batch seen once: tests, sample images) `fixed` is a fresh key
    per example and the epoch 0, so `flip_alt` is a coin toss, as it is on an example's first sight.
    """
    terms = [t for t in spec.split("|") if t.strip() and t.strip() != "none"]
    ops = [_parse_term(t) for t in terms]

    def one(key, fixed, epoch, img):
        for i, (k, op) in enumerate(zip(jax.random.split(key, len(ops)), ops)):
            img = op(Draw(k, jax.random.fold_in(fixed, i), epoch), img)
        return img

    def batch(key, images, fixed=None, epoch=0):
        if not ops:
            return images
        keys = jax.random.split(key, images.shape[0])
        fixed = jax.random.split(jax.random.fold_in(key, 1), images.shape[0]) if fixed is None else fixed
        return jax.vmap(one, (0, 0, None, 0))(keys, fixed, jnp.asarray(epoch), images)

    return batch
