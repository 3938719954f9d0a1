"""One config end to end: data -> folds x seeds members -> compiled steps -> epochs -> metrics and summary.

Workdir layout: `config.json` (resolved config), `record.json` (versions, data hash, git,
devices), `metrics.jsonl` (one row per member per epoch), `checkpoints/<epoch>/` (Orbax:
stacked train state + JSON meta), `wandb/` and `wandb_runs.json` (W&B), `summary.json`.
Re-running the same command in the same workdir resumes from the latest checkpoint.
In a multi-process run (`fmnist_jax.distributed`) every process runs all of this in lockstep
and process 0 alone writes the files and W&B. Several configs of one network (grid points that differ
only in `steps.PER_MEMBER_KEYS`) can train as one program (`train_packed`): each is a `Part` of the
member axis and keeps its own workdir, as if it had trained alone.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import sys
import time
from pathlib import Path
from collections.abc import Iterator, Sequence
from typing import Any

import filelock
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from tqdm.auto import tqdm

from fmnist_jax import (
    backend,
    checkpoints,
    config_lib,
    data,
    distill,
    distributed,
    members,
    models,
    stats,
    steps,
    stops,
    tracking,
    validate,
)
from fmnist_jax.members import Member
from fmnist_jax.metrics import Metrics
from fmnist_jax.record import run_record
from fmnist_jax.writers import write_json, write_text, JsonlWriter, MetricWriter, MultiWriter
from fmnist_jax.errors import ConfigError, Diverged, RunError, WorkdirBusy


@dataclasses.dataclass(frozen=True)
class Part:
    """One config of a run and where its members sit on the member axis (`start`, then `len(members)`).

    A run has one part; points packed into one program (`setup(..., packed=...)`) have one each.
    """

    config: ml_collections.ConfigDict
    members: list[Member]
    start: int

    def take(self, per_member: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """This part's entries of per-member metrics of the whole run."""
        return {k: v[self.start : self.start + len(self.members)] for k, v in per_member.items()}


@dataclasses.dataclass
class Experiment:
    """Everything fixed for a run: data on the device, members, their splits and compiled steps.

    `members` are the run's (every part's, in order); `slots` the computed member axis: the members, then
    copies of the first ones that pad it to a multiple of the mesh size (`members.slots`), trained and
    dropped. `config` is the first part's: what the parts share (`steps.pack_key`) is read from it.
    """

    config: ml_collections.ConfigDict
    parts: list[Part]
    dataset: data.Dataset
    members: list[Member]
    slots: list[Member]
    model: models.CNN
    n_params: int
    mesh: Any
    train_idx: list[np.ndarray]
    val_idx: list[np.ndarray]
    steps_per_epoch: int
    arrays: dict[str, jax.Array]
    teachers: list[distill.Teacher]
    tx: Any  # the stacked state's optimiser (`TrainState.tx`)
    init_fn: Any
    train_step: Any
    eval_step: Any

    @property
    def batch_size(self) -> int:
        return self.config.train.batch_size

    @property
    def holdout(self) -> bool:
        """Whether members have validation folds (`cv.holdout`; false: trained on all training images)."""
        return bool(self.config.cv.holdout)


def _absolute_paths(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """A relative `data.dir` or teacher workdir made absolute (in a copy), so the saved config works from any
    folder."""

    def absolute(path: str) -> str:
        return path if not path or Path(path).is_absolute() else str(Path(path).resolve())

    config = config.copy_and_resolve_references()
    config.data.dir = absolute(config.data.dir)
    config.distill.teachers = tuple(map(absolute, config.distill.teachers))
    return config


def _check_packable(configs: Sequence[ml_collections.ConfigDict]) -> None:
    first = steps.pack_key(configs[0])
    for c in configs[1:]:
        other = steps.pack_key(c)
        if other != first:
            diffs = [
                f"{k}: {first.get(k)!r} -> {other.get(k)!r}"
                for k in sorted(first | other)
                if first.get(k) != other.get(k)
            ]
            raise ConfigError(
                f"{c.name} cannot train in one program with {configs[0].name}: they differ in more than "
                f"{', '.join(steps.PER_MEMBER_KEYS)} ({'; '.join(diffs)})"
            )


def setup(
    config: ml_collections.ConfigDict,
    dataset: data.Dataset | None = None,
    packed: Sequence[ml_collections.ConfigDict] = (),
) -> Experiment:
    """Validate the config (values, then budget), load and split data, compile the member steps.

    `packed` configs train in the same program, their members after `config`'s: they may differ from it only
    in `steps.PER_MEMBER_KEYS` (and in name, seeds and folds), so one network and one loop serve all.
    """
    configs = [_absolute_paths(c) for c in (config, *packed)]
    for c in configs:
        validate.check(c)
    _check_packable(configs)
    config = configs[0]
    model = models.build(config)
    n_params = models.check_budget(model, config.max_params)
    parts: list[Part] = []
    ms: list[Member] = []
    for c in configs:
        parts.append(Part(c, members.members_of(c), len(ms)))
        ms += parts[-1].members
    dataset = dataset or data.for_config(config)
    splits = [data.split(dataset.train_labels, config.cv, m.fold) for m in ms]
    train_idx, val_idx = [s[0] for s in splits], [s[1] for s in splits]
    b = config.train.batch_size
    n_steps = min(len(t) for t in train_idx) // b
    if b <= 0 or n_steps == 0:
        raise ValueError(
            f"train.batch_size={b} must be positive and at most the training fold size {min(map(len, train_idx))}"
        )
    if config.train.steps_per_epoch:
        n_steps = min(n_steps, config.train.steps_per_epoch)
    mesh = members.make_mesh(len(ms), config.members.devices)
    tx = steps.optimizer(config, n_steps)  # the stacked state's; a packed part steps with its own (`Recipe`)
    strategy, options = config.members.strategy, backend.compiler_options(config.compile.cpu_conv)
    slots = members.padded(ms, members.slots(len(ms), mesh))
    part_of = members.padded([i for i, p in enumerate(parts) for _ in p.members], len(slots))
    recipes = [steps.recipe(p.config, n_steps) for p in parts] if packed else []
    teachers = distill.load(config, dataset.digest, ms)
    targets = distill.make_targets(teachers, config.distill.temperature) if teachers else None
    train_step = members.over_members(
        steps.make_train_step(config, recipes, targets, n_steps),
        (0, None, None, 0, 0),
        mesh,
        strategy,
        donate_argnums=(0,),
        compiler_options=options,
    )
    variants = members.place(jnp.asarray(part_of, jnp.int32), mesh, stacked=True)
    arrays = members.place(
        {k: jnp.asarray(getattr(dataset, k)) for k in ("train_images", "train_labels", "test_images", "test_labels")},
        mesh,
        stacked=False,
    )
    return Experiment(
        config=config,
        parts=parts,
        dataset=dataset,
        members=ms,
        slots=slots,
        model=model,
        n_params=n_params,
        mesh=mesh,
        train_idx=train_idx,
        val_idx=val_idx,
        steps_per_epoch=n_steps,
        arrays=arrays,
        teachers=teachers,
        tx=tx,
        init_fn=members.over_members(
            lambda ik, ak: steps.create_state(model, tx, ik, ak, config.train.ema_decay > 0),
            (0, 0),
            mesh,
            strategy,
            compiler_options=options,
        ),
        train_step=lambda state, images, labels, idx: train_step(state, images, labels, idx, variants),
        eval_step=members.over_members(
            steps.make_eval_step(config, model.apply), (0, None, None, 0, 0), mesh, strategy, compiler_options=options
        ),
    )


def init_state(exp: Experiment) -> steps.TrainState:
    keys = [members.keys(m) for m in exp.slots]
    init_keys, aug_keys = (members.place(jnp.stack(k), exp.mesh, stacked=True) for k in zip(*keys))
    return exp.init_fn(init_keys, aug_keys)


def epoch_order(exp: Experiment, epoch: int) -> np.ndarray:
    """[steps, slots, batch] dataset indices; each member shuffles its own fold by (seed, fold, epoch)."""
    n = exp.steps_per_epoch * exp.batch_size
    order = [
        idx[np.random.default_rng((m.seed, m.fold, epoch)).permutation(len(idx))[:n]]
        for m, idx in zip(exp.slots, members.padded(exp.train_idx, len(exp.slots)))
    ]
    return np.stack(order).reshape(len(exp.slots), exp.steps_per_epoch, exp.batch_size).transpose(1, 0, 2)


def train_epoch(
    exp: Experiment, state: steps.TrainState, epoch: int, progress: bool = True
) -> tuple[steps.TrainState, dict[str, np.ndarray]]:
    """One epoch for all members; returns the new state (with its padding slots) and per-member train
    loss/accuracy (real members only)."""
    order = members.place(jnp.asarray(epoch_order(exp, epoch)), exp.mesh, stacked=False)
    a = exp.arrays
    total: Metrics | None = None
    bar = tqdm(
        total=exp.steps_per_epoch * exp.batch_size * len(exp.members),
        unit="img",
        unit_scale=True,
        desc=f"epoch {epoch + 1}/{exp.config.train.epochs}",
        disable=not progress or not distributed.is_main(),
        mininterval=2,
        leave=False,
    )
    for step in range(exp.steps_per_epoch):
        stops.check()
        state, m = exp.train_step(state, a["train_images"], a["train_labels"], order[step])
        total = m if total is None else total.merge(m)
        bar.update(exp.batch_size * len(exp.members))
    bar.close()
    assert total is not None  # setup refuses configs with no steps
    return state, {k: v[: len(exp.members)] for k, v in members.to_host(total).compute().items()}


def evaluate(
    exp: Experiment, state: steps.TrainState, split: str, ema: bool = False
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Per-member loss/accuracy on 'val' (each member's own held-out fold) or 'test'; also logits [M, N, 10].

    N is the split's size (for 'val', the largest fold's: shorter folds are padded at the end). With `ema`,
    of the averaged weights (`train.ema_decay`).
    """
    if split == "val":
        idx_list, images, labels = exp.val_idx, exp.arrays["train_images"], exp.arrays["train_labels"]
    elif split == "test":
        n = exp.dataset.test_labels.shape[0]
        idx_list, images, labels = (
            [np.arange(n)] * len(exp.members),
            exp.arrays["test_images"],
            exp.arrays["test_labels"],
        )
    else:
        raise ValueError(f"split must be 'val' or 'test', got {split!r}")
    return members.evaluate(
        exp.eval_step, steps.variables(state, ema), images, labels, idx_list, exp.config.eval.batch_size, exp.mesh
    )


def evaluate_splits(
    exp: Experiment, state: steps.TrainState, split: str
) -> tuple[dict[str, dict[str, np.ndarray]], np.ndarray]:
    """`split`'s per-member metrics keyed by the name they are logged under (`split` for the weights,
    `ema_<split>` for their average when the run keeps one), and the weights' logits."""
    metrics, logits = evaluate(exp, state, split)
    out = {split: metrics}
    if exp.config.train.ema_decay > 0:
        out[f"ema_{split}"] = evaluate(exp, state, split, ema=True)[0]
    return out, logits


def check_finite(
    exp: Experiment, state: steps.TrainState, train_m: dict[str, np.ndarray], epoch: int, last_saved: int | None
) -> None:
    """Raise Diverged naming the members whose epoch loss or parameters are NaN/inf.

    Once an epoch: one reduction per parameter on the device and the epoch's losses already on the host,
    so it costs nothing next to the epoch, and no NaN reaches metrics, summary or checkpoints.
    """
    params_ok = members.to_host(
        jax.tree.reduce(
            jnp.logical_and, jax.tree.map(lambda x: jnp.isfinite(x).reshape(len(x), -1).all(1), state.params)
        )
    )
    bad = [m.tag for i, m in enumerate(exp.members) if not (params_ok[i] and np.isfinite(train_m["loss"][i]))]
    if bad:
        kept = f"the last finite checkpoint is epoch {last_saved}" if last_saved else "no checkpoint was saved"
        raise Diverged(
            f"training diverged in epoch {epoch}: non-finite loss or parameters in {', '.join(bad)} "
            f"(optim.lr={exp.config.optim.lr}); stopped, {kept}"
        )


def _rows(part: Part, epoch: int, **split_metrics: dict[str, np.ndarray]) -> list[dict[str, Any]]:
    """A part's metric rows for one epoch, from per-member metrics of the whole run."""
    rows = []
    for i, m in enumerate(part.members):
        row: dict[str, Any] = {"member": i, "fold": m.fold, "seed": m.seed, "epoch": epoch}
        for split, metrics in split_metrics.items():
            row.update({f"{split}_{k}": float(v[i]) for k, v in part.take(metrics).items()})
        rows.append(row)
    return rows


def _accuracies(part: Part, val: dict[str, np.ndarray] | None, test: dict[str, np.ndarray]) -> dict[str, Any]:
    """A part's per-member and mean ± std val/test accuracy (val None: nothing held out)."""
    val = None if val is None else part.take(val)
    test = part.take(test)
    return {
        "members": [
            {
                "fold": m.fold,
                "seed": m.seed,
                "val_accuracy": None if val is None else float(val["accuracy"][i]),
                "test_accuracy": float(test["accuracy"][i]),
                "test_loss": float(test["loss"][i]),
            }
            for i, m in enumerate(part.members)
        ],
        "val_accuracy": None if val is None else stats.mean_std(val["accuracy"]),
        "test_accuracy": stats.mean_std(test["accuracy"]),
    }


def summarize(
    exp: Experiment,
    val: dict[str, dict[str, np.ndarray]],
    test: dict[str, dict[str, np.ndarray]],
    epoch_seconds: list[float],
    wall_seconds: float,
    part: Part | None = None,
) -> dict[str, Any]:
    """A part's summary (the first: a plain run's) from `evaluate_splits`' val ({} without held-out data,
    `cv.holdout` false: val entries are then None) and test; the weight average's, if kept, under `ema`.
    Time and throughput are the whole program's, which a packed part shares (`packed_with`): `train_seconds`
    the epochs' alone, `wall_seconds` (see `_train`) also loading, compiling, evaluating and saving."""
    part = part or exp.parts[0]
    imgs = exp.steps_per_epoch * exp.batch_size * len(exp.members)
    steady = epoch_seconds[1:] or epoch_seconds  # epoch 1 includes compilation
    packed = [p.config.name for p in exp.parts if p is not part]
    ema = "ema_test" in test
    return {
        "name": part.config.name,
        **_accuracies(part, val.get("val"), test["test"]),
        **({"ema": _accuracies(part, val.get("ema_val"), test["ema_test"])} if ema else {}),
        "params": exp.n_params,
        "flops_per_image": models.flops_per_image(exp.model),
        "epochs": exp.config.train.epochs,
        "steps_per_epoch": exp.steps_per_epoch,
        "train_seconds": float(sum(epoch_seconds)),
        "wall_seconds": float(wall_seconds),
        "train_images_per_s": imgs / float(np.median(steady)),
        "devices": exp.mesh.size,
        "processes": jax.process_count(),
        "member_slots": len(exp.slots),
        "strategy": members.resolve_strategy(exp.config.members.strategy),
        "data_digest": exp.dataset.digest,
    } | ({"packed_with": packed} if packed else {})


def format_summary(s: dict[str, Any]) -> str:
    def accuracies(a: dict[str, Any]) -> str:
        v, t = a["val_accuracy"], a["test_accuracy"]
        return f"val acc {stats.pct_of(v) if v is not None else 'none held out'} | test acc {stats.pct_of(t)}"

    ema = f" | weight average: {accuracies(s['ema'])}" if "ema" in s else ""
    return (
        f"{s['name']}: {len(s['members'])} members, {s['params']:,} params, {s['epochs']} epochs, "
        f"{s['train_images_per_s']:.0f} img/s | {accuracies(s)}{ema}"
    )


def _meta(exp: Experiment, part: Part, epoch_seconds: list[float], wall_seconds: float) -> dict[str, Any]:
    """A part's checkpoint JSON item: enough to rebuild its state without data and to refuse a different run,
    and the run's times so far, which resume carries on from."""
    return {
        "config": part.config.to_dict(),
        "data_digest": exp.dataset.digest,
        "steps_per_epoch": exp.steps_per_epoch,
        "members": [dataclasses.asdict(m) for m in part.members],
        "epoch_seconds": epoch_seconds,
        "wall_seconds": wall_seconds,
    }


def _resume(exp: Experiment, mngrs: list, workdirs: list[Path]) -> tuple[steps.TrainState, int, list[float], float]:
    """(state, finished epochs, their durations, the run's wall time up to their save): from the parts' latest
    checkpoints if there are any, else fresh. A checkpoint saved before `wall_seconds` was kept gives its epochs'
    durations alone as its wall time, short by its segments' startup and evaluation.

    Checkpoints hold the real members only, so one saved on any device or process count resumes here:
    the padding slots are copied again from their members (`members.pad`), as a fresh run makes them.
    Each part of a packed run keeps its own checkpoints (in its own workdir, restorable alone); they resume
    together only from the same epoch.
    """
    latest = [m.latest_step() for m in mngrs]
    if all(s is None for s in latest):
        return init_state(exp), 0, [], 0.0
    if len(set(latest)) > 1:
        names = ", ".join(f"{p.config.name} at {s or 0}" for p, s in zip(exp.parts, latest))
        raise RunError(f"packed points must resume from the same epoch ({names}); train them apart")
    loaded = [_restore_part(exp, part, mngr, w) for part, mngr, w in zip(exp.parts, mngrs, workdirs)]
    epochs = {epoch for epoch, _ in loaded}
    if len(epochs) > 1:  # a damaged latest checkpoint sent one part back
        raise RunError(f"packed points' intact checkpoints are at different epochs {sorted(epochs)}; train them apart")
    # one static model and optimiser (a part's own steps with its `Recipe`), so the parts' states stack
    parts = [state.replace(tx=exp.tx, apply_fn=exp.model.apply) for _, (state, _) in loaded]
    state = parts[0] if len(parts) == 1 else jax.tree.map(lambda *xs: jnp.concatenate(xs), *parts)
    meta = loaded[0][1][1]
    wall = meta.get("wall_seconds", sum(meta["epoch_seconds"]))
    return members.pad(state, exp.mesh), epochs.pop(), list(meta["epoch_seconds"]), wall


def _restore_part(exp: Experiment, part: Part, mngr, workdir: Path) -> tuple[int, tuple[steps.TrainState, dict]]:
    """(epoch, (state, meta)) of a part's latest intact checkpoint, refusing one of another config or data."""
    target = checkpoints.abstract_state(part.config, exp.steps_per_epoch, len(part.members), exp.mesh)

    def load(epoch: int) -> tuple[steps.TrainState, dict[str, Any]]:
        _, meta = checkpoints.read_meta(mngr, epoch)
        checkpoints.check_compatible(meta, part.config, exp.dataset.digest, workdir)
        return checkpoints.restore(mngr, target, epoch), meta

    return checkpoints.restore_latest_intact(mngr, load)


def _keep_rows(path: Path, last_epoch: int) -> None:
    """Drop metric rows past the restored checkpoint (logged before a kill, about to be redone)."""
    kept = []
    for line in path.read_text().splitlines() if path.exists() and last_epoch else []:
        try:
            row = json.loads(line)
        except json.JSONDecodeError:  # a line cut short by the kill
            continue
        if row["epoch"] <= last_epoch:
            kept.append(line + "\n")
    write_text(path, "".join(kept))  # atomic: a kill now must not lose the rows being kept


def _part_figures(exp: Experiment, logits: np.ndarray, part: Part, i: int) -> dict[str, Any]:
    """The figures of a part's member i."""
    return _figures(exp, logits, part.start + i, part.config.name)


def _figures(exp: Experiment, logits: np.ndarray, i: int, name: str) -> dict[str, Any]:
    """Member i's (of the run's member axis) test confusion matrix and sample predictions, as matplotlib figures."""
    from fmnist_jax import plots  # matplotlib only when figures are wanted

    labels = exp.dataset.test_labels
    probs = np.asarray(jax.nn.softmax(logits[i]))
    preds, m = probs.argmax(-1), exp.members[i]
    return {
        "test/confusion_matrix": plots.confusion(
            plots.confusion_matrix(labels, preds), title=f"{name} {m.tag}: test confusion"
        ),
        "test/predictions": plots.predictions(
            exp.dataset.test_images, labels, probs, plots.pick_examples(labels, preds)
        ),
    }


def train_and_evaluate(
    config: ml_collections.ConfigDict, workdir: str | Path, progress: bool = True, writer: MetricWriter | None = None
) -> dict[str, Any]:
    """Train every member (fold x seed) of `config` together, log per-epoch metrics, evaluate on test.

    Resumes from the workdir's latest checkpoint (refusing one made by a different config);
    a finished run is not retrained: its summary is returned. `metrics.jsonl` is always
    written; `writer` (if given) and W&B (unless `wandb.mode='disabled'`) get the same rows.
    In a multi-process run (`distributed.initialize` first) every process calls this with the same
    config; the members are sharded over all their devices and process 0 alone writes files and W&B.

    Args:
      config: a full config (`configs/*.py` `get_config()`), validated before anything is written.
      workdir: where config, record, metrics, checkpoints and summary go.
      progress: show progress bars.
      writer: an extra `writers.MetricWriter` for the per-epoch rows.

    Returns:
      The summary (also `workdir/summary.json`): per-member and mean ± std val/test accuracy, params,
      FLOPs, epochs, throughput, data digest.
    """
    return train_packed([(config, workdir)], progress, writer)[0]


def train_packed(
    runs: Sequence[tuple[ml_collections.ConfigDict, str | Path]],
    progress: bool = True,
    writer: MetricWriter | None = None,
) -> list[dict[str, Any]]:
    """Train several configs as one program, each into its own workdir exactly as `train_and_evaluate` would.

    The configs may differ only in `steps.PER_MEMBER_KEYS` (augmentation, label smoothing, optimiser
    hyperparameters) besides name, seeds and folds: all their members then share one network, loop and
    compiled step (`setup(..., packed=...)`), and each member still computes what it computes alone.
    Each workdir gets its own config, metrics, checkpoints, W&B runs and summary, so every point restores,
    evaluates and exports alone; they resume together from the same epoch.

    Returns:
      The summaries, in the order of `runs`.
    """
    if not runs:
        raise ConfigError("train_packed needs at least one (config, workdir)")
    started = time.perf_counter()  # the run's wall time counts loading the data and compiling too
    (first, _), rest = runs[0], runs[1:]
    workdirs = [Path(w) for _, w in runs]
    if len(set(workdirs)) != len(workdirs):
        raise ConfigError(f"packed runs need one workdir each, got {[str(w) for w in workdirs]}")
    exp = setup(first, packed=[c for c, _ in rest])  # validates everything before a workdir is touched
    for part in exp.parts:  # before anything is written or trained; where files are may differ between machines
        what = {k: v for k, v in part.config.to_dict().items() if k not in config_lib.MUTABLE_KEYS}
        distributed.check_same(what, "config")
    distributed.check_same(exp.dataset.digest, "data")
    with contextlib.ExitStack() as stack:
        for w in workdirs:
            stack.enter_context(workdir_lock(w))
        return _train(exp, workdirs, progress, writer, started)


@contextlib.contextmanager
def workdir_lock(workdir: Path) -> Iterator[None]:
    """Create the workdir and hold it: one training per workdir.

    An OS advisory lock (flock via filelock) that the OS drops when its holder dies, so a killed run never
    blocks the next; two live ones would interleave metrics and checkpoints. In a multi-process run process 0
    alone creates the folder and holds the lock, and every process follows its outcome.
    """
    lock = filelock.FileLock(workdir / ".lock")
    failure: OSError | None = None
    busy = False
    if distributed.is_main():
        try:
            workdir.mkdir(parents=True, exist_ok=True)
            lock.acquire(timeout=0)
        except filelock.Timeout:
            busy = True
        except OSError as e:  # --workdir names a file: the CLI reports it
            failure = e
    outcome = distributed.broadcast(2 if failure else int(busy))
    if failure is not None:
        raise failure
    if outcome == 2:
        raise RunError(f"process 0 could not create {workdir}")
    if outcome == 1:
        raise WorkdirBusy(
            f"{workdir} is in use by another process (it holds {workdir / '.lock'}); "
            "wait for it to finish or use another --workdir"
        )
    try:
        yield
    finally:
        if lock.is_locked:
            lock.release()


def _finished(workdir: Path, start: int, epochs: int) -> dict[str, Any] | None:
    """The summary of a finished run (its final checkpoint restored and its summary intact), else None."""
    path = workdir / "summary.json"
    if start != epochs or not path.exists():
        return None
    try:
        return json.loads(path.read_text())
    except ValueError:  # cut short by a kill (before writes were atomic): evaluate again
        if distributed.is_main():
            print(f"{path} is damaged; evaluating the final checkpoint again", file=sys.stderr)
        return None


def _open_part(exp: Experiment, part: Part, workdir: Path, start: int) -> tracking.WandbWriter | None:
    """Write a part's config and record, trim its metrics to the restored epoch, and open its W&B runs."""
    config = part.config
    write_json(workdir / "config.json", config.to_dict(), default=list)
    record = run_record(config, exp.dataset) | {"processes": jax.process_count()}
    if len(exp.parts) > 1:
        record["packed_with"] = [p.config.name for p in exp.parts if p is not part]
    if exp.teachers:
        record["teachers"] = [t.identity() for t in exp.teachers]
    if start:
        record |= {"resumed_from_epoch": start, "earlier_segments": _earlier_segments(workdir / "record.json")}
    write_json(workdir / "record.json", record, default=str)
    _keep_rows(workdir / "metrics.jsonl", start)
    if config.wandb.mode == "disabled":
        return None
    extra = {"params": exp.n_params, "data_digest": exp.dataset.digest}
    return tracking.WandbWriter(config, part.members, workdir, extra=extra, resume=start > 0)


def _earlier_segments(path: Path) -> list[dict[str, Any]]:
    """The records of a resumed run's earlier segments, oldest first, without their configs (the run's own): a
    run can be resumed on another machine (a GPU's epochs finished on a CPU), and every segment's devices, CPU
    and versions stay on record."""
    try:
        old = json.loads(path.read_text())
    except (OSError, ValueError):
        return []
    earlier = old.pop("earlier_segments", [])
    old.pop("config", None)
    return [*earlier, old]


def _train(
    exp: Experiment, workdirs: list[Path], progress: bool, writer: MetricWriter | None, started: float
) -> list[dict[str, Any]]:
    """The loop of `train_packed`, which began at `started` (perf_counter).

    The run's wall time is saved with each checkpoint and carried on at resume, so a segment that ends without
    cleanup (`kill -9`, a machine's stop) keeps what it spent up to its last save; the time after that save is
    not counted, as the epochs it trained are trained again.
    """
    config, main = exp.config, distributed.is_main()
    mngrs = [checkpoints.manager(w, config.checkpoint.max_to_keep) for w in workdirs]
    state, start, epoch_seconds, wall_before = _resume(exp, mngrs, workdirs)

    def wall() -> float:
        return wall_before + time.perf_counter() - started

    found = [_finished(w, start, config.train.epochs) for w in workdirs]
    if distributed.broadcast(all(s is not None for s in found)):  # process 0 decides; the others read the same
        for m in mngrs:
            m.close()
        if main:
            print(f"{', '.join(map(str, workdirs))}: finished run found (checkpoint of epoch {start}); not retraining")
        return [s if s is not None else json.loads((w / "summary.json").read_text()) for s, w in zip(found, workdirs)]
    # every file of the run and W&B come from process 0 alone; one set of writers per part (its workdir)
    trackers = [_open_part(exp, p, w, start) if main else None for p, w in zip(exp.parts, workdirs)]
    outs = [
        MultiWriter([x for x in (JsonlWriter(w / "metrics.jsonl"), writer, t) if x is not None]) if main else None
        for w, t in zip(workdirs, trackers)
    ]
    every = config.checkpoint.every_epochs
    val_m: dict[str, dict[str, np.ndarray]] | None = None
    try:
        epochs = tqdm(
            range(start, config.train.epochs),
            desc=" + ".join(p.config.name for p in exp.parts),
            unit="epoch",
            disable=not progress or not main,
            initial=start,
            total=config.train.epochs,
        )
        for epoch in epochs:
            t0 = time.perf_counter()
            state, train_m = train_epoch(exp, state, epoch, progress)
            jax.block_until_ready(state)
            check_finite(exp, state, train_m, epoch + 1, mngrs[0].latest_step())
            epoch_seconds.append(time.perf_counter() - t0)
            last = epoch + 1 == config.train.epochs
            looked = exp.holdout and (last or (epoch + 1) % config.eval.every_epochs == 0)
            val_m = evaluate_splits(exp, state, "val")[0] if looked else {}
            for part, out in zip(exp.parts, outs):
                if out is not None:
                    out.write(_rows(part, epoch + 1, train=train_m, **val_m))
            if (every and (epoch + 1) % every == 0) or last:
                # every process saves its shards; each part's checkpoint holds its real members only (any devices)
                real, so_far = members.unpad(state, len(exp.members), exp.mesh), wall()
                for part, mngr in zip(exp.parts, mngrs):
                    own = real if len(exp.parts) == 1 else _slice(real, part, exp.mesh)
                    checkpoints.save(mngr, epoch + 1, own, _meta(exp, part, epoch_seconds, so_far))
            shown = {"train": train_m} | val_m
            epochs.set_postfix({f"{k}_acc": f"{m['accuracy'].mean():.4f}" for k, m in shown.items()})
        if val_m is None:  # restored the final checkpoint of a run killed before its summary
            val_m = evaluate_splits(exp, state, "val")[0] if exp.holdout else {}
        tests, test_logits = evaluate_splits(exp, state, "test")
        so_far = wall()  # one program: its parts share one wall time
        summaries = [summarize(exp, val_m, tests, epoch_seconds, so_far, part) for part in exp.parts]
        for part, w, summary, tracker in zip(exp.parts, workdirs, summaries, trackers):
            if main:
                write_json(w / "summary.json", summary)
            if tracker is not None:
                tracker.write_summary(summary)
                tracker.write_figures(functools.partial(_part_figures, exp, test_logits, part))
    finally:
        for out in outs:
            if out is not None:
                out.close()
        for m in mngrs:
            m.wait_until_finished()
            m.close()
    return summaries


def _slice(state: steps.TrainState, part: Part, mesh: Any) -> steps.TrainState:
    """A part's members of the (unpadded) stacked state, placed as its checkpoint restores them."""
    lo, hi = part.start, part.start + len(part.members)
    sharding = members.stored_sharding(hi - lo, mesh)
    return jax.jit(lambda t: jax.tree.map(lambda x: x[lo:hi], t), out_shardings=sharding)(state)
