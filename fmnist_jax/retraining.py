"""Gated retraining: fine-tune a trained member on new labelled images; export it only if the test set allows.

New images (an IDX or .npy batch with a labels file, or class folders of PNG/JPEG) are split, stratified
and seeded, into a part to train on and a held-out part. The member is restored from its checkpoint and
fine-tuned with the run's own train step (its augmentation, label smoothing and optimiser; a cosine
schedule from `lr`, by default a tenth of the run's) on the new part mixed with `replay` images of its
original training fold (`replay=-1`: the whole fold, i.e. retraining with the new data appended), so it
learns the new inputs without forgetting the old. Before and after, it runs through the exported
inference function on the original test set and on the held-out new part. The gate: the new model is
exported only if its test accuracy is at least the old one's minus `tolerance`; the decision and every
number go to `OUT/gate.json` and into the new manifest (`retraining`). A new version appears at once
(written beside `OUT`, then renamed), so a service reloading it never reads half a model.

The new version's drift reference is the held-out new data (all the new data when under
`MIN_REFERENCE` images are held out): the inputs it was retrained for.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import io
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from fmnist_jax import backend, data, drift, exporter, images, steps, stops
from fmnist_jax.errors import Diverged, Error
from fmnist_jax.metrics import Metrics
from fmnist_jax.writers import write_json

GATE_FILE = "gate.json"
MIN_IMAGES = 10
MIN_REFERENCE = 100
_NPY = b"\x93NUMPY"


class RetrainError(Error, ValueError):
    """New data or options that retraining cannot use; the message says why."""


@dataclasses.dataclass(frozen=True)
class NewData:
    """Labelled images in the model's convention (uint8 [N, 28, 28], light item on black) and where they came from."""

    images: np.ndarray
    labels: np.ndarray
    source: str

    @property
    def digest(self) -> str:
        h = hashlib.sha256(np.ascontiguousarray(self.images).tobytes())
        h.update(np.asarray(self.labels, np.int64).tobytes())
        return h.hexdigest()[:16]


def _key(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


def class_index(folder: str, classes: tuple[str, ...] = data.CLASS_NAMES) -> int:
    """A class folder's name as a class index: `3`, or the class name in any case without punctuation
    (`T-shirt_top` and `tshirttop` both name `T-shirt/top`)."""
    if folder.isdigit() and int(folder) < len(classes):
        return int(folder)
    keys = [_key(c) for c in classes]
    if _key(folder) in keys:
        return keys.index(_key(folder))
    raise RetrainError(f"folder {folder!r} names no class; use 0..{len(classes) - 1} or one of {list(classes)}")


def read_labels(path: str | Path) -> np.ndarray:
    """Class indices from an IDX (maybe gzipped) or .npy file: one integer 0..9 per image."""
    path = Path(path)
    try:
        raw = path.read_bytes()
        raw = gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw
        labels = (
            np.load(io.BytesIO(raw), allow_pickle=False) if raw.startswith(_NPY) else data.parse_idx(raw, str(path))
        )
    except (OSError, ValueError, EOFError, data.DataError) as e:
        raise RetrainError(f"{path}: not a readable IDX or .npy labels file ({e})") from e
    labels = np.asarray(labels)
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise RetrainError(f"{path}: labels must be a 1-D integer array, got {labels.dtype} {list(labels.shape)}")
    if labels.size and (labels.min() < 0 or labels.max() >= len(data.CLASS_NAMES)):
        raise RetrainError(f"{path}: labels must lie in 0..{len(data.CLASS_NAMES) - 1}")
    return labels.astype(np.int32)


def load_new_data(path: str | Path, labels: str | Path | None = None, invert: images.Invert = "auto") -> NewData:
    """New labelled images: class folders (`PATH/<class>/<file>`, labels from the folder names) or an IDX /
    .npy images file with a `labels` file. Images go through `images`' rules (inversion policy, 28x28)."""
    path = Path(path)
    if path.is_dir():
        if labels is not None:
            raise RetrainError(f"{path} is a folder of class folders, whose names are the labels; drop --labels")
        xs, ys = [], []
        for folder in sorted(d for d in path.iterdir() if d.is_dir() and not d.name.startswith(".")):
            c = class_index(folder.name)
            for f in sorted(f for f in folder.iterdir() if f.is_file() and not f.name.startswith(".")):
                try:
                    x = images.load(f, invert)
                except images.ImageError as e:
                    raise RetrainError(str(e)) from e
                xs.append(x)
                ys.append(np.full(len(x), c, np.int32))
        if not xs:
            raise RetrainError(f"{path}: no image files in class folders (expected {path}/<class>/<image>)")
        new = NewData(np.concatenate(xs), np.concatenate(ys), f"class folders in {path.name}")
    else:
        if labels is None:
            raise RetrainError(f"{path}: an IDX or .npy images file needs --labels (IDX or .npy class indices)")
        try:
            x = images.load(path, invert)
        except images.ImageError as e:
            raise RetrainError(str(e)) from e
        y = read_labels(labels)
        if len(y) != len(x):
            raise RetrainError(f"{path} holds {len(x)} images but {labels} holds {len(y)} labels")
        new = NewData(x, y, f"{path.name} + {Path(labels).name}")
    if len(new.images) < MIN_IMAGES:
        raise RetrainError(f"{path}: {len(new.images)} images; retraining needs at least {MIN_IMAGES}")
    return new


def split(labels: np.ndarray, holdout: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(train, held-out) indices, stratified by class and seeded; each class keeps round(holdout * n) out."""
    rng = np.random.default_rng(seed)
    held = [
        rng.permutation(np.flatnonzero(labels == c))[: int(round(holdout * (labels == c).sum()))]
        for c in np.unique(labels)
    ]
    out = np.sort(np.concatenate(held)).astype(np.int64)
    return np.setdiff1d(np.arange(len(labels)), out), out


CHUNK = 500  # images per evaluation call; the last chunk is padded, so each model compiles one shape


def accuracy(
    trained: exporter.TrainedMember, sets: dict[str, tuple[np.ndarray, np.ndarray]]
) -> dict[str, float | None]:
    """Accuracy on each named (images, labels) set through the exported inference function (preprocessing and
    flip averaging as served); None for an empty set."""
    fn = jax.jit(exporter.inference_fn(trained.config, trained.model, trained.variables))
    out: dict[str, float | None] = {}
    for name, (x, y) in sets.items():
        if not len(x):
            out[name] = None
            continue
        preds = []
        for s in range(0, len(x), CHUNK):
            chunk = np.zeros((CHUNK, *x.shape[1:]), np.uint8)
            chunk[: len(x[s : s + CHUNK])] = x[s : s + CHUNK]
            preds.append(np.asarray(fn(chunk)).argmax(-1)[: len(x[s : s + CHUNK])])
        out[name] = float((np.concatenate(preds) == y).mean())
    return out


def finetune(
    trained: exporter.TrainedMember,
    images_u8: np.ndarray,
    labels: np.ndarray,
    epochs: int,
    lr: float,
    batch_size: int,
    seed: int = 0,
) -> tuple[dict[str, Any], list[dict[str, float]]]:
    """The member's variables after `epochs` of the run's train step on these images, and loss/accuracy per epoch."""
    config = trained.config.copy_and_resolve_references()
    config.optim.lr, config.optim.warmup_epochs = lr, 0.0
    config.train.epochs, config.train.batch_size = epochs, batch_size
    n_steps = len(images_u8) // batch_size
    if n_steps < 1:
        raise RetrainError(f"{len(images_u8)} training images make no batch of {batch_size}")
    tx = steps.optimizer(config, n_steps)
    v = trained.variables
    state = steps.TrainState.create(
        apply_fn=trained.model.apply,
        params=v["params"],
        tx=tx,
        batch_stats=v.get("batch_stats", {}),
        key=jax.random.key(seed),
    )
    options = backend.compiler_options(config.compile.cpu_conv)
    train_step = jax.jit(
        steps.make_train_step(config, steps_per_epoch=n_steps), donate_argnums=(0,), compiler_options=options
    )
    x, y = jnp.asarray(images_u8), jnp.asarray(labels, jnp.int32)
    rng = np.random.default_rng(seed)
    history = []
    for epoch in range(epochs):
        order = rng.permutation(len(images_u8))[: n_steps * batch_size].reshape(n_steps, batch_size)
        total: Metrics | None = None
        for idx in order:
            stops.check()
            state, m = train_step(state, x, y, jnp.asarray(idx, jnp.int32))
            total = m if total is None else total.merge(m)
        assert total is not None
        row = {k: float(val) for k, val in total.compute().items()}
        if not np.isfinite(row["loss"]):
            raise Diverged(f"fine-tuning diverged in epoch {epoch + 1} (lr={lr}); nothing exported")
        history.append({"epoch": epoch + 1, "train_loss": row["loss"], "train_accuracy": row["accuracy"]})
    return steps.variables(state), history


def _check_out(out: Path) -> None:
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise RetrainError(f"{out} exists and is not an empty folder; give each new model version a new folder")


def retrain(
    workdir: str | Path,
    new: NewData,
    out: str | Path,
    member: tuple[int, int] | None = None,
    epochs: int = 2,
    lr: float | None = None,
    batch_size: int | None = None,
    replay: int | None = None,
    holdout: float = 0.2,
    tolerance: float = 0.005,
    seed: int = 0,
    platforms: tuple[str, ...] = exporter.PLATFORMS,
) -> dict[str, Any]:
    """Fine-tune, evaluate, gate and (if passed) export; returns the gate record (also in `OUT/gate.json`).

    Args:
      workdir: the trained run (`fmnist-jax train`), restored from its final checkpoint.
      new: the new labelled images (`load_new_data`).
      out: a new (or empty) folder for the new version.
      member: (fold, seed) to start from; None: the best by validation accuracy, as `export` picks.
      epochs, lr, batch_size: fine-tuning; lr None: a tenth of the run's; batch_size None: the run's.
      replay: images of the member's original training fold mixed in; None: as many as new training
        images; -1: the whole fold (retraining with the new data appended); 0: new data only.
      holdout: fraction of the new data held out (per class) for evaluation.
      tolerance: how far (as a fraction, 0.005 = half a point) test accuracy may fall and still pass.
    """
    out = Path(out)
    if epochs < 1 or not 0 <= holdout < 1 or tolerance < 0 or (replay is not None and replay < -1):
        raise RetrainError(
            f"need epochs >= 1, 0 <= holdout < 1, tolerance >= 0, replay >= -1 "
            f"(got {epochs}, {holdout}, {tolerance}, {replay})"
        )
    _check_out(out)
    trained = exporter.load_member(workdir, member)
    c = trained.config
    lr = float(lr if lr is not None else c.optim.lr / 10)
    batch_size = int(batch_size or c.train.batch_size)
    dataset = data.for_config(c, trained.info["data_digest"])
    train_new, held = split(new.labels, holdout, seed)
    fold_train, _ = data.split(dataset.train_labels, c.cv, int(trained.info["fold"]))
    n_replay = len(train_new) if replay is None else len(fold_train) if replay == -1 else min(replay, len(fold_train))
    old = np.sort(np.random.default_rng(seed).permutation(fold_train)[:n_replay])
    x = np.concatenate([new.images[train_new], dataset.train_images[old]])
    y = np.concatenate([new.labels[train_new], dataset.train_labels[old]]).astype(np.int32)
    test, test_labels = dataset.test_images, dataset.test_labels
    held_x, held_y = new.images[held], new.labels[held]

    sets = {"test": (test, test_labels), "new_holdout": (held_x, held_y)}
    before = accuracy(trained, sets)
    variables, history = finetune(trained, x, y, epochs, lr, min(batch_size, len(x)), seed)
    info = {
        **trained.info,
        "val_accuracy": None,
        "retrained_on": new.digest,
    }
    tuned = dataclasses.replace(trained, variables=variables, info=info)
    after = accuracy(tuned, sets)
    assert before["test"] is not None and after["test"] is not None  # the test set is never empty
    accepted = after["test"] >= before["test"] - tolerance
    gate: dict[str, Any] = {
        "accepted": bool(accepted),
        "rule": f"test accuracy after >= before - {tolerance}",
        "tolerance": tolerance,
        "before": before,
        "after": after,
        "test_images": int(len(test)),
        "new_data": {
            "source": new.source,
            "digest": new.digest,
            "images": int(len(new.images)),
            "train": int(len(train_new)),
            "held_out": int(len(held)),
        },
        "finetune": {
            "from_run": Path(workdir).resolve().name,
            "member": {"fold": trained.info["fold"], "seed": trained.info["seed"]},
            "replay_images": int(len(old)),
            "epochs": epochs,
            "lr": lr,
            "batch_size": min(batch_size, len(x)),
            "seed": seed,
            "history": history,
        },
        "exported": False,
    }
    if not accepted:
        out.mkdir(parents=True, exist_ok=True)
        write_json(out / GATE_FILE, gate)
        return gate
    info["test_accuracy"] = after["test"]
    tuned = dataclasses.replace(tuned, info=info)
    ref_x = held_x if len(held_x) >= MIN_REFERENCE else new.images
    source = "held-out new data" if len(held_x) >= MIN_REFERENCE else "all new data"
    try:
        reference = exporter.reference_statistics(tuned, ref_x, f"{source} ({new.source})")
    except drift.DriftError:
        reference = None
    gate["exported"] = True
    _export(tuned, out, platforms, reference, gate, test, test_labels)
    return gate


def _export(
    tuned: exporter.TrainedMember,
    out: Path,
    platforms: tuple[str, ...],
    reference: dict[str, Any] | None,
    gate: dict[str, Any],
    test: np.ndarray,
    test_labels: np.ndarray,
) -> None:
    """Export into a temporary folder beside `out`, check it on the test set, then rename it to `out`."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.tmp-"))
    tmp.chmod(0o755)  # mkdtemp's 0700 would hide the version from a service running as another user
    try:
        manifest = exporter.export_model(tuned, tmp, platforms, reference, {"retraining": gate})
        manifest["check"] = exporter.check_against_flax(tuned, tmp, test, test_labels)
        exporter.write_manifest(tmp, manifest)
        write_json(tmp / GATE_FILE, gate)
        if out.exists():
            out.rmdir()  # empty (checked before any work)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
