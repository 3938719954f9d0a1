"""Figures for data exploration and run reports: pure functions from arrays/rows to matplotlib Figures.

Figures are built with `matplotlib.figure.Figure` directly (Agg canvas), never through
pyplot, so nothing is registered in pyplot's global figure list: a report or a test that
draws hundreds of figures leaks no memory and needs no display. `save` writes a PNG.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any
from collections.abc import Sequence

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from fmnist_jax.data import CLASS_NAMES
from fmnist_jax.writers import write_bytes

DPI = 110
WRONG = "tab:red"


def save(fig: Figure, path: str | Path) -> Path:
    """Write `fig` as a PNG (parents created, atomically: `writers.write_bytes`) and return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    png = io.BytesIO()
    fig.savefig(png, format="png", dpi=DPI, bbox_inches="tight")
    write_bytes(path, png.getvalue())
    return path


def _image_axes(fig: Figure, rows: int, cols: int) -> np.ndarray:
    axes = np.asarray(fig.subplots(rows, cols, squeeze=False))
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    return axes


def image_rows(rows: dict[str, np.ndarray], title: str = "") -> Figure:
    """A grid with one labelled row per entry of `rows` (name -> images [K, 28, 28], uint8 or [0, 1] floats)."""
    cols = max(len(v) for v in rows.values())
    fig = Figure(figsize=(cols * 0.9 + 1.6, len(rows) * 0.9 + 0.4))
    axes = _image_axes(fig, len(rows), cols)
    for r, (name, images) in enumerate(rows.items()):
        vmax = 255 if np.asarray(images).dtype == np.uint8 else 1
        for ax, image in zip(axes[r], images):
            ax.imshow(np.asarray(image).squeeze(), cmap="gray_r", vmin=0, vmax=vmax)
        for ax in axes[r, len(images) :]:
            ax.set_axis_off()
        axes[r, 0].set_ylabel(name, rotation=0, ha="right", va="center", fontsize=9)
    fig.subplots_adjust(wspace=0.05, hspace=0.05, top=1 - 0.45 / (len(rows) * 0.9 + 0.4))
    if title:
        fig.suptitle(title, y=0.995)
    return fig


def sample_grid(
    images: np.ndarray, labels: np.ndarray, per_class: int = 8, seed: int = 0, class_names: Sequence[str] = CLASS_NAMES
) -> Figure:
    """One row per class, `per_class` randomly drawn examples each (uint8 images [N, 28, 28])."""
    rng = np.random.default_rng(seed)
    rows = {
        name: images[rng.choice(np.flatnonzero(labels == c), per_class, replace=False)]
        for c, name in enumerate(class_names)
    }
    return image_rows(rows, title=f"{per_class} random training examples per class")


def class_balance(splits: dict[str, np.ndarray], class_names: Sequence[str] = CLASS_NAMES) -> Figure:
    """Grouped bars of images per class for each labelled split, e.g. {'train': y, 'test': y}."""
    fig = Figure(figsize=(9, 3.6))
    ax = fig.subplots()
    k, width = len(class_names), 0.8 / max(len(splits), 1)
    for s, (name, labels) in enumerate(splits.items()):
        counts = np.bincount(labels, minlength=k)[:k]
        bars = ax.bar(
            np.arange(k) + (s - (len(splits) - 1) / 2) * width, counts, width, label=f"{name} (n={len(labels):,})"
        )
        ax.bar_label(bars, fontsize=7)
    ax.set_xticks(np.arange(k), class_names, rotation=30, ha="right")
    ax.set_ylabel("images")
    ax.set_title("Images per class")
    ax.set_ylim(0, ax.get_ylim()[1] * 1.15)
    ax.legend(loc="upper center", ncols=len(splits))
    return fig


def mean_images(images: np.ndarray, labels: np.ndarray, class_names: Sequence[str] = CLASS_NAMES) -> Figure:
    """The mean image of each class (top) and its pixel standard deviation (bottom): where classes differ."""
    fig = Figure(figsize=(len(class_names) * 1.1, 2.4))
    axes = _image_axes(fig, 2, len(class_names))
    for c, name in enumerate(class_names):
        x = images[labels == c].astype(np.float32)
        axes[0, c].imshow(x.mean(0), cmap="gray_r", vmin=0, vmax=255)
        axes[1, c].imshow(x.std(0), cmap="magma", vmin=0, vmax=128)
        axes[0, c].set_title(name, fontsize=8)
    axes[0, 0].set_ylabel("mean", fontsize=9)
    axes[1, 0].set_ylabel("std", fontsize=9)
    fig.subplots_adjust(wspace=0.05, hspace=0.05)
    return fig


def curves_by_member(rows: Sequence[dict[str, Any]], key: str) -> tuple[np.ndarray, np.ndarray]:
    """(epochs [E], values [members, E]) of metric `key` from metrics.jsonl rows.

    A resumed run may log an epoch twice; the last row wins. Members that have not
    reached an epoch yet (interrupted run) are NaN there.
    """
    last = {(r["member"], r["epoch"]): r[key] for r in rows if key in r}
    members = sorted({m for m, _ in last})
    epochs = sorted({e for _, e in last})
    values = np.full((len(members), len(epochs)), np.nan)
    for (m, e), v in last.items():
        values[members.index(m), epochs.index(e)] = v
    return np.asarray(epochs), values


def learning_curves(rows: Sequence[dict[str, Any]], title: str = "") -> Figure:
    """Loss and accuracy per epoch: each member thin, the member mean bold with a ± 1 std band."""
    fig = Figure(figsize=(10, 3.8), layout="constrained")
    axes = fig.subplots(1, 2)
    for ax, metric in zip(axes, ("loss", "accuracy")):
        for split, name, color in (
            ("train", "train", "tab:blue"),
            ("val", "val", "tab:orange"),
            ("ema_val", "val, weight average", "tab:green"),  # runs with train.ema_decay > 0
        ):
            epochs, v = curves_by_member(rows, f"{split}_{metric}")
            if not v.size:
                continue
            for member in v:
                ax.plot(epochs, member, color=color, alpha=0.3, lw=0.8)
            mean, std = np.nanmean(v, 0), np.nanstd(v, 0)
            ax.plot(epochs, mean, color=color, lw=2, marker="o", ms=4, label=f"{name} (mean of {len(v)})")
            ax.fill_between(epochs, mean - std, mean + std, color=color, alpha=0.2, lw=0)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel(metric)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(title or "Learning curves (thin: members; band: ± 1 std across members)")
    return fig


def confusion_matrix(labels: np.ndarray, preds: np.ndarray, num_classes: int = 10) -> np.ndarray:
    """counts[true, predicted]."""
    return np.bincount(num_classes * np.asarray(labels) + np.asarray(preds), minlength=num_classes**2).reshape(
        num_classes, num_classes
    )


def confusion(counts: np.ndarray, class_names: Sequence[str] = CLASS_NAMES, title: str = "") -> Figure:
    """Row-normalised confusion matrix (each row: where that true class went), percentages annotated."""
    counts = np.asarray(counts)
    rates = counts / np.maximum(counts.sum(1, keepdims=True), 1)
    fig = Figure(figsize=(7.2, 6.2))
    ax = fig.subplots()
    im = ax.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    for (i, j), r in np.ndenumerate(rates):
        if counts[i, j]:
            ax.text(
                j,
                i,
                f"{100 * r:.0f}" if r >= 0.01 else "<1",
                ha="center",
                va="center",
                fontsize=7,
                color="white" if r > 0.5 else "black",
            )
    k = len(class_names)
    ax.set_xticks(np.arange(k), class_names, rotation=45, ha="right")
    ax.set_yticks(np.arange(k), class_names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    accuracy = np.trace(counts) / max(counts.sum(), 1)
    ax.set_title(title or f"Confusion (% of true class); accuracy {100 * accuracy:.2f}% of {counts.sum():,}")
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    return fig


def pick_examples(
    labels: np.ndarray, preds: np.ndarray, n: int = 24, wrong_fraction: float = 0.5, seed: int = 0
) -> np.ndarray:
    """Indices of `n` examples, up to `wrong_fraction` of them misclassified, in index order.

    Misclassified images are over-sampled on purpose (they are what one wants to look at);
    the figure's title says how many are shown, so the panel is not read as an error rate.
    """
    rng = np.random.default_rng(seed)
    wrong, right = np.flatnonzero(labels != preds), np.flatnonzero(labels == preds)
    n_wrong = min(len(wrong), int(round(n * wrong_fraction)))
    n_right = min(len(right), n - n_wrong)
    return np.sort(
        np.concatenate([rng.choice(wrong, n_wrong, replace=False), rng.choice(right, n_right, replace=False)])
    ).astype(int)


def predictions(
    images: np.ndarray,
    labels: np.ndarray,
    probs: np.ndarray,
    idx: np.ndarray,
    cols: int = 8,
    class_names: Sequence[str] = CLASS_NAMES,
    title: str = "",
) -> Figure:
    """The images `idx` with predicted class and probability; misclassified ones framed in red with the truth."""
    rows = -(-len(idx) // cols)
    fig = Figure(figsize=(cols * 1.45, rows * 1.75))
    axes = _image_axes(fig, rows, cols)
    preds = probs.argmax(-1)
    for ax in axes.flat[len(idx) :]:
        ax.set_axis_off()
    for ax, i in zip(axes.flat, idx):
        ok = preds[i] == labels[i]
        ax.imshow(images[i], cmap="gray_r", vmin=0, vmax=255)
        text = f"{class_names[preds[i]]} {100 * probs[i, preds[i]]:.0f}%"
        if not ok:
            text += f"\ntrue: {class_names[labels[i]]}"
        ax.set_title(text, fontsize=7, color="black" if ok else WRONG)
        for spine in ax.spines.values():
            spine.set_color("black" if ok else WRONG)
            spine.set_linewidth(0.5 if ok else 2.5)
    n_wrong = int((preds[idx] != labels[idx]).sum())
    fig.suptitle(title or f"Predictions: {n_wrong} of {len(idx)} shown are misclassified (red; over-sampled)")
    fig.subplots_adjust(hspace=0.6, wspace=0.1)
    return fig


def compare_curves(runs: dict[str, Sequence[dict[str, Any]]], key: str = "val_accuracy", title: str = "") -> Figure:
    """Metric `key` per epoch for several runs (e.g. ablation points): member mean with a ± 1 std band each."""
    fig = Figure(figsize=(7, 4), layout="constrained")
    ax = fig.subplots()
    for name, rows in runs.items():
        epochs, v = curves_by_member(rows, key)
        mean, std = np.nanmean(v, 0), np.nanstd(v, 0)
        (line,) = ax.plot(epochs, mean, marker="o", ms=4, label=f"{name} ({len(v)})")
        ax.fill_between(epochs, mean - std, mean + std, color=line.get_color(), alpha=0.15, lw=0)
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel(key.replace("_", " "))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, title="point (members)", title_fontsize=8)
    ax.set_title(title or f"{key.replace('_', ' ')} per epoch (member mean ± 1 std)")
    return fig


def bar_chart(table: Sequence[dict[str, Any]], title: str = "", baseline: str | None = None) -> Figure:
    """Val and test accuracy per point, mean ± std over members as error bars (y axis zoomed to the data).

    Takes any table with `point`, `{val,test}_acc_{mean,std}` columns (ablations, reports).
    """
    names = [r["point"] for r in table]
    x = np.arange(len(names))
    fig = Figure(figsize=(max(4.0, 0.9 * len(names) + 1.5), 3.6))
    ax = fig.add_subplot()
    lows = []
    for offset, split, color in ((-0.2, "val", "tab:blue"), (0.2, "test", "tab:orange")):
        mean = np.array([100 * r[f"{split}_acc_mean"] for r in table])
        std = np.array([100 * r[f"{split}_acc_std"] for r in table])
        ax.bar(x + offset, mean, 0.4, yerr=std, capsize=3, color=color, label=split)
        lows.append((mean - std).min())
    top = max(100 * max(r[f"{s}_acc_mean"] + r[f"{s}_acc_std"] for s in ("val", "test")) for r in table)
    pad = max(0.5, 0.15 * (top - min(lows)))
    ax.set_ylim(min(lows) - pad, top + pad)
    ax.set_xticks(x, [f"{n}\n(baseline)" if n == baseline else n for n in names], rotation=30, ha="right")
    ax.set_ylabel("accuracy % (mean ± std)")
    ax.set_title(title, fontsize=9)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return fig


def delta_chart(
    table: Sequence[dict[str, Any]], title: str = "", baseline: str | None = None, alpha: float = 0.05
) -> Figure:
    """Each point's paired val difference from the baseline with its 95% t-interval (a forest plot).

    This is what the table tests, and what a bar chart of means hides: the members' fold-to-fold spread is
    shared by every point, so the paired interval is much narrower than the bars' std. A filled marker is a
    difference the Benjamini-Hochberg adjusted p puts below `alpha`; hollow ones are not shown to differ.
    """
    rows = [r for r in table if r["point"] != baseline]
    fig = Figure(figsize=(6.0, 0.4 * len(rows) + 1.6), layout="constrained")
    ax = fig.subplots()
    y = np.arange(len(rows))[::-1]
    for yi, r in zip(y, rows):
        d, low, high = (100 * float(r[k]) for k in ("val_delta", "val_ci_low", "val_ci_high"))
        if not np.isfinite(d):
            continue
        shown = float(r["val_p_adj"]) < alpha
        err = [[d - low], [high - d]] if np.isfinite(low) and np.isfinite(high) else None
        ax.errorbar(d, yi, xerr=err, fmt="o", color="tab:blue", mfc="tab:blue" if shown else "white", capsize=3)
    ax.axvline(0.0, color="0.4", lw=1, ls="--")
    ax.set_yticks(y, [r["point"] for r in rows])
    ax.set_ylim(-0.7, len(rows) - 0.3)
    ax.set_xlabel(
        f"val accuracy − {baseline}, points: paired mean and 95% CI\n(filled: Benjamini-Hochberg adjusted p < {alpha})"
    )
    ax.set_title(title, fontsize=9)
    ax.grid(axis="x", alpha=0.3)
    return fig


def budget_chart(points: dict[str, Sequence[dict[str, float] | None]], epochs: Sequence[Any]) -> Figure:
    """Val accuracy (mean ± 1 std over members) of each point at each budget: does the ranking hold?"""
    fig = Figure(figsize=(6, 4), layout="constrained")
    ax = fig.subplots()
    for name, values in points.items():
        xs = [e for e, v in zip(epochs, values) if v is not None]
        ms = [v for v in values if v is not None]
        ax.errorbar(xs, [100 * v["mean"] for v in ms], [100 * v["std"] for v in ms], marker="o", capsize=4, label=name)
    ax.set_xlabel("epochs")
    ax.set_ylabel("val accuracy %")
    ax.set_xticks([e for e in epochs if e is not None])
    ax.grid(alpha=0.3)
    ax.legend()
    ax.set_title("Learning-curve check: the checked points at two budgets")
    return fig
