"""Knowledge distillation: the objective, the teachers' targets, and the runs a student may not learn from."""

import json

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from conftest import tiny, write_idx_dir

from fmnist_jax import checkpoints, data, distill, models, restore, steps, train, validate
from fmnist_jax.errors import ConfigError
from fmnist_jax.members import Member


@pytest.fixture(scope="module")
def teachers(tmp_path_factory, tiny_data_dir):
    """Two finished tiny runs: one on fold 0 alone (a valid teacher for a fold-0 student), one on folds 0 and 1."""
    root = tmp_path_factory.mktemp("teachers")
    out = {}
    for name, folds in (("fold0", (0,)), ("folds01", (0, 1))):
        c = tiny(tiny_data_dir)
        c.cv.folds, c.train.epochs = folds, 2
        train.train_and_evaluate(c, root / name, progress=False)
        out[name] = root / name
    return out


def student(data_dir, *teacher_dirs, weight=0.5, temperature=2.0):
    c = tiny(data_dir)
    c.cv.folds, c.train.epochs = (0,), 2
    c.distill.teachers, c.distill.weight, c.distill.temperature = tuple(map(str, teacher_dirs)), weight, temperature
    return c


def test_distillation_loss_is_kl_times_t_squared():
    rng = np.random.default_rng(0)
    logits, t = rng.normal(size=(6, 10)), 3.0
    targets = jax.nn.softmax(rng.normal(size=(6, 10)))
    q = np.asarray(jax.nn.log_softmax(logits / t))
    want = t**2 * np.sum(targets * (np.log(targets) - q), axis=-1)
    chex.assert_trees_all_close(steps.distillation_losses(logits, targets, t), want, rtol=1e-5)
    # a student that already matches the targets has nothing to learn from them
    chex.assert_trees_all_close(steps.distillation_losses(np.log(targets) * t, targets, t), np.zeros(6), atol=1e-5)


def test_train_step_descends_the_weighted_sum_of_label_and_teacher_losses(tiny_data_dir):
    """One SGD step with lr 1 moves the parameters by exactly minus the gradient of
    (1 - w) x smoothed cross-entropy + w x T^2 KL(teacher || student at T)."""
    c = tiny(tiny_data_dir)
    c.augment, c.train.label_smoothing, c.distill.weight, c.distill.temperature = "none", 0.1, 0.3, 2.0
    ds = data.load(c.data.dir, verify=False)
    model = models.build(c)
    state = steps.create_state(model, optax.sgd(1.0), jax.random.key(0), jax.random.key(1))
    mix = jax.random.normal(jax.random.key(2), (28 * 28, 10))

    def teacher(x01):  # any function of the augmented images in [0, 1] will do as a teacher
        return jax.nn.softmax(x01.reshape(len(x01), -1) @ mix / 2.0)

    idx = jnp.arange(16)
    images, labels = jnp.asarray(ds.train_images), jnp.asarray(ds.train_labels)
    new, _ = jax.jit(steps.make_train_step(c, teachers=teacher))(state, images, labels, idx)

    x01 = steps.preprocess(images[idx])
    x = steps.normalize(x01, c)

    def objective(params):
        logits, _ = model.apply(
            {"params": params, "batch_stats": state.batch_stats}, x, train=True, mutable=["batch_stats"]
        )
        smooth = optax.smooth_labels(jax.nn.one_hot(labels[idx], 10), 0.1)
        kd = optax.kl_divergence(jax.nn.log_softmax(logits / 2.0), teacher(x01)) * 4.0
        return jnp.mean(0.7 * optax.softmax_cross_entropy(logits, smooth) + 0.3 * kd)

    grads = jax.grad(objective)(state.params)
    chex.assert_trees_all_close(new.params, jax.tree.map(lambda p, g: p - g, state.params, grads), atol=1e-5)


def test_targets_are_the_mean_softened_prediction_of_every_teacher_member(teachers, tiny_data_dir):
    ds = data.load(str(tiny_data_dir), verify=False)
    loaded = distill.load(_final(tiny_data_dir, teachers), ds.digest, [Member(0, 0)])
    assert [len(t.run.members) for t in loaded] == [2]
    got = distill.make_targets(loaded, 2.0)(steps.preprocess(jnp.asarray(ds.test_images[:50])))
    _, logits = restore.restore(teachers["folds01"]).evaluate(ds.test_images[:50], tta_flip=False, tta_shift=0)
    chex.assert_trees_all_close(got, jax.nn.softmax(logits / 2.0).mean(0), atol=1e-5)


def _final(data_dir, teachers):
    """A student trained on all training images: it may learn from a teacher of any fold."""
    c = student(data_dir, teachers["folds01"])
    c.cv.holdout = False
    return c


def test_a_distilled_student_trains_and_records_its_teachers(teachers, tiny_data_dir, tmp_path):
    c = student(tiny_data_dir, teachers["fold0"], weight=0.5)
    summary = train.train_and_evaluate(c, tmp_path / "student", progress=False)
    plain = tiny(tiny_data_dir)
    plain.cv.folds, plain.train.epochs = (0,), 2
    assert summary["members"] != train.train_and_evaluate(plain, tmp_path / "plain", progress=False)["members"]
    record = json.loads((tmp_path / "student" / "record.json").read_text())
    (t,) = record["teachers"]
    assert t["workdir"] == str(teachers["fold0"].resolve()) and t["epoch"] == 2
    assert t["checkpoint_sha256"] == checkpoints.digest(teachers["fold0"], 2)
    assert t["members"] == [{"fold": 0, "seed": 0}]


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda c, t: setattr(c.distill, "teachers", (str(t["folds01"]),)), "validates on (fold 1 (student 0))"),
        (lambda c, t: setattr(c.cv, "folds", (0, 1)), "must train one fold"),
        (lambda c, t: setattr(c.cv, "split_seed", 7), "cv.split_seed 0 (student 7)"),
        (lambda c, t: setattr(c.distill, "teachers", (str(t["fold0"] / "nowhere"),)), "no checkpoints"),
    ],
)
def test_a_teacher_that_saw_the_students_validation_images_or_is_missing_is_refused(
    teachers, tiny_data_dir, tmp_path, change, message
):
    c = student(tiny_data_dir, teachers["fold0"])
    change(c, teachers)
    with pytest.raises(ConfigError, match="distill"):
        try:
            train.train_and_evaluate(c, tmp_path / "w", progress=False)
        except ConfigError as e:
            assert message in str(e), e
            raise
    assert not (tmp_path / "w").exists()  # refused before anything was written


def test_unfinished_teachers_and_other_data_are_refused(teachers, tiny_data_dir, tmp_path):
    other = write_idx_dir(tmp_path / "other", seed=5)
    with pytest.raises(ConfigError, match="trained on other data"):
        train.setup(student(other, teachers["fold0"]))
    unfinished = tmp_path / "unfinished"
    c = tiny(tiny_data_dir)
    c.cv.folds, c.train.epochs = (0,), 2
    train.train_and_evaluate(c, unfinished, progress=False)
    for f in sorted((unfinished / "checkpoints" / "2").rglob("*"), reverse=True):
        f.rmdir() if f.is_dir() else f.unlink()
    (unfinished / "checkpoints" / "2").rmdir()
    with pytest.raises(ConfigError, match=r"not finished \(1 of 2 epochs\)"):
        train.setup(student(tiny_data_dir, unfinished))


@pytest.mark.parametrize(
    "teachers_, weight, temperature, message",
    [
        ((), 0.5, 1.0, "needs both teachers and a weight"),
        (("runs/t",), 0.0, 1.0, "needs both teachers and a weight"),
        (("runs/t",), 1.5, 1.0, "distill.weight=1.5"),
        (("runs/t",), 0.5, 0.0, "distill.temperature=0.0"),
        (("",), 0.5, 1.0, "distill.teachers"),
    ],
)
def test_distill_values_are_checked_before_work(tiny_data_dir, teachers_, weight, temperature, message):
    c = student(tiny_data_dir, weight=weight, temperature=temperature)
    c.distill.teachers = teachers_
    with pytest.raises(ConfigError, match=message):
        validate.check(c)
