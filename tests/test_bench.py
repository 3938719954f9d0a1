"""Product-path speed changes from the training-speed study (benchmarks/speed.py) keep the math."""

import chex
import flax.linen as nn
import jax
import pytest

from fmnist_jax import models


@pytest.mark.parametrize("shape", [(3, 28, 28, 4), (2, 7, 9, 3)])
def test_max_pool_2x2_matches_flax_values_and_gradient(shape):
    x = jax.random.normal(jax.random.key(0), shape)  # continuous values: no ties, so one gradient is right

    def ref(x):
        return nn.max_pool(x, (2, 2), (2, 2))

    chex.assert_trees_all_equal(models.max_pool_2x2(x), ref(x))
    g = jax.random.normal(jax.random.key(1), ref(x).shape)
    chex.assert_trees_all_equal(jax.vjp(models.max_pool_2x2, x)[1](g), jax.vjp(ref, x)[1](g))
