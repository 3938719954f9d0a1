"""Fashion-MNIST: find, verify and load the real IDX files; stratified k-fold splits.

The bytes are checked against the published MD5 of the *decompressed* IDX files, so
any mirror (Debian's package, Zalando's files, TFDS) is accepted as long as the
content is the original, and a corrupt or truncated file is one clear error.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import os
from typing import Any
from pathlib import Path

import numpy as np
from fmnist_jax.errors import DataError

CLASS_NAMES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")

# Raw (decompressed) IDX MD5s of the official release.
FILES = {
    "train_images": ("train-images-idx3-ubyte", "f4a8712d7a061bf5bd6d2ca38dc4d50a"),
    "train_labels": ("train-labels-idx1-ubyte", "9018921c3c673c538a1fc5bad174d6f9"),
    "test_images": ("t10k-images-idx3-ubyte", "8181f5470baa50b63fa0f6fddb340f0a"),
    "test_labels": ("t10k-labels-idx1-ubyte", "15d484375f8d13e6eb1aabb0c3f46965"),
}
DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")
INSTALL_HINT = (
    "Install the real data with `sudo apt-get install -y dataset-fashion-mnist` "
    f"(files land in {DEBIAN_DIR}), or put the four official *-ubyte.gz files in a "
    "folder and pass --config.data.dir=FOLDER or set FMNIST_DATA_DIR."
)
_IDX_DTYPES = {0x08: np.uint8}


@dataclasses.dataclass(frozen=True)
class Dataset:
    """The four arrays (uint8 images [N, 28, 28], int32 labels) and their provenance."""

    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    md5: dict[str, str]
    source: str

    @property
    def digest(self) -> str:
        """One short hash naming exactly this data, recorded with every run."""
        joined = ",".join(f"{k}={self.md5[k]}" for k in sorted(self.md5))
        return hashlib.sha256(joined.encode()).hexdigest()[:16]


def cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "fmnist_jax"


def candidate_dirs(explicit: str | None = None) -> list[Path]:
    """Where to look, in order: config, $FMNIST_DATA_DIR, Debian's package, user cache."""
    dirs = [explicit, os.environ.get("FMNIST_DATA_DIR"), DEBIAN_DIR, cache_dir()]
    return [Path(d) for d in dirs if d]


def _find(directory: Path, stem: str) -> Path | None:
    for name in (stem + ".gz", stem):
        if (directory / name).is_file():
            return directory / name
    return None


def find_data_dir(explicit: str | None = None) -> Path:
    """The first candidate holding all four files; a folder the user named (config or $FMNIST_DATA_DIR) must
    hold them, or the error says so, rather than data being read silently from somewhere else."""
    tried = candidate_dirs(explicit)
    named = {
        Path(d): how
        for d, how in ((explicit, "data.dir"), (os.environ.get("FMNIST_DATA_DIR"), "$FMNIST_DATA_DIR"))
        if d
    }
    for d in tried:
        if all(_find(d, stem) for stem, _ in FILES.values()):
            return d
        if d in named:
            missing = [s for s, _ in FILES.values() if not _find(d, s)]
            what = "does not exist" if not d.is_dir() else f"lacks {', '.join(missing)}"
            raise DataError(f"{named[d]} {d} {what}. {INSTALL_HINT}")
    raise DataError("Fashion-MNIST not found in " + ", ".join(map(str, tried)) + ". " + INSTALL_HINT)


def parse_idx(raw: bytes, name: str = "IDX") -> np.ndarray:
    """Decode IDX bytes (magic 0x0000TTDD, big-endian dims, then data) into an array."""
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise DataError(f"{name}: not an IDX file of unsigned bytes (bad magic number).")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{name}: truncated IDX header.")
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    size = int(np.prod(shape))
    if len(raw) != header + size:
        raise DataError(
            f"{name}: expected {header + size} bytes for shape {shape}, got {len(raw)} (truncated or corrupt)."
        )
    return np.frombuffer(raw, np.uint8, offset=header).reshape(shape)


def to_idx(array: np.ndarray) -> bytes:
    """Encode a uint8 array as IDX bytes (inverse of `parse_idx`)."""
    array = np.ascontiguousarray(array, np.uint8)
    dims = b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    return bytes([0, 0, 0x08, array.ndim]) + dims + array.tobytes()


def read_idx(path: Path) -> tuple[np.ndarray, str]:
    """Read a (possibly gzipped) IDX file; returns the array and the MD5 of the raw IDX bytes."""
    try:
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError, gzip.BadGzipFile) as e:
        raise DataError(f"{path}: cannot be read or decompressed ({e}). {INSTALL_HINT}") from e
    return parse_idx(raw, str(path)), hashlib.md5(raw).hexdigest()


def _check(arrays: dict[str, np.ndarray], md5: dict[str, str], where: str, verify: bool) -> None:
    if verify:
        bad = [k for k, (_, want) in FILES.items() if md5[k] != want]
        if bad:
            raise DataError(
                f"{where}: {', '.join(bad)} do not match the official Fashion-MNIST "
                f"checksums (corrupt or different data). {INSTALL_HINT}"
            )
    for split in ("train", "test"):
        images, labels = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        if images.ndim != 3 or images.shape[1:] != (28, 28) or labels.shape != images.shape[:1]:
            raise DataError(f"{where}: {split} images {images.shape} and labels {labels.shape} do not fit together.")
        if labels.size and labels.max() > 9:
            raise DataError(f"{where}: {split} labels outside 0..9.")


def _dataset(arrays: dict[str, np.ndarray], md5: dict[str, str], source: str, verify: bool) -> Dataset:
    _check(arrays, md5, source, verify)
    return Dataset(
        train_images=arrays["train_images"],
        test_images=arrays["test_images"],
        train_labels=arrays["train_labels"].astype(np.int32),
        test_labels=arrays["test_labels"].astype(np.int32),
        md5=md5,
        source=source,
    )


def for_config(config: Any, digest: str | None = None) -> Dataset:
    """The dataset a config's `data` block names (the one way runs, evaluation and export load it).

    With `digest` (a trained run's), other data is refused: a run is only evaluated on what it was trained on.
    """
    dataset = load(config.data.dir or None, config.data.source, config.data.verify)
    if digest is not None and dataset.digest != digest:
        raise DataError(f"the data ({dataset.digest}) is not what this run was trained on ({digest})")
    return dataset


def load(data_dir: str | None = None, source: str = "idx", verify: bool = True) -> Dataset:
    """Load Fashion-MNIST from IDX files (default) or TFDS, verified against the official hashes."""
    if source == "tfds":
        return _load_tfds(verify)
    if source != "idx":
        raise DataError(f"Unknown data source {source!r}; use 'idx' or 'tfds'.")
    d = find_data_dir(data_dir)
    arrays, md5 = {}, {}
    for key, (stem, _) in FILES.items():
        path = _find(d, stem)
        assert path is not None  # find_data_dir returns only folders holding all four files
        arrays[key], md5[key] = read_idx(path)
    return _dataset(arrays, md5, str(d), verify)


def _load_tfds(verify: bool) -> Dataset:
    """TFDS source (needs tensorflow + internet the first time); hashed as re-encoded IDX."""
    try:
        import tensorflow_datasets as tfds

        splits = tfds.as_numpy(tfds.load("fashion_mnist", split=["train", "test"], batch_size=-1, as_supervised=True))
    except Exception as e:  # TFDS raises many types (ImportError, DatasetNotFoundError, ...)
        raise DataError(f"TFDS could not provide fashion_mnist ({type(e).__name__}: {e}). {INSTALL_HINT}") from e
    arrays = {}
    for split, (images, labels) in zip(("train", "test"), splits):
        arrays[f"{split}_images"] = np.asarray(images, np.uint8).reshape(-1, 28, 28)
        arrays[f"{split}_labels"] = np.asarray(labels, np.uint8)
    md5 = {k: hashlib.md5(to_idx(v)).hexdigest() for k, v in arrays.items()}
    return _dataset(arrays, md5, "tfds:fashion_mnist", verify)


def kfold(labels: np.ndarray, k: int, fold: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Stratified k-fold: (train_idx, val_idx) for `fold`, deterministic in `seed`.

    Each class is shuffled once and dealt into k near-equal chunks, so every fold has the
    class balance of the whole set; k=5, fold 0 is the original study's 80/20 split.
    """
    if k < 2 or not 0 <= fold < k:
        raise ValueError(f"need k >= 2 and 0 <= fold < k, got k={k}, fold={fold}")
    rng = np.random.default_rng(seed)
    per_class = [np.array_split(rng.permutation(np.flatnonzero(labels == c)), k)[fold] for c in np.unique(labels)]
    val = np.sort(np.concatenate(per_class))
    train = np.setdiff1d(np.arange(len(labels)), val, assume_unique=True)
    return train.astype(np.int32), val.astype(np.int32)


def split(labels: np.ndarray, cv: Any, fold: int) -> tuple[np.ndarray, np.ndarray]:
    """(train_idx, val_idx) of a member under `config.cv`: its k-fold split, or with `cv.holdout` false all
    images for training and none held out (final models, once cross-validation has fixed the recipe)."""
    if not cv.holdout:
        return np.arange(len(labels), dtype=np.int32), np.zeros(0, np.int32)
    return kfold(labels, cv.k, fold, cv.split_seed)
