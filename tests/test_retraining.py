"""Gated retraining on a tiny trained run: new data in every format, the fine-tune, the gate both ways, the command."""

import gzip
import io
import json

import jax
import numpy as np
import pytest
from conftest import make_images, tiny
from PIL import Image

from fmnist_jax import data, drift, retraining, train
from fmnist_jax.artifact import MANIFEST_FILE, MODEL_FILE, ExportedModel
from fmnist_jax.commands import export as export_cmd
from fmnist_jax.commands import retrain as retrain_cmd


def shifted(labels: np.ndarray, seed: int) -> np.ndarray:
    """The generated images at lower contrast on a lit background: what the new data looks like."""
    return np.clip(make_images(labels, seed) * 0.6 + 20, 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def run(tmp_path_factory, tiny_data_dir):
    config, workdir = tiny(tiny_data_dir), tmp_path_factory.mktemp("run")
    return workdir, train.train_and_evaluate(config, workdir, progress=False)


@pytest.fixture(scope="module")
def new_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("new")
    labels = (np.arange(300) % 10).astype(np.uint8)
    np.save(d / "images.npy", shifted(labels, 7))
    np.save(d / "labels.npy", labels.astype(np.int64))
    return d


def test_new_data_in_every_format(tmp_path):
    labels = np.array([0, 1, 1, 9], np.uint8)
    x = shifted(labels, 3)
    for name, c in (("0", 0), ("Trouser", 1), ("ankle_boot", 9)):
        (tmp_path / "folders" / name).mkdir(parents=True)
        for i in np.flatnonzero(labels == c):
            Image.fromarray(x[i]).save(tmp_path / "folders" / name / f"{i}.png")
    (tmp_path / "idx").mkdir()
    (tmp_path / "idx" / "x.gz").write_bytes(gzip.compress(data.to_idx(x)))
    (tmp_path / "idx" / "y").write_bytes(data.to_idx(labels))
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", labels)
    retraining.MIN_IMAGES, saved = 1, retraining.MIN_IMAGES
    try:
        folders = retraining.load_new_data(tmp_path / "folders")
        idx = retraining.load_new_data(tmp_path / "idx" / "x.gz", tmp_path / "idx" / "y")
        npy = retraining.load_new_data(tmp_path / "x.npy", tmp_path / "y.npy")
    finally:
        retraining.MIN_IMAGES = saved
    assert sorted(folders.labels.tolist()) == [0, 1, 1, 9]
    for new in (idx, npy):
        assert new.images.tolist() == x.tolist() and new.labels.tolist() == labels.tolist()
    assert folders.digest == idx.digest == npy.digest  # the same images and labels, whatever the files

    (tmp_path / "folders" / "Hat").mkdir()
    with pytest.raises(retraining.RetrainError, match="'Hat' names no class"):
        retraining.load_new_data(tmp_path / "folders")
    with pytest.raises(retraining.RetrainError, match="needs --labels"):
        retraining.load_new_data(tmp_path / "x.npy")
    with pytest.raises(retraining.RetrainError, match="at least 10"):
        retraining.load_new_data(tmp_path / "x.npy", tmp_path / "y.npy")
    np.save(tmp_path / "bad.npy", np.array([0, 1, 2, 10]))
    with pytest.raises(retraining.RetrainError, match="0..9"):
        retraining.read_labels(tmp_path / "bad.npy")
    buf = io.BytesIO()
    np.save(buf, np.zeros(3, np.int64))
    (tmp_path / "three.npy").write_bytes(buf.getvalue())
    with pytest.raises(retraining.RetrainError, match="4 images but"):
        retraining.load_new_data(tmp_path / "x.npy", tmp_path / "three.npy")


def test_split_is_stratified_and_seeded():
    labels = np.repeat(np.arange(10), 20)
    train_idx, held = retraining.split(labels, 0.25, seed=1)
    assert np.bincount(labels[held]).tolist() == [5] * 10 and len(train_idx) == 150
    assert not set(train_idx) & set(held)
    assert retraining.split(labels, 0.25, seed=1)[1].tolist() == held.tolist()
    assert retraining.split(labels, 0.25, seed=2)[1].tolist() != held.tolist()


def test_export_stores_a_drift_reference(run, tmp_path):
    workdir, _ = run
    assert export_cmd.main(["--workdir", str(workdir), "--out", str(tmp_path / "v1"), "--nocheck"]) == 0
    ref = drift.check_reference(json.loads((tmp_path / "v1" / MANIFEST_FILE).read_text())["reference"])
    assert ref["images"] == 80 and ref["source"].startswith("validation fold")  # the member's held-out fold


def test_retrain_passes_the_gate_and_exports_a_new_version(run, new_files, tmp_path, capsys):
    workdir, summary = run
    out = tmp_path / "v2"
    argv = ["--from", str(workdir), "--data", str(new_files / "images.npy"), "--labels", str(new_files / "labels.npy")]
    argv += ["--out", str(out), "--epochs", "3", "--lr", "0.01", "--batch_size", "32", "--tolerance", "1.0"]
    assert retrain_cmd.main(argv) == 0
    assert "gate passed" in capsys.readouterr().out
    gate = json.loads((out / retraining.GATE_FILE).read_text())
    manifest = json.loads((out / MANIFEST_FILE).read_text())
    assert gate["accepted"] and gate["exported"] and manifest["retraining"] == gate
    assert gate["new_data"] == {**gate["new_data"], "images": 300, "train": 240, "held_out": 60}
    assert gate["finetune"]["replay_images"] == 160 and len(gate["finetune"]["history"]) == 3
    best = max(summary["members"], key=lambda m: m["val_accuracy"])
    assert gate["finetune"]["member"] == {"fold": best["fold"], "seed": best["seed"]}
    assert abs(gate["before"]["test"] - best["test_accuracy"]) <= 0.01 + 1e-9  # the run's own number, re-measured
    assert gate["after"]["new_holdout"] > gate["before"]["new_holdout"]  # it learned the new inputs
    assert manifest["check"]["exported_test_accuracy"] == gate["after"]["test"] == manifest["test_accuracy"]
    assert manifest["reference"]["source"].startswith("all new data") and manifest["reference"]["images"] == 300
    model = ExportedModel.load(out)
    held = retraining.split(np.load(new_files / "labels.npy"), 0.2)[1]
    x, y = np.load(new_files / "images.npy")[held], np.load(new_files / "labels.npy")[held]
    assert (model.logits(x).argmax(-1) == y).mean() == pytest.approx(gate["after"]["new_holdout"])
    assert not list(tmp_path.glob(".v2.tmp-*"))  # written beside, then renamed
    with pytest.raises(retraining.RetrainError, match="not an empty folder"):
        retrain_cmd.main(argv)  # a version folder is never overwritten


def test_the_gate_refuses_a_worse_model(run, new_files, tmp_path, monkeypatch, capsys):
    workdir, _ = run
    real = retraining.finetune

    def broken(*args, **kwargs):
        variables, history = real(*args, **kwargs)
        return jax.tree.map(np.zeros_like, variables), history  # every class scores the same: class 0 for all

    monkeypatch.setattr(retraining, "finetune", broken)
    out = tmp_path / "v3"
    argv = ["--from", str(workdir), "--data", str(new_files / "images.npy"), "--labels", str(new_files / "labels.npy")]
    assert retrain_cmd.main([*argv, "--out", str(out), "--epochs", "1", "--tolerance", "0"]) == 1
    gate = json.loads((out / retraining.GATE_FILE).read_text())
    assert not gate["accepted"] and not gate["exported"] and gate["after"]["test"] == 0.1
    assert gate["before"]["test"] > 0.1 and not (out / MODEL_FILE).exists()
    assert "gate refused" in capsys.readouterr().out
