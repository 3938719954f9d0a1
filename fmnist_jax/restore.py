"""A trained run restored for inference: the one path `evaluate`, `export`, `report` and `predict` take.

It reads the checkpoint's meta once, rebuilds the model from the config saved there (so no flag
can disagree with the weights), restores only the stacked `params`/`batch_stats` (no optimiser,
no train step, no training images on the device) and compiles only the eval step, the same one
training validates with, so a restored run reports exactly what training reported. Checkpoints
hold the real members only, so a run trained on any number of devices or processes restores on
the devices this process sees; evaluation pads the member axis to them as training does.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import jax
import ml_collections
import numpy as np
from jax.sharding import Mesh

from fmnist_jax import backend, checkpoints, config_lib, members, models, steps
from fmnist_jax.errors import RunError
from fmnist_jax.members import Member


@dataclasses.dataclass(frozen=True)
class Restored:
    """A run's members at one checkpoint, ready to evaluate or predict.

    Attributes:
      workdir: the run directory.
      config: the config that trained it (a fresh copy: change it freely, e.g. `eval.tta_flip`).
      members: (fold, seed) of each model, in the order of the stacked axis.
      model: the Flax module (`model.apply(member_variables, x)` takes normalised float images).
      variables: `{'params', 'batch_stats'}` with a leading member axis (the run's members, no padding).
      mesh: the devices the member axis is spread over (padded to them when evaluating).
      epoch: finished epochs at this checkpoint.
      data_digest: digest of the data it was trained on.
      ema: whether `variables` are the weight average (`train.ema_decay`) rather than the weights.
    """

    workdir: Path
    config: ml_collections.ConfigDict
    members: list[Member]
    model: models.CNN
    variables: dict[str, Any]
    mesh: Mesh
    epoch: int
    data_digest: str
    ema: bool = False

    def select(self, fold: int, seed: int) -> Restored:
        """Only member (fold, seed); RunError naming the run's members if it has no such member."""
        try:
            i = members.index(self.members, fold, seed)
        except ValueError as e:
            raise RunError(f"{self.workdir}: {e}") from None
        config = self.config.copy_and_resolve_references()
        config.cv.folds, config.seeds = (fold,), (seed,)
        return dataclasses.replace(
            self,
            config=config,
            members=[self.members[i]],
            variables=jax.tree.map(lambda x: x[i : i + 1], self.variables),
            mesh=members.make_mesh(1),
        )

    def member_variables(self, i: int) -> dict[str, Any]:
        """Member i's variables, as `model.apply` takes them."""
        return members.unstack(self.variables, i)

    def evaluate(
        self,
        images_u8: np.ndarray,
        labels: np.ndarray | None = None,
        tta_flip: bool | None = None,
        tta_shift: int | None = None,
    ) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """Every member on the same images, through the training eval step.

        Args:
          images_u8: uint8 [N, 28, 28], Fashion-MNIST convention (light item on black).
          labels: int [N] true classes, or None when only logits are wanted (metrics are then meaningless).
          tta_flip: test-time flip averaging; None: as the run was configured.
          tta_shift: test-time moves by this many pixels (`steps.infer`; 0 none); None: as configured.

        Returns:
          (per-member {'loss', 'accuracy'} arrays [M], logits [M, N, 10]).
        """
        config = self.config.copy_and_resolve_references()
        if tta_flip is not None:
            config.eval.tta_flip = tta_flip
        if tta_shift is not None:
            config.eval.tta_shift = tta_shift
        eval_step = members.over_members(
            steps.make_eval_step(config, self.model.apply),
            (0, None, None, 0, 0),
            self.mesh,
            config.members.strategy,
            compiler_options=backend.compiler_options(config.compile.cpu_conv),
        )
        images_u8 = np.asarray(images_u8, np.uint8)
        labels = np.zeros(len(images_u8), np.int32) if labels is None else np.asarray(labels, np.int32)
        device_images, device_labels = members.place((images_u8, labels), self.mesh, stacked=False)
        idx = [np.arange(len(images_u8))] * len(self.members)
        variables = members.pad(self.variables, self.mesh)
        return members.evaluate(
            eval_step, variables, device_images, device_labels, idx, config.eval.batch_size, self.mesh
        )

    def predict(self, images_u8: np.ndarray, tta_flip: bool | None = None) -> np.ndarray:
        """Class probabilities [M, N, 10] of every member for uint8 images [N, 28, 28]; `select` first for one."""
        _, logits = self.evaluate(images_u8, tta_flip=tta_flip)
        return np.asarray(jax.nn.softmax(logits, axis=-1))


def restore(workdir: str | Path, step: int | None = None, ema: bool = False) -> Restored:
    """Restore a run's latest checkpoint (or the one after `step` epochs) for inference.

    Args:
      workdir: a `fmnist-jax train` workdir (or a copy of one with its `checkpoints/`).
      step: finished epochs of the checkpoint to restore; None for the latest.
      ema: the weight average instead of the weights (RunError for a run that kept none).

    Returns:
      The restored run. Raises `errors.NoCheckpoint` (a FileNotFoundError) without such a checkpoint and
      `errors.CheckpointDamaged` when its files no longer match their digest.
    """
    mngr = checkpoints.manager(workdir, create=False)
    try:
        epoch, meta = checkpoints.read_meta(mngr, step)
        config = config_lib.from_dict(meta["config"])
        ms = [Member(m["fold"], m["seed"]) for m in meta["members"]]
        if ema and not config.train.ema_decay > 0:
            raise RunError(f"{workdir}: this run kept no weight average (train.ema_decay=0); restore it without ema")
        model = models.build(config)
        mesh = members.make_mesh(len(ms), config.members.devices)
        variables = checkpoints.restore_variables(mngr, model, len(ms), mesh, epoch, ema)
    finally:
        mngr.close()
    return Restored(Path(workdir), config, ms, model, variables, mesh, epoch, meta["data_digest"], ema)
