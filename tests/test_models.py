"""The CNN family and the parameter budget."""

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import pytest

from configs import best, default
from fmnist_jax import models


def test_reference_cnn_count_matches_hand_count():
    convs = [(1, 32), (32, 32), (32, 64), (64, 64), (64, 56)]
    expected = sum(9 * i * o + 2 * o for i, o in convs) + 56 * 10 + 10  # conv weights, BN scale+bias, dense
    assert models.count_params(models.build(default.get_config())) == expected == 98_122


def test_best_model_hand_count_within_budget():
    """configs/best.py: one conv at 28x28, residual blocks at 14x14 and 7x7 (shortcuts add no parameters)."""
    convs = [(1, 24), (24, 48), (48, 48), (48, 64), (64, 64)]
    expected = sum(9 * i * o + 2 * o for i, o in convs) + 64 * 10 + 10
    for arg in (None, "smoke"):
        assert models.check_budget(models.build(best.get_config(arg)), 100_000) == expected == 96_978


@pytest.mark.parametrize("residual,batch_norm", [(False, True), (True, True), (True, False)])
def test_forward_shapes(residual, batch_norm):
    model = models.CNN(widths=(8, 16, 16), depths=(2, 1, 2), residual=residual, batch_norm=batch_norm)
    variables = models.init_variables(model, jax.random.key(0))
    logits = model.apply(variables, jnp.zeros((3, 28, 28, 1)), train=False)
    chex.assert_shape(logits, (3, 10))
    assert ("batch_stats" in variables) == batch_norm


def test_budget_refuses_with_the_count():
    c = default.get_config()
    c.model.widths = (64, 128, 128)
    with pytest.raises(models.BudgetError, match=r"408,394 parameters, over the budget of 100,000"):
        models.check_budget(models.build(c), c.max_params)
    assert models.check_budget(models.build(default.get_config()), 100_000) == 98_122


def test_flops_scale_with_width():
    small, big = models.CNN(widths=(8, 16), depths=(1, 1)), models.CNN(widths=(16, 32), depths=(1, 1))
    assert 2 < models.flops_per_image(big) / models.flops_per_image(small) < 4.5


def test_mismatched_stages_are_refused():
    c = default.get_config()
    c.model.depths = (2, 2)
    with pytest.raises(ValueError, match="one entry per stage"):
        models.build(c)


@pytest.mark.parametrize("shape", [(3, 28, 28, 4), (2, 7, 9, 3)])
def test_max_pool_2x2_matches_flax_values_and_gradient(shape):
    x = jax.random.normal(jax.random.key(0), shape)  # continuous values: no ties, so one gradient is right

    def ref(x):
        return nn.max_pool(x, (2, 2), (2, 2))

    chex.assert_trees_all_equal(models.max_pool_2x2(x), ref(x))
    g = jax.random.normal(jax.random.key(1), ref(x).shape)
    chex.assert_trees_all_equal(jax.vjp(models.max_pool_2x2, x)[1](g), jax.vjp(ref, x)[1](g))
