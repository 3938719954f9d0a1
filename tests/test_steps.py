"""Pure train/eval steps for one model."""

import pathlib
import tempfile

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from conftest import tiny, write_idx_dir

from configs import default
from fmnist_jax import data, models, steps


def _setup(cfg):
    ds = data.load(cfg.data.dir, verify=False)
    model = models.build(cfg)
    state = steps.create_state(model, steps.optimizer(cfg, 10), jax.random.key(0), jax.random.key(1))
    return ds, state


class TestSteps(chex.TestCase):
    def setUp(self):
        super().setUp()
        tmp = tempfile.TemporaryDirectory()
        self.addCleanup(tmp.cleanup)
        self.cfg = default.get_config()
        self.cfg.data.dir = str(write_idx_dir(pathlib.Path(tmp.name)))
        self.cfg.model.widths, self.cfg.model.depths = (4, 8), (1, 1)

    @chex.variants(with_jit=True, without_jit=True)
    def test_train_step_updates_and_reports(self):
        cfg = self.cfg
        ds, state = _setup(cfg)
        step = self.variant(steps.make_train_step(cfg))
        idx = jnp.arange(16)
        new, m = step(state, jnp.asarray(ds.train_images), jnp.asarray(ds.train_labels), idx)
        assert int(new.step) == 1 and float(m.count) == 16
        assert 0 <= float(m.correct) <= 16 and np.isfinite(float(m.loss_sum))
        chex.assert_trees_all_equal_shapes_and_dtypes(new.params, state.params)
        assert not jax.tree.all(jax.tree.map(jnp.array_equal, new.params, state.params))

    @chex.variants(with_jit=True, without_jit=True)
    def test_eval_step_masks_padding(self):
        ds, state = _setup(self.cfg)
        step = self.variant(steps.make_eval_step(self.cfg, state.apply_fn))
        images, labels = jnp.asarray(ds.test_images), jnp.asarray(ds.test_labels)
        mask = jnp.arange(20) < 12
        m, logits = step(steps.variables(state), images, labels, jnp.arange(20), mask)
        m12, _ = step(steps.variables(state), images, labels, jnp.arange(12), jnp.ones(12, bool))
        chex.assert_shape(logits, (20, 10))
        chex.assert_trees_all_close(m, m12, rtol=1e-5)


def test_loss_matches_optax_cross_entropy(tiny_config):
    ds, state = _setup(tiny_config)
    idx = jnp.arange(32)
    m, logits = steps.make_eval_step(tiny_config, state.apply_fn)(
        steps.variables(state), jnp.asarray(ds.train_images), jnp.asarray(ds.train_labels), idx, jnp.ones(32, bool)
    )
    want = optax.softmax_cross_entropy_with_integer_labels(logits, jnp.asarray(ds.train_labels[:32])).sum()
    np.testing.assert_allclose(float(m.loss_sum), float(want), rtol=1e-5)


def _eval_batch(tiny_config):
    """An untrained state and the eval step's arguments for the first 8 test images."""
    ds, state = _setup(tiny_config)
    return state, (jnp.asarray(ds.test_images), jnp.asarray(ds.test_labels), jnp.arange(8), jnp.ones(8, bool))


def test_flip_averaging_is_invariant_to_mirroring(tiny_config):
    state, (images, labels, idx, mask) = _eval_batch(tiny_config)
    plain = steps.make_eval_step(tiny_config, state.apply_fn)
    tiny_config.eval.tta_flip = True
    tta = steps.make_eval_step(tiny_config, state.apply_fn)
    v = steps.variables(state)
    _, lg = tta(v, images, labels, idx, mask)
    _, lg_mirrored = tta(v, images[:, :, ::-1], labels, idx, mask)
    _, lg_plain = plain(v, images, labels, idx, mask)
    _, lg_plain_mirrored = plain(v, images[:, :, ::-1], labels, idx, mask)
    chex.assert_trees_all_close(lg, lg_mirrored, atol=1e-5)
    chex.assert_trees_all_close(lg, (lg_plain + lg_plain_mirrored) / 2, atol=1e-5)
    assert not np.allclose(lg_plain, lg_plain_mirrored, atol=1e-3)  # the untrained net is not symmetric itself


def test_shift_moves_pixels_and_fills_the_uncovered_edge():
    x = jnp.arange(9.0).reshape(1, 3, 3, 1)
    down_left = steps.shifted(x, 1, -1, fill=-1.0)[0, ..., 0]
    chex.assert_trees_all_equal(down_left, jnp.array([[-1.0, -1, -1], [1, 2, -1], [4, 5, -1]]))
    chex.assert_trees_all_equal(steps.shifted(x, 0, 0, fill=-1.0), x)


def test_shift_views_average_the_ten_views(tiny_config):
    """flip x {still, 1 pixel up, down, left, right}, uncovered pixels black (-1 after Normalize)."""
    state, (images, labels, idx, mask) = _eval_batch(tiny_config)
    tiny_config.eval.tta_flip, tiny_config.eval.tta_shift = True, 1
    _, lg = steps.make_eval_step(tiny_config, state.apply_fn)(steps.variables(state), images, labels, idx, mask)
    v = steps.variables(state)
    x = steps.normalize(steps.preprocess(images[:8]), tiny_config)
    assert steps.background(tiny_config) == -1.0
    views = [
        steps.shifted(base, dy, dx, -1.0)
        for base in (x, x[:, :, ::-1])
        for dy, dx in [(0, 0), (1, 0), (-1, 0), (0, 1), (0, -1)]
    ]
    want = jnp.mean(jnp.stack([state.apply_fn(v, view, train=False) for view in views]), 0)
    chex.assert_trees_all_close(lg, want, atol=1e-5)
    tiny_config.eval.tta_shift = 0
    _, flip_only = steps.make_eval_step(tiny_config, state.apply_fn)(v, images, labels, idx, mask)
    assert not np.allclose(lg, flip_only, atol=1e-4)


def test_normalize_maps_to_minus_one_one(tiny_config):
    x = steps.preprocess(jnp.array([[[0, 255]]], jnp.uint8))
    chex.assert_shape(x, (1, 1, 2, 1))
    np.testing.assert_allclose(np.asarray(steps.normalize(x, tiny_config)).ravel(), [-1.0, 1.0])


def test_schedules_follow_their_formulas(tiny_config):
    """3 epochs x 10 steps, peak 1e-2: constant; 1 warmup epoch then cosine to 0; one-cycle (optax's)."""
    tiny_config.optim.lr, tiny_config.train.epochs, tiny_config.optim.warmup_epochs = 1e-2, 3, 1.0
    expected = {
        "constant": lambda t: 1e-2,
        "cosine": lambda t: 1e-2 * t / 10 if t < 10 else 1e-2 * 0.5 * (1 + np.cos(np.pi * (t - 10) / 20)),
    }
    for name, f in expected.items():
        tiny_config.optim.schedule = name
        lr = steps.schedule(tiny_config, steps_per_epoch=10)
        np.testing.assert_allclose([float(lr(t)) for t in range(31)], [f(t) for t in range(31)], rtol=1e-5, atol=1e-9)
    tiny_config.optim.schedule = "onecycle"
    lr = steps.schedule(tiny_config, steps_per_epoch=10)
    values = [float(lr(t)) for t in range(31)]
    assert int(np.argmax(values)) == 9 and values[9] == pytest.approx(1e-2)  # the peak at 30% of the 30 steps
    assert values[0] < 1e-3 and values[30] < 1e-6


def test_unknown_optimizer_is_refused(tiny_config):
    tiny_config.optim.name = "sgdx"
    with pytest.raises(ValueError, match="sgdx"):
        steps.optimizer(tiny_config, 10)


@pytest.mark.parametrize("steps_per_epoch, alternates", [(1, True), (2, False)])
def test_train_step_shows_flip_alt_the_epoch(tiny_data_dir, steps_per_epoch, alternates):
    """The train step counts epochs from its step number: the same batch comes out mirrored the other way at
    the next epoch and the same way within one (the images are caught where a teacher would see them)."""
    c = tiny(tiny_data_dir)
    c.augment = "flip_alt"
    ds = data.load(c.data.dir, verify=False)
    seen = []

    def teacher(x01):
        jax.debug.callback(lambda a: seen.append(np.asarray(a)), x01)
        return jnp.full((x01.shape[0], 10), 0.1)

    state = steps.create_state(models.build(c), optax.sgd(0.0), jax.random.key(0), jax.random.key(1))
    step = jax.jit(steps.make_train_step(c, teachers=teacher, steps_per_epoch=steps_per_epoch))
    images, labels, idx = jnp.asarray(ds.train_images), jnp.asarray(ds.train_labels), jnp.arange(32)
    for _ in range(2):
        state, _ = step(state, images, labels, idx)
    jax.effects_barrier()
    x = np.asarray(steps.preprocess(images[idx]))
    first = np.array([np.array_equal(a, xi[:, ::-1]) and not np.array_equal(a, xi) for a, xi in zip(seen[0], x)])
    assert 0 < first.sum() < 32
    assert np.array_equal(seen[1], np.where(first[:, None, None, None], x, x[:, :, ::-1]) if alternates else seen[0])
