"""W&B: a real offline run holds the logged history, summary and images; W&B failures never stop training."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import wandb
from matplotlib.figure import Figure

from conftest import WANDB_METRICS, offline_runs
from fmnist_jax import members, tracking, train
from fmnist_jax.writers import read_jsonl

REPO = Path(__file__).resolve().parent.parent


def test_offline_run_records_history_summary_and_images(tiny_config, tmp_path):
    tiny_config.wandb.mode = "offline"
    tiny_config.train.epochs = 2
    work = tmp_path / "point"
    summary = train.train_and_evaluate(tiny_config, work, progress=False)
    wandb.teardown()  # finish() may return before wandb-core has written the last records: wait for it
    dirs, ids, jsonl = offline_runs(work)
    for member, tag in enumerate(("fold0_seed0", "fold1_seed0")):
        (run_dir,) = [d for d in dirs if d.name.endswith(ids[tag])]
        history, final = tracking.offline_run(run_dir)
        epochs = [r for r in history if "train/loss" in r]
        assert [r["_step"] for r in epochs] == [1, 2] and all(r.keys() >= WANDB_METRICS for r in epochs)
        mine = [r for r in jsonl if r["member"] == member]
        np.testing.assert_allclose([r["val/accuracy"] for r in epochs], [r["val_accuracy"] for r in mine])
        images = [r for r in history if "test/confusion_matrix/_type" in r]  # media are logged as file records
        assert len(images) == 1 and images[0]["test/predictions/_type"] == "image-file"
        assert (run_dir / "files" / images[0]["test/confusion_matrix/path"]).is_file()
        assert final["test/accuracy"] == pytest.approx(summary["members"][member]["test_accuracy"])
        assert final["val/accuracy"] == pytest.approx(summary["members"][member]["val_accuracy"])
        records = list(tracking.offline_records(next(run_dir.glob("*.wandb"))))
        (run,) = [r.run for r in records if r.HasField("run")]
        config = {i.key: json.loads(i.value_json) for i in run.config.update}
        assert config["git"] == json.loads((work / "record.json").read_text())["git"]
        assert config["wandb.tags"] == [] and config["fold"] == member
        metrics = {r.metric.glob_name or r.metric.name: r.metric.step_metric for r in records if r.HasField("metric")}
        assert metrics.get("*") == "epoch"  # every curve on the epoch axis
        artifacts = [r.artifact for r in records if r.HasField("artifact")]
        if member == 0:  # the final checkpoint, once per run directory
            (art,) = artifacts
            assert art.type == "checkpoint" and json.loads(art.metadata)["epoch"] == 2
            assert {e.path for e in art.manifest.contents} >= {"_CHECKPOINT_METADATA"}
        else:
            assert artifacts == []
        export = tracking.offline_export(run_dir)  # what scripts/wandb_export.py commits: strict JSON
        assert export["id"] == ids[tag] and export["name"].endswith(tag) and export["config"]["fold"] == member
        assert export["history"] == history and "_wandb" not in export["config"]
        json.dumps(export, allow_nan=False)

    # the committed export is merged by run folder: an earlier point's line whose runs are not on disk survives
    out = tmp_path / "wandb_runs.jsonl"
    stale = f"point/wandb/{dirs[0].name}"
    out.write_text(json.dumps({"folder": "gone/wandb/offline-run-x", "id": "x"}) + "\n" + json.dumps({"folder": stale}))
    script = [sys.executable, str(REPO / "scripts/wandb_export.py"), str(tmp_path), "--out", str(out)]
    subprocess.run(script, check=True, capture_output=True)
    lines = read_jsonl(out)
    assert [r["folder"] for r in lines] == ["gone/wandb/offline-run-x"] + [f"point/wandb/{d.name}" for d in dirs]
    assert lines[1] == {**tracking.offline_export(dirs[0]), "folder": stale}
    out.write_text("{not json")
    bad = subprocess.run(script, capture_output=True, text=True)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and out.read_text() == "{not json"


def test_tables_against_different_baselines_are_different_runs(tiny_config, tmp_path):
    tiny_config.wandb.mode = "offline"
    for baseline in ("a", "b"):
        rows = [{"point": p, "delta": 0.0 if p == baseline else 1.0} for p in ("a", "b")]
        tracking.log_table(tiny_config, tmp_path, "grid", rows, baseline)
    wandb.teardown()
    runs = [tracking.offline_export(d) for d in sorted((tmp_path / "wandb").glob("offline-run-*"))]
    assert sorted(r["name"] for r in runs) == ["grid-vs-a", "grid-vs-b"]
    assert all(r["job_type"] == "ablation-table" and r["config"]["baseline"] == r["name"][-1] for r in runs)


class _FailingRun:
    def __init__(self):
        self.finished = False

    def log(self, *args, **kwargs):
        raise OSError("disk full")

    def define_metric(self, *args, **kwargs):
        pass

    def finish(self):
        self.finished = True


def test_failures_warn_and_go_quiet(tiny_config, tmp_path, monkeypatch):
    ms = members.members_of(tiny_config)
    monkeypatch.setattr(wandb, "init", lambda **kw: (_ for _ in ()).throw(RuntimeError("no network")))
    with pytest.warns(UserWarning, match="W&B init failed.*no network"):
        writer = tracking.WandbWriter(tiny_config, ms, tmp_path)
    writer.write([{"member": 0, "fold": 0, "seed": 0, "epoch": 1, "train_loss": 1.0}])  # silently nothing
    writer.close()

    runs = []
    monkeypatch.setattr(wandb, "init", lambda **kw: runs.append(_FailingRun()) or runs[-1])
    writer = tracking.WandbWriter(tiny_config, ms, tmp_path)
    with pytest.warns(UserWarning, match="W&B log failed.*disk full"):
        writer.write([{"member": 1, "fold": 1, "seed": 0, "epoch": 1, "train_loss": 1.0}])
    assert writer.runs == [] and all(r.finished for r in runs)
    writer.write_figures(lambda i: {"x": Figure()})  # no runs left: no further warnings or errors
    writer.close()


def test_online_falls_back_to_offline(tiny_config, tmp_path, monkeypatch):
    modes = []

    def init(**kw):
        modes.append(kw["mode"])
        if kw["mode"] == "online":
            raise wandb.errors.UsageError("api_key not configured")
        return _FailingRun()

    monkeypatch.setattr(wandb, "init", init)
    tiny_config.wandb.mode = "online"
    with pytest.warns(UserWarning, match="logging offline instead"):
        writer = tracking.WandbWriter(tiny_config, members.members_of(tiny_config), tmp_path)
    assert modes == ["online", "offline", "offline"] and len(writer.runs) == 2


def test_training_survives_a_broken_wandb(tiny_config, tmp_path, monkeypatch):
    monkeypatch.setattr(wandb, "init", lambda **kw: _FailingRun())
    tiny_config.wandb.mode = "offline"
    tiny_config.train.epochs = 1
    with pytest.warns(UserWarning, match="W&B log failed"):
        summary = train.train_and_evaluate(tiny_config, tmp_path, progress=False)
    assert len(summary["members"]) == 2 and len(read_jsonl(tmp_path / "metrics.jsonl")) == 2


def test_resumed_run_reuses_run_ids(tiny_config, tmp_path, monkeypatch):
    seen = []
    monkeypatch.setattr(wandb, "init", lambda **kw: seen.append(kw["id"]) or _FailingRun())
    ms = members.members_of(tiny_config)
    tracking.WandbWriter(tiny_config, ms, tmp_path).close()
    tracking.WandbWriter(tiny_config, ms, tmp_path, resume=True).close()
    tracking.WandbWriter(tiny_config, ms, tmp_path).close()  # a fresh start gets new runs
    assert seen[:2] == seen[2:4] and not set(seen[4:]) & set(seen[:2])


def test_unreachable_server_falls_back_to_offline_runs_that_hold_the_history(tiny_config, tmp_path, monkeypatch):
    # A closed port on this machine: the online init fails fast; the offline fallback must then really record.
    monkeypatch.setenv("WANDB_BASE_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    monkeypatch.setenv("WANDB_INIT_TIMEOUT", "5")
    tiny_config.wandb.mode = "online"
    tiny_config.train.epochs = 1
    with pytest.warns(UserWarning, match="could not start online.*logging offline instead"):
        train.train_and_evaluate(tiny_config, tmp_path, progress=False)
    wandb.teardown()
    ids = json.loads((tmp_path / tracking.RUN_IDS).read_text())
    for tag in ("fold0_seed0", "fold1_seed0"):
        (run_dir,) = (tmp_path / "wandb").glob(f"offline-run-*-{ids[tag]}")
        history, _ = tracking.offline_run(run_dir)
        assert [r["_step"] for r in history if "train/loss" in r] == [1]
