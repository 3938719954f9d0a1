"""One config end to end: data -> folds x seeds members -> compiled steps -> epochs -> metrics and summary.

Workdir layout: `config.json` (resolved config), `record.json` (versions, data hash, git,
devices), `metrics.jsonl` (one row per member per epoch), `summary.json`.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from tqdm.auto import tqdm

from fmnist_jax import data, members, models, train
from fmnist_jax.metrics import Metrics
from fmnist_jax.record import run_record
from fmnist_jax.writers import JsonlWriter, MetricWriter


@dataclasses.dataclass(frozen=True)
class Member:
    fold: int
    seed: int

    @property
    def tag(self) -> str:
        return f"fold{self.fold}_seed{self.seed}"


def members_of(config: ml_collections.ConfigDict) -> list[Member]:
    """Every (fold, seed) pair of the config, seed-major."""
    folds, seeds = tuple(config.cv.folds), tuple(config.seeds)
    if not folds or not seeds or len(set(folds)) != len(folds) or len(set(seeds)) != len(seeds):
        raise ValueError(f"cv.folds {folds} and seeds {seeds} must be non-empty and without repeats")
    return [Member(f, s) for s in seeds for f in folds]


@dataclasses.dataclass
class Experiment:
    """Everything fixed for a run: data on the device, members, their splits and compiled steps."""
    config: ml_collections.ConfigDict
    dataset: data.Dataset
    members: list[Member]
    model: models.CNN
    n_params: int
    mesh: Any
    train_idx: list[np.ndarray]
    val_idx: list[np.ndarray]
    steps_per_epoch: int
    arrays: dict[str, jax.Array]
    init_fn: Any
    train_step: Any
    eval_step: Any

    @property
    def batch_size(self) -> int:
        return self.config.train.batch_size


def setup(config: ml_collections.ConfigDict, dataset: data.Dataset | None = None) -> Experiment:
    """Validate the config (budget first), load and split data, compile the member steps."""
    model = models.build(config)
    n_params = models.check_budget(model, config.max_params)
    ms = members_of(config)
    dataset = dataset or data.load(config.data.dir or None, config.data.source, config.data.verify)
    splits = [data.kfold(dataset.train_labels, config.cv.k, m.fold, config.cv.split_seed) for m in ms]
    train_idx, val_idx = [s[0] for s in splits], [s[1] for s in splits]
    b = config.train.batch_size
    steps = min(len(t) for t in train_idx) // b
    if b <= 0 or steps == 0:
        raise ValueError(f"train.batch_size={b} must be positive and at most the training fold size {min(map(len, train_idx))}")
    if config.train.steps_per_epoch:
        steps = min(steps, config.train.steps_per_epoch)
    mesh = members.make_mesh(len(ms), config.members.devices)
    tx = train.optimizer(config, steps)
    strategy = config.members.strategy
    arrays = members.place({k: jnp.asarray(getattr(dataset, k)) for k in
                            ("train_images", "train_labels", "test_images", "test_labels")}, mesh, stacked=False)
    return Experiment(
        config=config, dataset=dataset, members=ms, model=model, n_params=n_params, mesh=mesh,
        train_idx=train_idx, val_idx=val_idx, steps_per_epoch=steps, arrays=arrays,
        init_fn=members.over_members(lambda ik, ak: train.create_state(model, tx, ik, ak), (0, 0), mesh, strategy),
        train_step=members.over_members(train.make_train_step(config), (0, None, None, 0), mesh, strategy,
                                        donate_argnums=(0,)),
        eval_step=members.over_members(train.make_eval_step(config), (0, None, None, 0, 0), mesh, strategy),
    )


def member_keys(m: Member) -> tuple[jax.Array, jax.Array]:
    """(init, augmentation) keys: init depends on the seed only, augmentation on seed and fold."""
    base = jax.random.key(m.seed)
    return jax.random.fold_in(base, 0), jax.random.fold_in(jax.random.fold_in(base, 1), m.fold)


def init_state(exp: Experiment) -> train.TrainState:
    keys = [member_keys(m) for m in exp.members]
    init_keys, aug_keys = (members.place(jnp.stack(k), exp.mesh, stacked=True) for k in zip(*keys))
    return exp.init_fn(init_keys, aug_keys)


def epoch_order(exp: Experiment, epoch: int) -> np.ndarray:
    """[steps, members, batch] dataset indices; each member shuffles its own fold by (seed, fold, epoch)."""
    n = exp.steps_per_epoch * exp.batch_size
    order = [idx[np.random.default_rng((m.seed, m.fold, epoch)).permutation(len(idx))[:n]]
             for m, idx in zip(exp.members, exp.train_idx)]
    return np.stack(order).reshape(len(exp.members), exp.steps_per_epoch, exp.batch_size).transpose(1, 0, 2)


def train_epoch(exp: Experiment, state: train.TrainState, epoch: int, progress: bool = True
                ) -> tuple[train.TrainState, dict[str, np.ndarray]]:
    """One epoch for all members; returns the new state and per-member train loss/accuracy."""
    order = members.place(jnp.asarray(epoch_order(exp, epoch)), exp.mesh, stacked=False)
    a = exp.arrays
    total = None
    bar = tqdm(total=exp.steps_per_epoch * exp.batch_size * len(exp.members), unit="img", unit_scale=True,
               desc=f"epoch {epoch + 1}/{exp.config.train.epochs}", disable=not progress, mininterval=2, leave=False)
    for step in range(exp.steps_per_epoch):
        state, m = exp.train_step(state, a["train_images"], a["train_labels"], order[step])
        total = m if total is None else total.merge(m)
        bar.update(exp.batch_size * len(exp.members))
    bar.close()
    return state, total.compute()


def evaluate(exp: Experiment, state: train.TrainState, split: str) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Per-member loss/accuracy on 'val' (each member's own held-out fold) or 'test'; also logits [M, N, 10]."""
    if split == "val":
        idx_list, images, labels = exp.val_idx, exp.arrays["train_images"], exp.arrays["train_labels"]
    elif split == "test":
        n = exp.dataset.test_labels.shape[0]
        idx_list, images, labels = [np.arange(n)] * len(exp.members), exp.arrays["test_images"], exp.arrays["test_labels"]
    else:
        raise ValueError(f"split must be 'val' or 'test', got {split!r}")
    bs = exp.config.eval.batch_size
    n_max = -(-max(map(len, idx_list)) // bs) * bs
    idx = np.zeros((len(idx_list), n_max), np.int32)
    mask = np.zeros((len(idx_list), n_max), bool)
    for i, ix in enumerate(idx_list):
        idx[i, :len(ix)], mask[i, :len(ix)] = ix, True
    total, logits = None, []
    for s in range(0, n_max, bs):
        m, lg = exp.eval_step(state, images, labels, *members.place((idx[:, s:s + bs], mask[:, s:s + bs]), exp.mesh, True))
        total = m if total is None else total.merge(m)
        logits.append(lg)
    return total.compute(), np.concatenate([np.asarray(x) for x in logits], axis=1)


def _rows(exp: Experiment, epoch: int, **split_metrics: dict[str, np.ndarray]) -> list[dict[str, Any]]:
    rows = []
    for i, m in enumerate(exp.members):
        row: dict[str, Any] = {"member": i, "fold": m.fold, "seed": m.seed, "epoch": epoch}
        for split, metrics in split_metrics.items():
            row.update({f"{split}_{k}": float(v[i]) for k, v in metrics.items()})
        rows.append(row)
    return rows


def _mean_std(x) -> dict[str, float]:
    x = np.asarray(x, np.float64)
    return {"mean": float(x.mean()), "std": float(x.std(ddof=1)) if x.size > 1 else 0.0}


def summarize(exp: Experiment, val: dict[str, np.ndarray], test: dict[str, np.ndarray],
              epoch_seconds: list[float]) -> dict[str, Any]:
    imgs = exp.steps_per_epoch * exp.batch_size * len(exp.members)
    steady = epoch_seconds[1:] or epoch_seconds  # epoch 1 includes compilation
    return {
        "name": exp.config.name,
        "members": [{"fold": m.fold, "seed": m.seed, "val_accuracy": float(val["accuracy"][i]),
                     "test_accuracy": float(test["accuracy"][i]), "test_loss": float(test["loss"][i])}
                    for i, m in enumerate(exp.members)],
        "val_accuracy": _mean_std(val["accuracy"]),
        "test_accuracy": _mean_std(test["accuracy"]),
        "params": exp.n_params,
        "flops_per_image": models.flops_per_image(exp.model),
        "epochs": exp.config.train.epochs,
        "steps_per_epoch": exp.steps_per_epoch,
        "train_seconds": float(sum(epoch_seconds)),
        "train_images_per_s": imgs / float(np.median(steady)),
        "devices": exp.mesh.size,
        "strategy": members.resolve_strategy(exp.config.members.strategy),
        "data_digest": exp.dataset.digest,
    }


def format_summary(s: dict[str, Any]) -> str:
    v, t = s["val_accuracy"], s["test_accuracy"]
    return (f"{s['name']}: {len(s['members'])} members, {s['params']:,} params, {s['epochs']} epochs, "
            f"{s['train_images_per_s']:.0f} img/s | val acc {100 * v['mean']:.2f} ± {100 * v['std']:.2f}% | "
            f"test acc {100 * t['mean']:.2f} ± {100 * t['std']:.2f}%")


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str | Path, progress: bool = True,
                       writer: MetricWriter | None = None) -> dict[str, Any]:
    """Train every member of `config` together, log per-epoch metrics, evaluate on test, write the summary."""
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    exp = setup(config)
    (workdir / "config.json").write_text(json.dumps(config.to_dict(), indent=2, default=list))
    (workdir / "record.json").write_text(json.dumps(run_record(config, exp.dataset), indent=2, default=str))
    (workdir / "metrics.jsonl").unlink(missing_ok=True)
    writer = writer or JsonlWriter(workdir / "metrics.jsonl")
    state = init_state(exp)
    epoch_seconds = []
    epochs = tqdm(range(config.train.epochs), desc=config.name, unit="epoch", disable=not progress)
    for epoch in epochs:
        t0 = time.perf_counter()
        state, train_m = train_epoch(exp, state, epoch, progress)
        jax.block_until_ready(state)
        epoch_seconds.append(time.perf_counter() - t0)
        val_m, _ = evaluate(exp, state, "val")
        writer.write(_rows(exp, epoch + 1, train=train_m, val=val_m))
        epochs.set_postfix(train_acc=f"{train_m['accuracy'].mean():.4f}", val_acc=f"{val_m['accuracy'].mean():.4f}")
    writer.close()
    test_m, _ = evaluate(exp, state, "test")
    summary = summarize(exp, val_m, test_m, epoch_seconds)
    (workdir / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary
