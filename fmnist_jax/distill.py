"""Knowledge distillation from finished runs (issue 18): the student learns from their softened predictions too.

`distill.teachers` names finished `train` workdirs; every member of every one is a teacher, and their mean
softmax at `distill.temperature` is the target. The teachers may be larger than the budget (only the student
is deployed, and `models.check_budget` checks it alone); each keeps its own architecture and normalisation.

Why online, on the student's own augmented batch, rather than logits precomputed once per view: it takes any
augmentation (erasing has no finite set of views) and any teacher, and costs one eval-mode forward pass per
teacher member: with two teacher members, `configs/distill.py`'s step runs at 0.74x the plain step's images per
second (paired, `results/bench/ideas/cpu.md`, 2-core AMD EPYC), about 0.18x of a step per teacher member.

A teacher must not have seen what the student is judged on: for a student that holds out a fold (`cv.holdout`),
every teacher member must have trained on the very same split (same `cv.k`, `cv.split_seed` and fold), or the
student's validation accuracy would carry the teacher's memory of those images. A student trained on all 60k
may learn from any teacher: no run trains on the test set.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections

from fmnist_jax import checkpoints, members, restore, steps
from fmnist_jax.errors import ConfigError, RunError
from fmnist_jax.members import Member


@dataclasses.dataclass(frozen=True)
class Teacher:
    """One teacher run as restored, and the SHA-256 of the checkpoint it was restored from."""

    run: restore.Restored
    checkpoint_sha256: str

    def identity(self) -> dict[str, Any]:
        """What the student's record keeps of it: where, which checkpoint, and that checkpoint's digest."""
        return {
            "workdir": str(self.run.workdir),
            "epoch": self.run.epoch,
            "members": [dataclasses.asdict(m) for m in self.run.members],
            "checkpoint_sha256": self.checkpoint_sha256,
        }


def load(config: ml_collections.ConfigDict, data_digest: str, students: list[Member]) -> list[Teacher]:
    """The config's teachers, checked before anything trains; [] without `distill.teachers`.

    Raises ConfigError naming the teacher that is missing, unfinished, trained on other data, or trained on
    images the student validates on (module docstring).
    """
    teachers = []
    for path in config.distill.teachers:
        try:
            r = restore.restore(path)
        except (FileNotFoundError, RunError, ValueError) as e:
            raise ConfigError(f"distill.teachers: {path}: {e}") from None
        if r.epoch != r.config.train.epochs:
            raise ConfigError(
                f"distill.teachers: {path} is not finished ({r.epoch} of {r.config.train.epochs} epochs): "
                "a teacher still training would change under the student"
            )
        if r.data_digest != data_digest:
            raise ConfigError(f"distill.teachers: {path} trained on other data ({r.data_digest} != {data_digest})")
        if config.cv.holdout:
            _check_split(config, students, path, r.config, r.members)
        teachers.append(Teacher(r, checkpoints.digest(r.workdir, r.epoch)))
    return teachers


def _check_split(
    config: ml_collections.ConfigDict,
    students: list[Member],
    path: str,
    teacher: ml_collections.ConfigDict,
    teacher_members: list[Member],
) -> None:
    folds = sorted({m.fold for m in students})
    if len(folds) != 1:
        raise ConfigError(
            f"distill: a student that holds out data must train one fold (cv.folds has {folds}): each fold needs "
            "teachers that never saw its validation images"
        )
    split = ("cv.k", config.cv.k, teacher.cv.k), ("cv.split_seed", config.cv.split_seed, teacher.cv.split_seed)
    wrong = [f"{k} {t} (student {s})" for k, s, t in split if s != t]
    if not teacher.cv.holdout:
        wrong.append("all training images (cv.holdout=False)")
    wrong += [f"fold {m.fold} (student {folds[0]})" for m in teacher_members if m.fold != folds[0]]
    if wrong:
        raise ConfigError(
            f"distill.teachers: {path} trained on images the student validates on ({', '.join(sorted(set(wrong)))})"
        )


def make_targets(teachers: list[Teacher], temperature: float) -> Callable[[jax.Array], jax.Array]:
    """`targets(images [B, 28, 28, 1] in [0, 1], augmented) -> [B, 10]`: the mean over every teacher member of
    softmax(logits / temperature), each teacher in eval mode on its own normalisation of the same images."""
    # host copies (one per teacher run): constants of the compiled step, wherever the restored run placed them
    hosts = [(t.run.model.apply, t.run.config, members.to_host(t.run.variables)) for t in teachers]
    models: list[tuple[Callable, ml_collections.ConfigDict, Any]] = [
        (apply_fn, c, members.unstack(variables, i))
        for (apply_fn, c, variables), t in zip(hosts, teachers)
        for i in range(len(t.run.members))
    ]

    def targets(images: jax.Array) -> jax.Array:
        probs = [
            jax.nn.softmax(apply_fn(variables, steps.normalize(images, c), train=False) / temperature)
            for apply_fn, c, variables in models
        ]
        return jax.lax.stop_gradient(jnp.mean(jnp.stack(probs), axis=0))

    return targets
