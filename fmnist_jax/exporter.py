"""One trained member -> a self-contained model (what `fmnist-jax export` writes and `predict --workdir` runs).

The member's inference function (uint8 images -> scale -> normalise -> CNN -> logits) is
exported with `jax.export` for a symbolic batch size, weights baked in as constants, so
the artifact runs with jax + numpy alone (`fmnist_jax.artifact`) on any batch size and on
CPU or CUDA. The manifest records classes, preprocessing, provenance and accuracy, and
export checks itself: the reloaded artifact is run on the real test set and compared with
the Flax model before anything is reported. The manifest can also carry the drift reference
(`reference_statistics`: input statistics and the model's confidence on held-out training-distribution
images), which `serve` compares its traffic with.
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import json
from pathlib import Path
from typing import Any
from collections.abc import Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from fmnist_jax import data, drift, images, models, restore, steps
from fmnist_jax.errors import Diverged, RunError
from fmnist_jax.artifact import FORMAT, MANIFEST_FILE, MODEL_FILE, ExportedModel
from fmnist_jax.writers import write_bytes, write_json

PLATFORMS = ("cpu", "cuda")


@dataclasses.dataclass(frozen=True)
class TrainedMember:
    """One member of a trained run, ready for inference."""

    config: ml_collections.ConfigDict
    model: models.CNN
    variables: dict[str, Any]
    info: dict[str, Any]  # fold, seed, val/test accuracy, data digest, workdir


def inference_fn(
    config: ml_collections.ConfigDict, model: models.CNN, variables: dict[str, Any]
) -> Callable[[jax.Array], jax.Array]:
    """uint8 [B, 28, 28] -> logits [B, 10], with exactly the training eval preprocessing (and flip averaging)."""

    def fn(images_u8: jax.Array) -> jax.Array:
        x = steps.normalize(steps.preprocess(images_u8), config)
        return steps.infer(
            model.apply, variables, x, config.eval.tta_flip, config.eval.tta_shift, steps.background(config)
        )

    return fn


def load_member(workdir: str | Path, member: tuple[int, int] | None = None, ema: bool = False) -> TrainedMember:
    """Restore one member of a finished run (with `ema`, its weight average): `member=(fold, seed)`, or the best
    by validation accuracy (the first member when nothing was held out: `cv.holdout` false)."""
    workdir = Path(workdir)
    try:
        summary = json.loads((workdir / "summary.json").read_text())
    except (OSError, ValueError) as e:
        raise RunError(f"{workdir}: no readable summary.json ({e}); is it a finished `fmnist-jax train` run?") from e
    run = restore.restore(workdir, ema=ema)
    scores = summary["ema"] if ema else summary  # the weight average has its own accuracies
    if member is None:
        val = [m["val_accuracy"] for m in scores["members"]]
        i = 0 if None in val else int(np.argmax(val))
        member = run.members[i].fold, run.members[i].seed
    run = run.select(*member)
    (row,) = [m for m in scores["members"] if (m["fold"], m["seed"]) == member]
    info = {
        "fold": member[0],
        "seed": member[1],
        "val_accuracy": row["val_accuracy"],
        "test_accuracy": row["test_accuracy"],
        "data_digest": summary.get("data_digest"),
        "workdir": str(workdir.resolve()),
        "epoch": run.epoch,
        "ema": ema,
    }
    return TrainedMember(run.config, run.model, run.member_variables(0), info)


def write_manifest(out: str | Path, manifest: dict[str, Any]) -> None:
    write_json(Path(out) / MANIFEST_FILE, manifest, default=list)


REFERENCE_IMAGES = 5000  # held-out images a drift reference is computed on (deciles and 101 quantiles need few)


def reference_images(trained: TrainedMember, dataset: data.Dataset, n: int = REFERENCE_IMAGES) -> np.ndarray:
    """Up to `n` images of the member's validation fold: the training distribution, unseen by the model.

    A model trained on every training image (`cv.holdout` false) has no unseen ones: its reference is drawn
    from the images it trained on, where its confidence is somewhat higher than on new ones.
    """
    train, val = data.split(dataset.train_labels, trained.config.cv, int(trained.info["fold"]))
    pick = np.sort(np.random.default_rng(0).permutation(val if len(val) else train)[:n])
    return dataset.train_images[pick]


def reference_statistics(trained: TrainedMember, images_u8: np.ndarray, source: str) -> dict[str, Any]:
    """The drift reference (`fmnist_jax.drift.reference`) of `images_u8` with this member's answers on them."""
    fn = jax.jit(inference_fn(trained.config, trained.model, trained.variables))
    logits = np.concatenate([np.asarray(fn(images_u8[s : s + 1000])) for s in range(0, len(images_u8), 1000)])
    return drift.reference(images_u8, np.asarray(jax.nn.softmax(logits, axis=-1)), source)


def build_artifact(
    trained: TrainedMember,
    platforms: tuple[str, ...] = PLATFORMS,
    reference: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
) -> tuple[bytes, dict[str, Any]]:
    """The serialized batch-polymorphic program and its manifest (what `ExportedModel` takes).

    `reference` (a drift reference) and `extra` (more manifest keys, e.g. a retraining's gate) go into the manifest.
    """
    (batch,) = jax.export.symbolic_shape("batch")
    fn = jax.jit(inference_fn(trained.config, trained.model, trained.variables))
    exp = jax.export.export(fn, platforms=platforms)(jax.ShapeDtypeStruct((batch, 28, 28), jnp.uint8))
    serialized = bytes(exp.serialize())
    c = trained.config
    manifest = {
        "format": FORMAT,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "classes": list(data.CLASS_NAMES),
        "input": {
            "dtype": "uint8",
            "shape": ["batch", 28, 28],
            "convention": "Fashion-MNIST: greyscale, light item on a black (0) background",
        },
        "output": {"name": "logits", "dtype": "float32", "shape": ["batch", 10]},
        "preprocessing": {
            "in_model": f"x / 255, then (x - {c.normalize.mean}) / {c.normalize.std}",
            "normalize": {"mean": float(c.normalize.mean), "std": float(c.normalize.std)},
            "files": images.RULES,
        },
        "model": {"name": c.name, **c.model.to_dict(), "params": models.count_params(trained.model)},
        "member": trained.info,
        "test_accuracy": trained.info.get("test_accuracy"),
        "data_digest": trained.info.get("data_digest"),
        "platforms": list(platforms),
        "jax_version": jax.__version__,
        "model_sha256": hashlib.sha256(serialized).hexdigest(),
        "check": {},
        **({"reference": reference} if reference is not None else {}),
        **(extra or {}),
    }
    return serialized, json.loads(json.dumps(manifest, default=list))  # JSON types, as written and read back


def export_model(
    trained: TrainedMember,
    out: str | Path,
    platforms: tuple[str, ...] = PLATFORMS,
    reference: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Write `model.jax` + `manifest.json` into `out`; returns the manifest.

    Refuses (Diverged) a member whose weights are not all finite: its predictions would be meaningless.
    """
    bad = [
        jax.tree_util.keystr(p)
        for p, x in jax.tree_util.tree_leaves_with_path(trained.variables)
        if not np.isfinite(np.asarray(x)).all()
    ]
    if bad:
        raise Diverged(
            f"member {trained.info.get('fold')},{trained.info.get('seed')} has non-finite weights "
            f"({', '.join(bad[:3])}{', ...' if len(bad) > 3 else ''}): it diverged; not exporting it"
        )
    serialized, manifest = build_artifact(trained, platforms, reference, extra)
    Path(out).mkdir(parents=True, exist_ok=True)
    write_bytes(Path(out) / MODEL_FILE, serialized)
    write_manifest(out, manifest)
    return manifest


def check_against_flax(
    trained: TrainedMember, model_dir: str | Path, test_images: np.ndarray, test_labels: np.ndarray
) -> dict[str, Any]:
    """Run the reloaded export and the Flax model on the test set: accuracy and the largest logit gap."""
    loaded = ExportedModel.load(model_dir)
    flax_fn = jax.jit(inference_fn(trained.config, trained.model, trained.variables))
    got = loaded.logits(test_images)
    want = np.concatenate([np.asarray(flax_fn(test_images[s : s + 1000])) for s in range(0, len(test_images), 1000)])
    return {
        "test_images": int(len(test_images)),
        "exported_test_accuracy": float((got.argmax(-1) == test_labels).mean()),
        "max_abs_logit_diff_vs_flax": float(np.abs(got - want).max()),
        "argmax_agreement_vs_flax": float((got.argmax(-1) == want.argmax(-1)).mean()),
    }
