"""Files the project writes: JSON strict (no NaN/inf), every file atomic (never a truncated one)."""

import json
import math
import os
from pathlib import Path

import pytest

from matplotlib.figure import Figure

from fmnist_jax import plots
from fmnist_jax.writers import JsonlWriter, read_jsonl, write_json, write_text


def test_write_json_is_strict_and_leaves_the_old_file_on_failure(tmp_path):
    path = tmp_path / "summary.json"
    write_json(path, {"accuracy": 0.9})
    with pytest.raises(ValueError, match="Out of range float"):
        write_json(path, {"accuracy": math.nan})
    assert json.loads(path.read_text()) == {"accuracy": 0.9}
    assert sorted(os.listdir(tmp_path)) == ["summary.json"]  # no temp file left behind


def test_write_json_replaces_atomically(tmp_path, monkeypatch):
    path = tmp_path / "config.json"
    write_json(path, {"v": 1})
    seen = []
    real_replace = os.replace

    def replace(src, dst):
        seen.append(json.loads(Path(src).read_text()))
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    write_json(path, {"v": 2})
    assert seen == [{"v": 2}] and json.loads(path.read_text()) == {"v": 2}  # complete before it takes the name


def test_jsonl_rows_are_strict(tmp_path):
    w = JsonlWriter(tmp_path / "m.jsonl")
    w.write([{"epoch": 1, "loss": 0.5}])
    with pytest.raises(ValueError):
        w.write([{"epoch": 2, "loss": math.inf}])
    w.close()
    assert read_jsonl(tmp_path / "m.jsonl") == [{"epoch": 1, "loss": 0.5}]


def test_json_files_get_the_usual_mode(tmp_path):
    """Not mkstemp's 0600: results must be readable by the other people and services that read them."""
    write_json(tmp_path / "a.json", {"x": 1})
    (tmp_path / "b.json").write_text("{}")  # what a plain open() gives under this umask
    assert (tmp_path / "a.json").stat().st_mode & 0o777 == (tmp_path / "b.json").stat().st_mode & 0o777


def test_text_is_utf8_and_a_failed_figure_keeps_the_old_one(tmp_path, monkeypatch):
    write_text(tmp_path / "table.md", "93.72 ± 0.18 − 0.23\n")  # the tables' signs, whatever the locale
    assert (tmp_path / "table.md").read_bytes() == "93.72 ± 0.18 − 0.23\n".encode()
    fig = Figure()
    fig.subplots().plot([0, 1])
    plots.save(fig, tmp_path / "chart.png")
    before = (tmp_path / "chart.png").read_bytes()
    assert before.startswith(b"\x89PNG")

    def killed(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", killed)  # interrupted after rendering, before the rename
    with pytest.raises(KeyboardInterrupt):
        plots.save(fig, tmp_path / "chart.png")
    assert (tmp_path / "chart.png").read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["chart.png", "table.md"]  # no temp file left behind
