"""The prediction store: ids, exact live accuracy, all-or-nothing labels, bounded tables, files read back."""

import sqlite3

import numpy as np
import pytest

from fmnist_jax import feedback


def onehot(classes, p=0.9):
    out = np.full((len(classes), 10), (1 - p) / 9, np.float32)
    out[np.arange(len(classes)), classes] = p
    return out


def images(n, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, 28, 28), dtype=np.uint8)


def test_labels_give_exact_accuracy_over_the_window():
    store = feedback.Store(accuracy_window=5)
    preds = np.array([0, 1, 2, 3, 4, 5, 6])
    ids = store.record("r1", images(7), onehot(preds), "v1", 0.01)
    assert ids == [f"r1.{i}" for i in range(7)] and store.served == 7
    assert store.add_labels([(ids[0], 9), (ids[1], 1)]) == (2, 1)
    acc = store.accuracy()
    assert (acc["labelled"], acc["correct"], acc["accuracy"]) == (2, 1, 0.5)
    assert acc["per_class"]["9"] == {"labelled": 1, "accuracy": 0.0}
    assert store.add_labels([(i, int(p)) for i, p in zip(ids[2:], preds[2:])]) == (5, 5)
    acc = store.accuracy()  # the last 5 labels: ids 2..6, all right; ids 0 and 1 fell out of the window
    assert (acc["labelled"], acc["accuracy"], acc["labelled_total"]) == (5, 1.0, 7)
    assert acc["per_class"]["9"] == {"labelled": 0, "accuracy": None}


def test_bad_feedback_changes_nothing():
    store = feedback.Store()
    ids = store.record("r", images(3), onehot([1, 2, 3]), "v1", 0.01)
    with pytest.raises(feedback.UnknownPrediction, match="'nope'"):
        store.add_labels([(ids[0], 1), ("nope", 2)])
    with pytest.raises(feedback.FeedbackError, match="0..9"):
        store.add_labels([(ids[0], 10)])
    with pytest.raises(feedback.AlreadyLabelled, match="twice"):
        store.add_labels([(ids[0], 1), (ids[0], 1)])
    assert store.accuracy()["labelled"] == 0  # none of the refused batches left a label
    store.add_labels([(ids[0], 1)])
    with pytest.raises(feedback.AlreadyLabelled, match="already has a label"):
        store.add_labels([(ids[1], 2), (ids[0], 1)])
    assert store.accuracy()["labelled"] == 1


def test_tables_stay_bounded_and_images_are_kept_only_when_asked(tmp_path):
    store = feedback.Store(tmp_path / "s.sqlite", max_rows=10)
    x = images(4)
    for r in range(6):
        store.record(f"r{r}", x, onehot([0, 1, 2, 3]), "v1", 0.01)
        store.event("note", {"r": r})
    assert store.counts() == {"predictions": 10, "requests": 6, "events": 6}
    for r in range(6, 14):
        store.record(f"r{r}", x, onehot([0, 1, 2, 3]), "v1", 0.01)
    assert store.counts()["requests"] == 10 and store.served == 56
    db = sqlite3.connect(tmp_path / "s.sqlite")
    assert db.execute("SELECT MIN(seq), MAX(seq), COUNT(image) FROM predictions").fetchone() == (47, 56, 0)
    digest = db.execute("SELECT digest FROM predictions WHERE seq = 56").fetchone()[0]
    assert digest == feedback.digest(x[3])
    store.close()

    kept = feedback.Store(tmp_path / "k.sqlite", keep_images=True)
    kept.record("r", x, onehot([0, 1, 2, 3]), "v1", 0.01)
    row = sqlite3.connect(tmp_path / "k.sqlite").execute("SELECT image FROM predictions WHERE seq = 2").fetchone()
    assert np.frombuffer(row[0], np.uint8).reshape(28, 28).tolist() == x[1].tolist()


def test_a_file_store_is_reopened_and_read_back(tmp_path):
    path = tmp_path / "s.sqlite"
    store = feedback.Store(path)
    ids = store.record("a", images(3), onehot([4, 5, 6]), "v1", 0.02, {"ready": True, "drifted": True, "psi": {}})
    store.add_labels([(ids[1], 5)])
    store.close()
    again = feedback.Store(path)
    more = again.record("b", images(2), onehot([7, 8]), "v2", 0.03)
    again.add_labels([(more[0], 1)])
    assert again.served == 5 and again.accuracy()["labelled_total"] == 2
    snap = feedback.read(path)  # read-only, while `again` holds the file open
    assert snap.predictions["seq"].tolist() == [1, 2, 3, 4, 5]
    assert snap.predictions["label"].tolist() == [-1, 5, -1, 1, -1]
    assert snap.predictions["model_version"].tolist() == ["v1"] * 3 + ["v2"] * 2
    assert snap.requests["drifted"].tolist() == [1, -1] and snap.requests["seq_end"].tolist() == [3, 5]
    assert snap.requests["drift"][0]["drifted"] is True and snap.requests["drift"][1] is None
    with pytest.raises(feedback.StoreError, match="no such store"):
        feedback.read(tmp_path / "missing.sqlite")
    (tmp_path / "junk.sqlite").write_bytes(b"not a database at all" * 100)
    with pytest.raises(feedback.StoreError, match="not"):
        feedback.Store(tmp_path / "junk.sqlite")
    other = sqlite3.connect(tmp_path / "other.sqlite")
    other.execute("CREATE TABLE t (x)")
    other.commit()
    with pytest.raises(feedback.StoreError, match="schema"):
        feedback.Store(tmp_path / "other.sqlite")
