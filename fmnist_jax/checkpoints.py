"""Orbax checkpoints of the member-stacked train state, and the guard against resuming the wrong run.

`workdir/checkpoints/<epoch>/` holds two items: `state` (the whole stacked TrainState:
params, batch stats, optimiser state, step, augmentation keys; `StandardSave`) and
`meta` (JSON: resolved config, data digest, members, steps per epoch, epoch times).
The checkpoint step is the number of finished epochs. The state is always restored into
an abstract target built with `jax.eval_shape` from the config alone, so restoring needs
neither the dataset nor a training run, and the target carries the sharding to restore onto.

The state holds the run's real members only, never the slots that pad the member axis to the
mesh (`members.pad`), so a checkpoint restores on any device or process count. In a multi-process
run every process saves and restores (Orbax writes each process's shards and the meta once, from
process 0) and process 0 alone records the digests; the folder must be one every process sees.
"""

from __future__ import annotations

import hashlib
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import ml_collections
import orbax.checkpoint as ocp
from jax.sharding import Mesh

from fmnist_jax import config_lib, members, models, steps, stops
from fmnist_jax.errors import CheckpointDamaged, CheckpointMismatch, NoCheckpoint
from fmnist_jax.writers import write_json

DIGESTS = "digests.json"  # in the checkpoints folder: {epoch: SHA-256 of that step's files}


def directory(workdir: str | Path) -> Path:
    return Path(workdir).resolve() / "checkpoints"


def manager(workdir: str | Path, max_to_keep: int | None = None, create: bool = True) -> ocp.CheckpointManager:
    """The run's manager; `create=False` for readers, so a wrong workdir is not silently created."""
    path = directory(workdir)
    if not create and not path.is_dir():
        raise NoCheckpoint(f"no checkpoints in {Path(workdir)} (expected {path})")
    options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep or None, create=create)
    return ocp.CheckpointManager(path, options=options, item_names=("state", "meta"))


def save(mngr: ocp.CheckpointManager, epoch: int, state: steps.TrainState, meta: dict[str, Any]) -> None:
    """Save after `epoch` finished epochs, wait for it, and record the SHA-256 of its files in `digests.json`.

    Waiting costs little at this size and is what lets the digest describe the finished files; a restore
    checks it, so flipped or truncated bytes are found instead of silently evaluated. Every process of a
    multi-process run calls this; the digests are written by process 0 once Orbax has committed the step.
    """
    with stops.deferred():
        mngr.save(epoch, args=ocp.args.Composite(state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)))
        mngr.wait_until_finished()
        if jax.process_index() != 0:
            return
        kept = {str(s) for s in mngr.all_steps()}
        digests = {s: d for s, d in _digests(mngr).items() if s in kept} | {str(epoch): _digest(mngr, epoch)}
        write_json(Path(mngr.directory) / DIGESTS, digests)


def digest(workdir: str | Path, epoch: int) -> str:
    """SHA-256 of a saved epoch's files, as `digests.json` records it: names a checkpoint by its content (a
    distilled student's record names its teachers so)."""
    return _hash_files(directory(workdir) / str(epoch))


def _digest(mngr: ocp.CheckpointManager, epoch: int) -> str:
    return _hash_files(Path(mngr.directory) / str(epoch))


def _hash_files(root: Path) -> str:
    h = hashlib.sha256()
    for f in sorted(p for p in root.rglob("*") if p.is_file()):
        h.update(f"{f.relative_to(root)}\0{f.stat().st_size}\0".encode())
        h.update(f.read_bytes())
    return h.hexdigest()


def _digests(mngr: ocp.CheckpointManager) -> dict[str, str]:
    try:
        return json.loads((Path(mngr.directory) / DIGESTS).read_text())
    except FileNotFoundError:
        return {}
    except ValueError as e:
        raise CheckpointDamaged(f"{Path(mngr.directory) / DIGESTS} is not valid JSON ({e})") from None


def verify(mngr: ocp.CheckpointManager, epoch: int) -> None:
    """Raise CheckpointDamaged if epoch's files differ from their digest at save (checkpoints saved before
    digests existed have none and pass)."""
    want = _digests(mngr).get(str(epoch))
    if want is not None and _digest(mngr, epoch) != want:
        raise CheckpointDamaged(
            f"checkpoint of epoch {epoch} in {mngr.directory} is damaged: its files no longer match the SHA-256 "
            "recorded when it was saved"
        )


def restore_latest_intact(mngr: ocp.CheckpointManager, restore_fn: Callable[[int], Any]) -> tuple[int, Any]:
    """(epoch, restore_fn(epoch)) for the newest checkpoint that verifies and restores (`restore_fn` reads it
    through `read_meta`/`restore`, which check its digest).

    Damaged newer ones are reported and, once an older one has restored, deleted: training redoes those
    epochs. With none intact nothing is deleted. CheckpointMismatch (another run's checkpoint) passes through.
    """
    damaged = []
    for epoch in sorted(mngr.all_steps(), reverse=True):
        try:
            restored = restore_fn(epoch)  # read_meta/restore verify the digest (`_step`)
        except (CheckpointDamaged, ValueError, OSError, KeyError) as e:  # Orbax's errors on cut or flipped files
            print(f"{mngr.directory}: skipping the checkpoint of epoch {epoch}: {e}", file=sys.stderr)
            damaged.append(epoch)
            continue
        for d in damaged:
            mngr.delete(d)
        return epoch, restored
    raise CheckpointDamaged(f"no intact checkpoint in {mngr.directory} (damaged: epochs {sorted(damaged)})")


def read_meta(mngr: ocp.CheckpointManager, epoch: int | None = None) -> tuple[int, dict[str, Any]]:
    """(epoch, meta) of the latest checkpoint, or of `epoch`."""
    epoch = _step(mngr, epoch)
    return epoch, mngr.restore(epoch, args=ocp.args.Composite(meta=ocp.args.JsonRestore())).meta


def abstract_state(
    config: ml_collections.ConfigDict, steps_per_epoch: int, n_members: int, mesh: Mesh
) -> steps.TrainState:
    """Shapes, dtypes and member-axis sharding of the stacked TrainState, computed without running anything.

    `apply_fn` and `tx` are static fields, so the restored state is ready to evaluate, or to train once
    `members.pad` has added the mesh's padding slots. The members are split over the mesh when they divide
    it, else replicated (`members.stored_sharding`).
    """
    model, tx = models.build(config), steps.optimizer(config, steps_per_epoch)
    keys = jax.random.split(jax.random.key(0), n_members)
    ema = config.train.ema_decay > 0
    shapes = jax.eval_shape(jax.vmap(lambda k: steps.create_state(model, tx, k, k, ema)), keys)
    sharding = members.stored_sharding(n_members, mesh)
    return jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sharding), shapes)


def restore(mngr: ocp.CheckpointManager, target: steps.TrainState, epoch: int | None = None) -> steps.TrainState:
    """The stacked state of the latest checkpoint (or of `epoch`) restored into `target`'s structure."""
    return mngr.restore(_step(mngr, epoch), args=ocp.args.Composite(state=ocp.args.StandardRestore(target))).state


def restore_variables(
    mngr: ocp.CheckpointManager, model: models.CNN, n_members: int, mesh: Mesh, epoch: int, ema: bool = False
) -> dict[str, Any]:
    """Only the stacked `{'params', 'batch_stats'}` of a checkpoint (with `ema`, the weight average's): what
    inference needs.

    A partial restore into shapes from `jax.eval_shape` of the model's init, so neither an optimiser
    nor a train step is built and the optimiser state is never read.
    """
    keys = jax.random.split(jax.random.key(0), n_members)
    shapes = jax.eval_shape(jax.vmap(lambda k: models.init_variables(model, k)), keys)
    sharding = members.stored_sharding(n_members, mesh)
    target = jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sharding), dict(shapes))
    target = {"ema": target} if ema else target
    args = ocp.args.PyTreeRestore(
        item=target, restore_args=ocp.checkpoint_utils.construct_restore_args(target), partial_restore=True
    )
    restored = mngr.restore(_step(mngr, epoch), args=ocp.args.Composite(state=args)).state
    return restored["ema"] if ema else restored


def _step(mngr: ocp.CheckpointManager, epoch: int | None) -> int:
    """The latest step, or `epoch`, verified against its digest."""
    saved = mngr.all_steps()
    if not saved:
        raise NoCheckpoint(f"no checkpoint in {mngr.directory}")
    if epoch is None:
        epoch = max(saved)
    elif epoch not in saved:
        raise NoCheckpoint(f"no checkpoint for epoch {epoch} in {mngr.directory}; available: {sorted(saved)}")
    verify(mngr, epoch)
    return epoch


def check_compatible(
    meta: dict[str, Any], config: ml_collections.ConfigDict, data_digest: str, workdir: str | Path
) -> None:
    """Refuse to resume a checkpoint made by another config or other data (raises CheckpointMismatch)."""
    diffs = config_lib.differences(meta["config"], config.to_dict())
    if meta["data_digest"] != data_digest:
        diffs.append(f"data digest: {meta['data_digest']} -> {data_digest}")
    if diffs:
        raise CheckpointMismatch(
            f"{workdir} holds a checkpoint of a different run ({'; '.join(diffs)}); "
            "use another --workdir, or delete that one to start over"
        )
