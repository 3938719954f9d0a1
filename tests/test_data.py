"""Loader, verification and fold-split behaviour on generated IDX files."""

import gzip

import chex
import ml_collections
import numpy as np
import pytest

from conftest import write_idx_dir
from fmnist_jax import data


def test_idx_round_trip():
    a = np.arange(2 * 28 * 28, dtype=np.uint8).reshape(2, 28, 28)
    np.testing.assert_array_equal(data.parse_idx(data.to_idx(a)), a)


def test_load_generated(tiny_data_dir):
    ds = data.load(str(tiny_data_dir), verify=False)
    chex.assert_shape(ds.train_images, (240, 28, 28))
    chex.assert_shape(ds.test_images, (100, 28, 28))
    assert ds.train_images.dtype == np.uint8 and ds.train_labels.dtype == np.int32
    assert len(ds.digest) == 16 and ds.source == str(tiny_data_dir)


def test_verify_rejects_data_that_is_not_fashion_mnist(tiny_data_dir):
    with pytest.raises(data.DataError, match="checksums"):
        data.load(str(tiny_data_dir), verify=True)


@pytest.mark.parametrize("damage", ["truncate", "not_gzip", "bad_magic"])
def test_corrupt_file_is_one_clear_error(tmp_path, damage):
    d = write_idx_dir(tmp_path / "d")
    f = d / "train-images-idx3-ubyte.gz"
    raw = gzip.decompress(f.read_bytes())
    if damage == "truncate":
        f.write_bytes(gzip.compress(raw[:-100]))
    elif damage == "not_gzip":
        f.write_bytes(b"this is not gzip")
    else:
        f.write_bytes(gzip.compress(b"\x01\x02" + raw[2:]))
    with pytest.raises(data.DataError, match="train-images"):
        data.load(str(d), verify=False)


def test_missing_files_say_how_to_install(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(data.DataError, match="apt-get install -y dataset-fashion-mnist"):
        data.load(str(tmp_path / "empty"))


def test_search_order_prefers_config_then_env(tmp_path, monkeypatch):
    a, b = write_idx_dir(tmp_path / "a"), write_idx_dir(tmp_path / "b")
    monkeypatch.setenv("FMNIST_DATA_DIR", str(b))
    assert data.find_data_dir(str(a)) == a
    assert data.find_data_dir(None) == b


@pytest.mark.parametrize("env", ["missing", "empty"])
def test_a_named_env_folder_without_the_data_is_an_error_not_skipped(tmp_path, monkeypatch, env):
    (tmp_path / "empty").mkdir()
    monkeypatch.setenv("FMNIST_DATA_DIR", str(tmp_path / env))
    what = "does not exist" if env == "missing" else "lacks train-images"
    with pytest.raises(data.DataError, match=f"FMNIST_DATA_DIR {tmp_path / env} {what}"):
        data.find_data_dir(None)


def test_uncompressed_files_are_accepted(tmp_path):
    d = write_idx_dir(tmp_path / "d")
    for f in d.glob("*.gz"):
        f.with_suffix("").write_bytes(gzip.decompress(f.read_bytes()))
        f.unlink()
    assert data.load(str(d), verify=False).train_images.shape == (240, 28, 28)


@pytest.mark.parametrize("k", [3, 5, 7])
def test_kfold_partitions_and_stratifies(k):
    labels = np.repeat(np.arange(10), 70)
    vals = []
    for fold in range(k):
        train, val = data.kfold(labels, k, fold, seed=0)
        assert len(np.intersect1d(train, val)) == 0 and len(train) + len(val) == len(labels)
        counts = np.bincount(labels[val], minlength=10)
        assert counts.max() - counts.min() <= 1  # every class equally represented
        vals.append(val)
    np.testing.assert_array_equal(np.sort(np.concatenate(vals)), np.arange(len(labels)))  # folds tile the set


def test_split_without_holdout_trains_on_everything():
    labels = np.repeat(np.arange(10), 7)
    cv = ml_collections.ConfigDict(dict(k=5, split_seed=0, holdout=True))
    chex.assert_trees_all_equal(data.split(labels, cv, 2), data.kfold(labels, 5, 2, 0))
    cv.holdout = False
    train, val = data.split(labels, cv, 0)
    chex.assert_trees_all_equal(train, np.arange(70, dtype=np.int32))
    assert val.shape == (0,)


def test_kfold_is_deterministic_and_seeded():
    labels = np.repeat(np.arange(10), 50)
    np.testing.assert_array_equal(data.kfold(labels, 5, 2, 0)[1], data.kfold(labels, 5, 2, 0)[1])
    assert not np.array_equal(data.kfold(labels, 5, 2, 0)[1], data.kfold(labels, 5, 2, 1)[1])
    with pytest.raises(ValueError):
        data.kfold(labels, 5, 5)


@pytest.mark.skipif(
    not all(data._find(data.DEBIAN_DIR, s) for s, _ in data.FILES.values()),
    reason="real Fashion-MNIST (dataset-fashion-mnist) not installed",
)
def test_real_data_verifies():
    ds = data.load(str(data.DEBIAN_DIR))
    assert ds.train_images.shape == (60000, 28, 28) and ds.test_images.shape == (10000, 28, 28)
    np.testing.assert_array_equal(np.bincount(ds.train_labels), np.full(10, 6000))
    train, val = data.kfold(ds.train_labels, 5, 0)
    assert (len(train), len(val)) == (48000, 12000)  # the original study's 80/20 split
