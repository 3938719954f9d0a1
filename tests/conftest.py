"""Shared fixtures: small generated IDX files (learnable class patterns) and a tiny config.

The generated data is only for unit tests; every reported figure uses the real data.
"""

import gzip
import json
from pathlib import Path

import numpy as np
import pytest

from configs import default
from fmnist_jax import data, tracking
from fmnist_jax.writers import read_jsonl


def make_images(labels: np.ndarray, seed: int) -> np.ndarray:
    """Noise plus a central square whose brightness encodes the class, so a small CNN learns it fast."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 30, (len(labels), 28, 28), dtype=np.uint8)
    images[:, 7:21, 7:21] += (40 + 20 * labels.astype(np.uint8))[:, None, None]
    return images


def batch(n: int, seed: int) -> np.ndarray:
    """n generated images cycling through the 10 classes (drift and monitoring tests)."""
    return make_images(np.arange(n) % 10, seed)


# Input shifts a deployed model must notice (inverted, darkened, noised Fashion-MNIST-like images).
SHIFTS = {
    "inverted": lambda x: 255 - x,
    "darkened": lambda x: (x * 0.5).astype(np.uint8),
    "noised": lambda x: np.clip(x + np.random.default_rng(9).normal(0, 40, x.shape), 0, 255).astype(np.uint8),
}


def write_idx_dir(directory: Path, n_train: int = 240, n_test: int = 100, seed: int = 0) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    train_labels = np.arange(n_train, dtype=np.uint8) % 10
    test_labels = np.arange(n_test, dtype=np.uint8) % 10
    arrays = {
        "train_images": make_images(train_labels, seed),
        "train_labels": train_labels,
        "test_images": make_images(test_labels, seed + 1),
        "test_labels": test_labels,
    }
    for key, (stem, _) in data.FILES.items():
        (directory / f"{stem}.gz").write_bytes(gzip.compress(data.to_idx(arrays[key])))
    return directory


@pytest.fixture(scope="session")
def tiny_data_dir(tmp_path_factory) -> Path:
    return write_idx_dir(tmp_path_factory.mktemp("tiny_fmnist"))


@pytest.fixture
def tiny_config(tiny_data_dir):
    """A config that trains 2 folds x 1 seed of a ~2k-param CNN in seconds on the generated data."""
    return tiny(tiny_data_dir)


def tiny(data_dir: Path):
    """The `tiny_config` fixture's config, callable from module-scoped fixtures (`from conftest import tiny`)."""
    c = default.get_config()
    c.name = "tiny"
    c.data.dir = str(data_dir)
    c.data.verify = False
    c.cv.k = 3
    c.cv.folds = (0, 1)
    c.model.widths = (8, 16)
    c.model.depths = (1, 1)
    c.train.epochs = 3
    c.train.batch_size = 16
    c.eval.batch_size = 64
    c.optim.lr = 1e-2
    c.wandb.mode = "disabled"  # tests opt in to W&B (offline) explicitly
    return c


def tiny_flags(data_dir: Path) -> list[str]:
    """`tiny`'s overrides as `fmnist-jax train` flags over configs/default.py, for tests that go through the CLI."""
    flags = [f"--config.data.dir={data_dir}", "--config.data.verify=false", "--config.wandb.mode=disabled"]
    flags += ["--config.cv.k=3", "--config.cv.folds=(0,1)", "--config.model.widths=(8,16)"]
    flags += ["--config.model.depths=(1,1)", "--config.train.epochs=3", "--config.train.batch_size=16"]
    return [*flags, "--config.eval.batch_size=64", "--config.optim.lr=1e-2"]


WANDB_METRICS = {"train/loss", "train/accuracy", "val/loss", "val/accuracy", "epoch"}  # every epoch's row


def offline_runs(work: Path) -> tuple[list[Path], dict[str, str], list[dict]]:
    """A tiny run's offline W&B runs (one per member of its two, under the IDs the run saved), those IDs, and its
    metrics rows."""
    dirs = sorted((work / "wandb").glob("offline-run-*"))
    ids = json.loads((work / tracking.RUN_IDS).read_text())
    assert sorted(d.name.rsplit("-", 1)[1] for d in dirs) == sorted(ids.values()) and len(dirs) == 2
    return dirs, ids, read_jsonl(work / "metrics.jsonl")
