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


@pytest.mark.parametrize(
    "residual,batch_norm,se", [(False, True, 0), (True, True, 0), (True, False, 0), (True, True, 4)]
)
def test_forward_shapes(residual, batch_norm, se):
    model = models.CNN(widths=(8, 16, 16), depths=(2, 1, 2), residual=residual, batch_norm=batch_norm, se=se)
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


def test_squeeze_excitation_hand_count_fits_the_best_model_only_at_ratio_16():
    """Per block with c channels and ratio r: Dense c -> c // r and back, with biases."""
    c = best.get_config()
    widths = [24, 48, 48, 64, 64]  # the channels of its five blocks
    for r, fits in ((16, True), (8, False)):
        c.model.se = r
        extra = sum(2 * w * (w // r) + w // r + w for w in widths)
        assert models.count_params(models.build(c)) == 96_978 + extra
        assert (96_978 + extra <= 100_000) == fits
    c.model.se = 16
    assert models.check_budget(models.build(c), 100_000) == 98_889


def test_squeeze_excitation_gates_each_channel_by_its_global_average():
    y = jax.random.normal(jax.random.key(0), (2, 5, 5, 8))
    se = models.SqueezeExcite(4)
    v = se.init(jax.random.key(1), y)
    p = v["params"]
    s = jax.nn.relu(y.mean((1, 2)) @ p["Dense_0"]["kernel"] + p["Dense_0"]["bias"])
    gates = jax.nn.sigmoid(s @ p["Dense_1"]["kernel"] + p["Dense_1"]["bias"])
    chex.assert_shape(gates, (2, 8))
    chex.assert_trees_all_close(se.apply(v, y), y * gates[:, None, None, :], rtol=1e-5)


def test_without_squeeze_excitation_the_variables_are_unchanged():
    """se=0 adds no module, so checkpoints saved before `model.se` existed restore as they were."""
    plain = models.init_variables(models.build(best.get_config()), jax.random.key(0))
    c = best.get_config()
    c.model.se = 16
    gated = models.init_variables(models.build(c), jax.random.key(0))
    assert not any("SqueezeExcite" in str(path) for path, _ in jax.tree_util.tree_leaves_with_path(plain))
    assert any("SqueezeExcite" in str(path) for path, _ in jax.tree_util.tree_leaves_with_path(gated))
