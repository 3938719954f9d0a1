"""One config end to end: data -> folds x seeds members -> compiled steps -> epochs -> metrics and summary.

Workdir layout: `config.json` (resolved config), `record.json` (versions, data hash, git,
devices), `metrics.jsonl` (one row per member per epoch), `checkpoints/<epoch>/` (Orbax:
stacked train state + JSON meta), `wandb/` and `wandb_runs.json` (W&B), `summary.json`.
Re-running the same command in the same workdir resumes from the latest checkpoint.
In a multi-process run (`fmnist_jax.distributed`) every process runs all of this in lockstep
and process 0 alone writes the files and W&B.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import sys
import time
from pathlib import Path
from collections.abc import Iterator
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
    distributed,
    members,
    models,
    stats,
    steps,
    tracking,
    validate,
)
from fmnist_jax.members import Member
from fmnist_jax.metrics import Metrics
from fmnist_jax.record import run_record
from fmnist_jax.writers import write_json, JsonlWriter, MetricWriter, MultiWriter
from fmnist_jax.errors import Diverged, RunError, WorkdirBusy


@dataclasses.dataclass
class Experiment:
    """Everything fixed for a run: data on the device, members, their splits and compiled steps.

    `members` are the run's; `slots` the computed member axis: the members, then copies of the first
    ones that pad it to a multiple of the mesh size (`members.slots`), trained and dropped.
    """

    config: ml_collections.ConfigDict
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
    init_fn: Any
    train_step: Any
    eval_step: Any

    @property
    def batch_size(self) -> int:
        return self.config.train.batch_size


def setup(config: ml_collections.ConfigDict, dataset: data.Dataset | None = None) -> Experiment:
    """Validate the config (values, then budget), load and split data, compile the member steps.

    A relative `data.dir` is made absolute (in a copy), so the saved config works from any folder.
    """
    validate.check(config)
    if config.data.dir and not Path(config.data.dir).is_absolute():
        config = config.copy_and_resolve_references()
        config.data.dir = str(Path(config.data.dir).resolve())
    model = models.build(config)
    n_params = models.check_budget(model, config.max_params)
    ms = members.members_of(config)
    dataset = dataset or data.for_config(config)
    splits = [data.kfold(dataset.train_labels, config.cv.k, m.fold, config.cv.split_seed) for m in ms]
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
    tx = steps.optimizer(config, n_steps)
    strategy, options = config.members.strategy, backend.compiler_options(config.compile.cpu_conv)
    arrays = members.place(
        {k: jnp.asarray(getattr(dataset, k)) for k in ("train_images", "train_labels", "test_images", "test_labels")},
        mesh,
        stacked=False,
    )
    return Experiment(
        config=config,
        dataset=dataset,
        members=ms,
        slots=members.padded(ms, members.slots(len(ms), mesh)),
        model=model,
        n_params=n_params,
        mesh=mesh,
        train_idx=train_idx,
        val_idx=val_idx,
        steps_per_epoch=n_steps,
        arrays=arrays,
        init_fn=members.over_members(
            lambda ik, ak: steps.create_state(model, tx, ik, ak), (0, 0), mesh, strategy, compiler_options=options
        ),
        train_step=members.over_members(
            steps.make_train_step(config),
            (0, None, None, 0),
            mesh,
            strategy,
            donate_argnums=(0,),
            compiler_options=options,
        ),
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
        state, m = exp.train_step(state, a["train_images"], a["train_labels"], order[step])
        total = m if total is None else total.merge(m)
        bar.update(exp.batch_size * len(exp.members))
    bar.close()
    assert total is not None  # setup refuses configs with no steps
    return state, {k: v[: len(exp.members)] for k, v in members.to_host(total).compute().items()}


def evaluate(exp: Experiment, state: steps.TrainState, split: str) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Per-member loss/accuracy on 'val' (each member's own held-out fold) or 'test'; also logits [M, N, 10].

    N is the split's size (for 'val', the largest fold's: shorter folds are padded at the end).
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
        exp.eval_step, steps.variables(state), images, labels, idx_list, exp.config.eval.batch_size, exp.mesh
    )


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


def _rows(exp: Experiment, epoch: int, **split_metrics: dict[str, np.ndarray]) -> list[dict[str, Any]]:
    rows = []
    for i, m in enumerate(exp.members):
        row: dict[str, Any] = {"member": i, "fold": m.fold, "seed": m.seed, "epoch": epoch}
        for split, metrics in split_metrics.items():
            row.update({f"{split}_{k}": float(v[i]) for k, v in metrics.items()})
        rows.append(row)
    return rows


def summarize(
    exp: Experiment, val: dict[str, np.ndarray], test: dict[str, np.ndarray], epoch_seconds: list[float]
) -> dict[str, Any]:
    imgs = exp.steps_per_epoch * exp.batch_size * len(exp.members)
    steady = epoch_seconds[1:] or epoch_seconds  # epoch 1 includes compilation
    return {
        "name": exp.config.name,
        "members": [
            {
                "fold": m.fold,
                "seed": m.seed,
                "val_accuracy": float(val["accuracy"][i]),
                "test_accuracy": float(test["accuracy"][i]),
                "test_loss": float(test["loss"][i]),
            }
            for i, m in enumerate(exp.members)
        ],
        "val_accuracy": stats.mean_std(val["accuracy"]),
        "test_accuracy": stats.mean_std(test["accuracy"]),
        "params": exp.n_params,
        "flops_per_image": models.flops_per_image(exp.model),
        "epochs": exp.config.train.epochs,
        "steps_per_epoch": exp.steps_per_epoch,
        "train_seconds": float(sum(epoch_seconds)),
        "train_images_per_s": imgs / float(np.median(steady)),
        "devices": exp.mesh.size,
        "processes": jax.process_count(),
        "member_slots": len(exp.slots),
        "strategy": members.resolve_strategy(exp.config.members.strategy),
        "data_digest": exp.dataset.digest,
    }


def format_summary(s: dict[str, Any]) -> str:
    v, t = s["val_accuracy"], s["test_accuracy"]
    return (
        f"{s['name']}: {len(s['members'])} members, {s['params']:,} params, {s['epochs']} epochs, "
        f"{s['train_images_per_s']:.0f} img/s | val acc {stats.pct_of(v)} | test acc {stats.pct_of(t)}"
    )


def _meta(exp: Experiment, epoch_seconds: list[float]) -> dict[str, Any]:
    """The checkpoint's JSON item: enough to rebuild the state without data and to refuse a different run."""
    return {
        "config": exp.config.to_dict(),
        "data_digest": exp.dataset.digest,
        "steps_per_epoch": exp.steps_per_epoch,
        "members": [dataclasses.asdict(m) for m in exp.members],
        "epoch_seconds": epoch_seconds,
    }


def _resume(exp: Experiment, mngr, workdir: Path) -> tuple[steps.TrainState, int, list[float]]:
    """(state, finished epochs, their durations): from the latest checkpoint if there is one, else fresh.

    Checkpoints hold the real members only, so one saved on any device or process count resumes here:
    the padding slots are copied again from their members (`members.pad`), as a fresh run makes them.
    """
    if mngr.latest_step() is None:
        return init_state(exp), 0, []
    target = checkpoints.abstract_state(exp.config, exp.steps_per_epoch, len(exp.members), exp.mesh)

    def load(epoch: int) -> tuple[steps.TrainState, dict[str, Any]]:
        _, meta = checkpoints.read_meta(mngr, epoch)
        checkpoints.check_compatible(meta, exp.config, exp.dataset.digest, workdir)
        return checkpoints.restore(mngr, target, epoch), meta

    epoch, (state, meta) = checkpoints.restore_latest_intact(mngr, load)
    return members.pad(state, exp.mesh), epoch, list(meta["epoch_seconds"])


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
    path.write_text("".join(kept))


def _figures(exp: Experiment, logits: np.ndarray, i: int) -> dict[str, Any]:
    """Member i's test confusion matrix and sample predictions, as matplotlib figures."""
    from fmnist_jax import plots  # matplotlib only when figures are wanted

    labels = exp.dataset.test_labels
    probs = np.asarray(jax.nn.softmax(logits[i]))
    preds, m = probs.argmax(-1), exp.members[i]
    return {
        "test/confusion_matrix": plots.confusion(
            plots.confusion_matrix(labels, preds), title=f"{exp.config.name} {m.tag}: test confusion"
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
    workdir = Path(workdir)
    exp = setup(config)  # validates everything before the workdir is touched
    # before anything is written or trained; where files are (`MUTABLE_KEYS`) may differ between machines
    what = {k: v for k, v in exp.config.to_dict().items() if k not in config_lib.MUTABLE_KEYS}
    distributed.check_same(what, "config")
    distributed.check_same(exp.dataset.digest, "data")
    with workdir_lock(workdir):
        return _train(exp, workdir, progress, writer)


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


def _train(exp: Experiment, workdir: Path, progress: bool, writer: MetricWriter | None) -> dict[str, Any]:
    config, main = exp.config, distributed.is_main()
    mngr = checkpoints.manager(workdir, config.checkpoint.max_to_keep)
    state, start, epoch_seconds = _resume(exp, mngr, workdir)
    summary_path = workdir / "summary.json"
    summary = _finished(workdir, start, config.train.epochs)
    if distributed.broadcast(summary is not None):  # process 0 decides; the others read the same file
        mngr.close()
        if main:
            print(f"{workdir}: finished run found (checkpoint of epoch {start}); not retraining")
        return summary if summary is not None else json.loads(summary_path.read_text())
    tracker = None
    if main:  # every file of the run and W&B come from process 0 alone
        write_json(workdir / "config.json", config.to_dict(), default=list)
        record = run_record(config, exp.dataset) | {"processes": jax.process_count()}
        write_json(workdir / "record.json", record | ({"resumed_from_epoch": start} if start else {}), default=str)
        _keep_rows(workdir / "metrics.jsonl", start)
        if config.wandb.mode != "disabled":
            tracker = tracking.WandbWriter(
                config,
                exp.members,
                workdir,
                extra={"params": exp.n_params, "data_digest": exp.dataset.digest},
                resume=start > 0,
            )
    outputs = (JsonlWriter(workdir / "metrics.jsonl"), writer, tracker) if main else ()
    writers = MultiWriter([w for w in outputs if w is not None])
    every = config.checkpoint.every_epochs
    val_m = None
    try:
        epochs = tqdm(
            range(start, config.train.epochs),
            desc=config.name,
            unit="epoch",
            disable=not progress or not main,
            initial=start,
            total=config.train.epochs,
        )
        for epoch in epochs:
            t0 = time.perf_counter()
            state, train_m = train_epoch(exp, state, epoch, progress)
            jax.block_until_ready(state)
            check_finite(exp, state, train_m, epoch + 1, mngr.latest_step())
            epoch_seconds.append(time.perf_counter() - t0)
            val_m, _ = evaluate(exp, state, "val")
            writers.write(_rows(exp, epoch + 1, train=train_m, val=val_m))
            if (every and (epoch + 1) % every == 0) or epoch + 1 == config.train.epochs:
                # every process saves its shards; the checkpoint holds the real members only (any device count)
                checkpoints.save(
                    mngr, epoch + 1, members.unpad(state, len(exp.members), exp.mesh), _meta(exp, epoch_seconds)
                )
            epochs.set_postfix(train_acc=f"{train_m['accuracy'].mean():.4f}", val_acc=f"{val_m['accuracy'].mean():.4f}")
        if val_m is None:  # restored the final checkpoint of a run killed before its summary
            val_m, _ = evaluate(exp, state, "val")
        test_m, test_logits = evaluate(exp, state, "test")
        summary = summarize(exp, val_m, test_m, epoch_seconds)
        if main:
            write_json(summary_path, summary)
        if tracker is not None:
            tracker.write_summary(summary)
            tracker.write_figures(lambda i: _figures(exp, test_logits, i))
    finally:
        writers.close()
        mngr.wait_until_finished()
        mngr.close()
    return summary
