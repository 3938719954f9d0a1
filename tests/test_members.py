"""The member axis: together must equal alone, for every strategy.

Tolerances: vmap lowers to grouped convolutions whose float sums associate differently,
and Adam amplifies that in near-zero gradients (seen: 2e-5 absolute after 10 steps).
"""

import chex
import jax
import pytest

from fmnist_jax import members, train


def _train_members(cfg, folds, epochs=1):
    cfg = cfg.copy_and_resolve_references()
    cfg.cv.folds = folds
    exp = train.setup(cfg)
    state = train.init_state(exp)
    for epoch in range(epochs):
        state, _ = train.train_epoch(exp, state, epoch, progress=False)
    return exp, state


@pytest.mark.parametrize("strategy", ["unroll", "vmap"])
def test_member_trained_together_equals_alone(tiny_config, strategy):
    tiny_config.members.strategy = strategy
    _, together = _train_members(tiny_config, (0, 1))
    for i, fold in enumerate((0, 1)):
        _, alone = _train_members(tiny_config, (fold,))
        chex.assert_trees_all_close(
            members.unstack(together.params, i), members.unstack(alone.params, 0), rtol=1e-4, atol=1e-4
        )
        chex.assert_trees_all_close(
            members.unstack(together.batch_stats, i), members.unstack(alone.batch_stats, 0), rtol=1e-4, atol=1e-4
        )


def test_members_differ(tiny_config):
    _, state = _train_members(tiny_config, (0, 1))
    a, b = members.unstack(state.params, 0), members.unstack(state.params, 1)
    assert not all(jax.tree.leaves(jax.tree.map(lambda x, y: bool((x == y).all()), a, b)))


def test_strategy_resolution():
    assert members.resolve_strategy("auto") == ("unroll" if jax.default_backend() == "cpu" else "vmap")
    with pytest.raises(ValueError, match="strategy"):
        members.resolve_strategy("scan")


def test_mesh_divides_members():
    assert members.make_mesh(6).size in {d for d in range(1, len(jax.devices()) + 1) if 6 % d == 0}
    assert members.make_mesh(5, max_devices=1).size == 1
