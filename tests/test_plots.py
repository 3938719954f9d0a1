"""Plot helpers: the numbers behind each figure are right, figures save as PNGs, pyplot holds nothing."""

import chex
import matplotlib.colors as mcolors
import matplotlib.pyplot as plt
import numpy as np
import pytest
from PIL import Image

from fmnist_jax import plots


@pytest.fixture
def images_labels():
    rng = np.random.default_rng(0)
    labels = np.arange(50, dtype=np.int32) % 10
    return rng.integers(0, 256, (50, 28, 28), dtype=np.uint8), labels


def rows_for(values):
    """metrics.jsonl rows from values[member][epoch] of train/val loss and accuracy."""
    return [
        {
            "member": m,
            "fold": m,
            "seed": 0,
            "epoch": e + 1,
            "train_loss": v,
            "val_loss": 2 * v,
            "train_accuracy": 1 - v,
            "val_accuracy": 1 - 2 * v,
        }
        for m, per_epoch in enumerate(values)
        for e, v in enumerate(per_epoch)
    ]


def test_figures_save_as_png_and_leave_pyplot_empty(tmp_path, images_labels):
    images, labels = images_labels
    probs = np.eye(10)[(labels + (np.arange(50) % 3 == 0)) % 10]
    figs = {
        "grid": plots.sample_grid(images, labels, per_class=3),
        "balance": plots.class_balance({"train": labels, "test": labels[:20]}),
        "mean": plots.mean_images(images, labels),
        "curves": plots.learning_curves(rows_for([[0.5, 0.3], [0.4, 0.2]])),
        "confusion": plots.confusion(plots.confusion_matrix(labels, probs.argmax(-1))),
        "predictions": plots.predictions(images, labels, probs, np.arange(10), cols=4),
    }
    for name, fig in figs.items():
        path = plots.save(fig, tmp_path / "sub" / f"{name}.png")
        with Image.open(path) as im:
            assert im.format == "PNG" and im.size[0] > 200 and im.size[1] > 100, name
    assert plt.get_fignums() == []


def test_sample_grid_draws_only_the_row_class(images_labels):
    images, labels = images_labels
    fig = plots.sample_grid(images, labels, per_class=4)
    axes = np.asarray(fig.axes).reshape(10, 4)
    for c in range(10):
        for ax in axes[c]:
            shown = ax.images[0].get_array()
            assert any(np.array_equal(shown, images[i]) for i in np.flatnonzero(labels == c))


def test_class_balance_bar_heights():
    labels = np.array([0, 0, 0, 3, 9], np.int32)
    fig = plots.class_balance({"train": labels})
    heights = [p.get_height() for p in fig.axes[0].patches]
    chex.assert_trees_all_close(np.array(heights), np.bincount(labels, minlength=10).astype(float))


def test_mean_images_are_class_means(images_labels):
    images, labels = images_labels
    fig = plots.mean_images(images, labels)
    shown = fig.axes[3].images[0].get_array()  # top row, class 3
    chex.assert_trees_all_close(np.asarray(shown), images[labels == 3].astype(np.float32).mean(0), rtol=1e-6)


def test_curves_by_member_last_row_wins_and_gaps_are_nan():
    rows = rows_for([[0.5, 0.3], [0.4]]) + [{"member": 0, "epoch": 2, "train_loss": 0.1}]
    epochs, v = plots.curves_by_member(rows, "train_loss")
    chex.assert_trees_all_close(epochs, np.array([1, 2]))
    chex.assert_trees_all_close(v, np.array([[0.5, 0.1], [0.4, np.nan]]))


def test_learning_curves_plot_member_mean_and_band():
    fig = plots.learning_curves(rows_for([[0.5, 0.3, 0.2], [0.3, 0.1, 0.0]]))
    loss_ax = fig.axes[0]
    mean_line = next(ln for ln in loss_ax.lines if ln.get_label().startswith("train"))
    chex.assert_trees_all_close(mean_line.get_ydata(), np.array([0.4, 0.2, 0.1]))
    band = loss_ax.collections[0].get_paths()[0].vertices
    assert np.isclose(band[:, 1].max(), 0.5) and np.isclose(band[:, 1].min(), 0.0)
    assert len(loss_ax.lines) == 2 * (2 + 1)  # train and val: two members and the mean each


def test_learning_curves_show_the_weight_average_when_the_run_kept_one():
    rows = [r | {"ema_val_loss": r["val_loss"] / 2, "ema_val_accuracy": 0.9} for r in rows_for([[0.5, 0.3]])]
    loss_ax = plots.learning_curves(rows).axes[0]
    mean_line = next(ln for ln in loss_ax.lines if ln.get_label().startswith("val, weight average"))
    chex.assert_trees_all_close(mean_line.get_ydata(), np.array([0.5, 0.3]))
    assert len(loss_ax.lines) == 3 * (1 + 1)


def test_confusion_matrix_counts():
    labels = np.array([0, 0, 1, 2, 2, 2])
    preds = np.array([0, 1, 1, 2, 0, 2])
    expected = np.zeros((3, 3), int)
    for t, p in zip(labels, preds):
        expected[t, p] += 1
    chex.assert_trees_all_equal(plots.confusion_matrix(labels, preds, 3), expected)
    fig = plots.confusion(expected, class_names=("a", "b", "c"))
    rates = np.asarray(fig.axes[0].images[0].get_array())
    chex.assert_trees_all_close(rates.sum(1), np.ones(3))
    assert "66.67%" in fig.axes[0].get_title()


@pytest.mark.parametrize("n_wrong_available,n,expected_wrong", [(30, 10, 5), (2, 10, 2), (0, 6, 0)])
def test_pick_examples_oversamples_mistakes(n_wrong_available, n, expected_wrong):
    labels = np.zeros(100, int)
    preds = labels.copy()
    preds[:n_wrong_available] = 1
    idx = plots.pick_examples(labels, preds, n=n)
    assert len(idx) == n and len(set(idx)) == n and np.all(np.diff(idx) > 0)
    assert (preds[idx] != labels[idx]).sum() == expected_wrong


def test_predictions_highlight_exactly_the_mistakes(images_labels):
    images, labels = images_labels
    preds = labels.copy()
    preds[[1, 4]] = (labels[[1, 4]] + 1) % 10
    fig = plots.predictions(images, labels, np.eye(10)[preds] * 0.9 + 0.01, np.arange(6), cols=3)
    red = [
        ax.title.get_color() == plots.WRONG or mcolors.same_color(ax.title.get_color(), plots.WRONG)
        for ax in fig.axes[:6]
    ]
    assert red == [False, True, False, False, True, False]
    assert "true: " in fig.axes[1].get_title() and "true: " not in fig.axes[0].get_title()
    assert "2 of 6" in fig.get_suptitle()
