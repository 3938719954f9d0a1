"""The monitoring report from a store: phase accuracy, share flagged and detection delay counted exactly; figures."""

import json

import numpy as np
import pytest

from fmnist_jax import feedback, monitoring_report
from fmnist_jax.commands import monitor as monitor_cmd
from fmnist_jax.commands.parsing import UsageError


def onehot(classes):
    out = np.full((len(classes), 10), 0.01, np.float32)
    out[np.arange(len(classes)), classes] = 0.91
    return out


@pytest.fixture
def store(tmp_path):
    """12 requests of 10 images: 4 clean (the window is ready from the 2nd), 4 drifted from the 2nd on, 4 clean again;
    every prediction labelled, right in phase 1 and 3, half wrong in phase 2."""
    path = tmp_path / "store.sqlite"
    s = feedback.Store(path)
    x = np.zeros((10, 28, 28), np.uint8)
    flags = [None, False, False, False, False, True, True, True, True, False, False, False]
    for r, flag in enumerate(flags):
        psi = {"mean_intensity": 0.5 if flag else 0.01, "class_mix": 0.02}
        d = None
        if flag is not None:
            d = {"ready": True, "drifted": flag, "psi": psi, "ks": psi, "over": [], "method": "psi", "threshold": 0.2}
        preds = np.arange(10) % 10
        ids = s.record(f"r{r}", x, onehot(preds), "v1" if r < 8 else "v2", 0.001 * (r + 1), d)
        wrong = 4 <= r < 8
        s.add_labels(
            [(i, int((p + 1) % 10) if wrong and k % 2 else int(p)) for k, (i, p) in enumerate(zip(ids, preds))]
        )
    s.close()
    return path


def test_phases_count_delay_and_accuracy_exactly(store):
    marks = [{"label": "clean", "start": 0}, {"label": "shift", "start": 40}, {"label": "back", "start": 80}]
    rows = monitoring_report.phases(feedback.read(store), marks)
    assert [r["images"] for r in rows] == [40, 40, 40] and [r["labelled"] for r in rows] == [40, 40, 40]
    assert [r["accuracy"] for r in rows] == [1.0, 0.5, 1.0]
    assert rows[1]["detection_delay_images"] == 20 and rows[1]["detection_delay_requests"] == 2
    assert rows[1]["flagged_share"] == 0.75 and rows[0]["flagged_share"] == 0.0
    assert rows[2]["flagged_at_start"] and rows[2]["detection_delay_images"] is None
    assert rows[0]["model_versions"] == ["v1"] and rows[2]["model_versions"] == ["v2"]


def test_report_and_command(store, tmp_path):
    (tmp_path / "marks.json").write_text(json.dumps([{"label": "clean", "start": 0}, {"label": "shift", "start": 40}]))
    argv = ["--store", str(store), "--out", str(tmp_path / "r"), "--marks", str(tmp_path / "marks.json")]
    assert monitor_cmd.main([*argv, "--window", "20", "--bucket", "20"]) == 0
    summary = json.loads((tmp_path / "r" / "monitoring.json").read_text())
    assert summary["images"] == 120 and summary["labelled"] == 120 and summary["accuracy"] == 100 / 120
    assert [v["model_version"] for v in summary["model_versions"]] == ["v1", "v2"]
    assert "| shift | 80 | 80 | 75.00% |" in (tmp_path / "r" / "report.md").read_text()
    for name in monitoring_report.FIGURES:
        assert (tmp_path / "r" / name).stat().st_size > 5_000
    (tmp_path / "bad.json").write_text('[{"label": "a", "start": 5}, {"label": "b", "start": 1}]')
    with pytest.raises(feedback.StoreError, match="increasing"):
        monitor_cmd.main(["--store", str(store), "--out", str(tmp_path / "r"), "--marks", str(tmp_path / "bad.json")])
    with pytest.raises(feedback.StoreError, match="no such store"):
        monitor_cmd.main(["--store", str(tmp_path / "none.sqlite"), "--out", str(tmp_path / "r")])
    with pytest.raises(UsageError, match="--store"):
        monitor_cmd.main(["--out", str(tmp_path / "r")])
