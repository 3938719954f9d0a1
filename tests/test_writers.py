"""JSON the project writes: strict (no NaN/inf) and atomic (never a truncated file)."""

import json
import math
import os
from pathlib import Path

import pytest

from fmnist_jax.writers import JsonlWriter, read_jsonl, write_json


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
