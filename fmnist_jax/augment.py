"""Augmentation ops as a small registry composed from a string (big_vision style).

`parse("flip_lr|crop(4)|erase(0.5)")` returns one pure function
`(key, images[B, H, W, C] float in [0, 1]) -> images`; each example draws its own
randomness from `key`, so an augmentation ablation is a one-line config change.
Ops run before normalisation, so 0.0 is the (black) Fashion-MNIST background.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Callable

import jax
import jax.numpy as jnp

ImageOp = Callable[[jax.Array, jax.Array], jax.Array]  # (key, image[H, W, C]) -> image
BatchOp = Callable[[jax.Array, jax.Array], jax.Array]  # (key, images[B, H, W, C]) -> images

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
    return lambda key, img: jnp.where(jax.random.bernoulli(key, p), img[:, ::-1], img)


@register("flip_ud")
def flip_ud(p: float = 0.5) -> ImageOp:
    """Mirror top-bottom with probability p (torchvision RandomVerticalFlip)."""
    _probability("flip_ud", p)
    return lambda key, img: jnp.where(jax.random.bernoulli(key, p), img[::-1], img)


@register("crop")
def crop(pad: int = 4) -> ImageOp:
    """Random translation by up to `pad` pixels: zero-pad, then crop back to size."""
    if isinstance(pad, bool) or not isinstance(pad, int) or not 0 <= pad <= 13:
        raise ValueError(f"crop({pad!r}): pad must be an integer in [0, 13] (half the image)")

    def op(key, img):
        h, w, c = img.shape
        padded = jnp.pad(img, ((pad, pad), (pad, pad), (0, 0)))
        dy, dx = jax.random.randint(key, (2,), 0, 2 * pad + 1)
        return jax.lax.dynamic_slice(padded, (dy, dx, 0), (h, w, c))

    return op


@register("erase")
def erase(p: float = 0.5, area: tuple[float, float] = (0.02, 0.25), ratio: tuple[float, float] = (0.3, 3.3)) -> ImageOp:
    """Random erasing (Zhong et al. 2017): blank a random rectangle with probability p."""
    _probability("erase", p)
    if not (0 < area[0] <= area[1] <= 1 and 0 < ratio[0] <= ratio[1]):
        raise ValueError(f"erase: need 0 < area[0] <= area[1] <= 1 and 0 < ratio[0] <= ratio[1], got {area}, {ratio}")

    def op(key, img):
        h, w, _ = img.shape
        k_apply, k_area, k_ratio, k_y, k_x = jax.random.split(key, 5)
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
    """Compose ops from `"op|op(arg)|..."`; `""` or `"none"` is the identity."""
    terms = [t for t in spec.split("|") if t.strip() and t.strip() != "none"]
    ops = [_parse_term(t) for t in terms]

    def one(key, img):
        for k, op in zip(jax.random.split(key, len(ops)), ops):
            img = op(k, img)
        return img

    def batch(key, images):
        if not ops:
            return images
        return jax.vmap(one)(jax.random.split(key, images.shape[0]), images)

    return batch
