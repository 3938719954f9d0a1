"""predict: files of every kind are classified, bad files are reported alone, output is text or JSON."""

import json

import numpy as np
import pytest
from PIL import Image

from conftest import make_images
from deploy_helpers import export_untrained, npy_header
from fmnist_jax import data, prediction, train
from fmnist_jax.commands import predict as predict_cmd
from fmnist_jax.commands.parsing import UsageError
from fmnist_jax.artifact import ExportedModel


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("predict") / "model"
    export_untrained(out)
    return out, make_images(np.arange(5), seed=0)


@pytest.fixture
def files(model_dir, tmp_path):
    """Two PNGs (one as dark-on-light RGB), a 3-image .npy batch, a text file and a missing path."""
    _, x = model_dir
    Image.fromarray(x[0]).save(tmp_path / "a.png")
    Image.fromarray(255 - x[1]).convert("RGB").save(tmp_path / "b_negative.png")
    np.save(tmp_path / "batch.npy", x[2:5])
    (tmp_path / "notes.txt").write_text("not an image")
    return [str(tmp_path / n) for n in ("a.png", "notes.txt", "b_negative.png", "batch.npy", "missing.png")]


def test_predict_files_matches_the_model(model_dir, files):
    out, x = model_dir
    model = ExportedModel.load(out)
    result = prediction.predict_files(model, files)
    assert [(r["file"].rsplit("/", 1)[1], r["index"]) for r in result["predictions"]] == [
        ("a.png", 0),
        ("b_negative.png", 0),
        ("batch.npy", 0),
        ("batch.npy", 1),
        ("batch.npy", 2),
    ]
    want = model.probabilities(x[:5])  # the negative was inverted back by `auto`
    got = np.array([[r["probabilities"][c] for c in data.CLASS_NAMES] for r in result["predictions"]])
    np.testing.assert_allclose(got, want, rtol=1e-5)
    assert [r["class"] for r in result["predictions"]] == [data.CLASS_NAMES[k] for k in want.argmax(-1)]
    assert [e["file"].rsplit("/", 1)[1] for e in result["errors"]] == ["notes.txt", "missing.png"]
    assert "not a PNG/JPEG" in result["errors"][0]["error"] and "cannot be read" in result["errors"][1]["error"]


def test_a_file_over_the_limits_is_reported_alone(model_dir, files, tmp_path):
    """A header claiming a million images is refused from the header (100,000 at most), the other file answered."""
    out, x = model_dir
    (tmp_path / "huge.npy").write_bytes(npy_header((10**6, 28, 28)))
    huge = str(tmp_path / "huge.npy")
    result = prediction.predict_files(ExportedModel.load(out), [files[0], huge])
    assert [r["file"] for r in result["predictions"]] == [files[0]]
    assert result["errors"] == [{"file": huge, "error": f"{huge}: 1000000 images are over the limit of 100000"}]


def test_an_empty_batch_is_an_error_not_silence(model_dir, files, tmp_path, capsys):
    out, _ = model_dir
    np.save(tmp_path / "empty.npy", np.zeros((0, 28, 28), np.uint8))
    assert predict_cmd.main(["--model", str(out), str(tmp_path / "empty.npy")]) == 1
    assert "empty.npy: holds no images" in capsys.readouterr().err


def test_command_text_and_json(model_dir, files, capsys):
    out, _ = model_dir
    assert predict_cmd.main(["--model", str(out), *files]) == 1  # bad files make the exit code 1 ...
    text, err = capsys.readouterr()
    lines = text.splitlines()
    assert len(lines) == 5 and lines[0].startswith(files[0] + ": ") and lines[2].startswith(files[3] + "[0]: ")
    assert lines[0].count("%") == 3 and "notes.txt" in err and "missing.png" in err
    assert predict_cmd.main(["--model", str(out), "--json", "--top_k", "1", files[0], files[3]]) == 0  # ... good ones 0
    doc = json.loads(capsys.readouterr().out)
    assert len(doc["predictions"]) == 4 and doc["errors"] == [] and doc["model"] == {"fold": 0, "seed": 0}
    assert set(doc["predictions"][0]) >= {"file", "index", "class", "class_index", "probability", "probabilities"}


def test_invert_flag_changes_the_input(model_dir, files, capsys):
    out, x = model_dir
    predict_cmd.main(["--model", str(out), "--json", "--invert", "no", files[2]])
    got = json.loads(capsys.readouterr().out)["predictions"][0]["probabilities"]
    want = ExportedModel.load(out).probabilities(255 - x[1:2])[0]
    np.testing.assert_allclose([got[c] for c in data.CLASS_NAMES], want, rtol=1e-5)


def test_usage_errors(model_dir, files, tmp_path):
    out, _ = model_dir
    with pytest.raises(UsageError, match="exactly one of"):
        predict_cmd.main([files[0]])
    with pytest.raises(UsageError, match="no input files"):
        predict_cmd.main(["--model", str(out)])
    with pytest.raises(UsageError, match="not an exported model folder"):
        predict_cmd.main(["--model", str(tmp_path), files[0]])


def test_predict_from_a_trained_run(tiny_config, tmp_path, files, capsys):
    workdir = tmp_path / "run"
    train.train_and_evaluate(tiny_config, workdir, progress=False)
    assert predict_cmd.main(["--workdir", str(workdir), "--member", "0,0", "--json", files[0]]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert (doc["model"]["fold"], doc["model"]["seed"]) == (0, 0) and len(doc["predictions"]) == 1
