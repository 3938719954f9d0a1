"""Augmentation ops: exact geometry, per-example randomness, registry parsing."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fmnist_jax import augment


def _images(n=64):
    return jax.random.uniform(jax.random.key(0), (n, 28, 28, 1))


def test_flips_are_exact_mirrors_per_example():
    x = _images()
    for spec, mirror in (("flip_lr", lambda a: a[:, ::-1]), ("flip_ud", lambda a: a[::-1])):
        y = augment.parse(spec)(jax.random.key(1), x)
        flipped = [bool(jnp.array_equal(yi, mirror(xi))) for xi, yi in zip(x, y)]
        kept = [bool(jnp.array_equal(yi, xi)) for xi, yi in zip(x, y)]
        assert all(f or k for f, k in zip(flipped, kept))
        assert 10 < sum(flipped) < 54  # p=0.5, drawn per example


def test_probability_argument():
    x = _images()
    chex.assert_trees_all_equal(augment.parse("flip_lr(0.0)")(jax.random.key(1), x), x)
    chex.assert_trees_all_equal(augment.parse("flip_lr(1.0)")(jax.random.key(1), x), x[:, :, ::-1])


def test_crop_is_an_exact_shift_with_zero_padding():
    x = np.asarray(_images(32))
    y = np.asarray(augment.parse("crop(4)")(jax.random.key(2), jnp.asarray(x)))
    padded = np.pad(x, ((0, 0), (4, 4), (4, 4), (0, 0)))
    shifts = set()
    for xi, yi in zip(padded, y):
        found = [(dy, dx) for dy in range(9) for dx in range(9) if np.array_equal(xi[dy : dy + 28, dx : dx + 28], yi)]
        assert found, "output is not a shifted crop of the zero-padded input"
        shifts.add(found[0])
    assert len(shifts) > 10  # shifts are drawn per example


def test_erase_blanks_one_rectangle():
    x = jnp.ones((32, 28, 28, 1))
    y = np.asarray(augment.parse("erase(1.0)")(jax.random.key(3), x))[..., 0]
    for img in y:
        rows, cols = np.nonzero(img == 0)
        assert rows.size > 0
        box = img[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]
        assert (box == 0).all()  # the blanked pixels form one filled rectangle


def test_deterministic_in_key_and_identity_for_none():
    x = _images()
    op = augment.parse("crop(2)|flip_lr|erase(0.5)")
    chex.assert_trees_all_equal(op(jax.random.key(5), x), op(jax.random.key(5), x))
    assert not jnp.array_equal(op(jax.random.key(5), x), op(jax.random.key(6), x))
    chex.assert_trees_all_equal(augment.parse("none")(jax.random.key(0), x), x)
    chex.assert_trees_all_equal(augment.parse("")(jax.random.key(0), x), x)


@pytest.mark.parametrize("spec", ["flip", "rotate(3)", "crop(4"])
def test_unknown_ops_are_refused(spec):
    with pytest.raises(ValueError, match="unknown augmentation"):
        augment.parse(spec)


def test_registry_refuses_a_name_twice():
    with pytest.raises(ValueError, match="'flip_lr' is registered twice"):
        augment.register("flip_lr")(lambda: None)
    assert augment.REGISTRY["flip_lr"] is augment.flip_lr


def test_flip_alt_mirrors_each_example_the_other_way_each_epoch():
    """The same examples (same fixed keys) are mirrored in exactly one of two consecutive epochs, whatever
    the step's fresh key; the first epoch's choice is a coin toss per example."""
    x, op = _images(), augment.parse("flip_alt")
    fixed = jax.random.split(jax.random.key(7), x.shape[0])
    e0, e1 = op(jax.random.key(1), x, fixed, 0), op(jax.random.key(2), x, fixed, 1)
    chex.assert_trees_all_equal(op(jax.random.key(3), x, fixed, 2), e0)
    mirrored = np.array([bool(jnp.array_equal(a, xi[:, ::-1])) for a, xi in zip(e0, x)])
    assert 10 < mirrored.sum() < 54
    chex.assert_trees_all_equal(e1, jnp.where(mirrored[:, None, None, None], x, x[:, :, ::-1]))
