"""Export: the artifact reproduces the Flax model for any batch size, and loads with jax + numpy alone."""

import dataclasses
import json
import subprocess
import sys
import textwrap

import chex
import jax
import numpy as np
import pytest

from deploy_helpers import tiny_member
from fmnist_jax import data, errors, exporter, models, train
from fmnist_jax.commands import export as export_cmd
from fmnist_jax.errors import Diverged
from fmnist_jax.artifact import MANIFEST_FILE, MODEL_FILE, ExportedModel, ModelFileError


@pytest.fixture
def exported(tiny_config, tmp_path):
    trained, test_images = tiny_member(tiny_config)
    manifest = exporter.export_model(trained, tmp_path / "model")
    return trained, test_images, tmp_path / "model", manifest


def test_matches_flax_for_any_batch_size(exported):
    trained, test_images, out, _ = exported
    loaded = ExportedModel.load(out)
    flax_fn = jax.jit(exporter.inference_fn(trained.config, trained.model, trained.variables))
    rng = np.random.default_rng(0)
    for n in (1, 5, 300):  # 300: two chunks, the second padded from 44 to 64
        x = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        chex.assert_trees_all_close(loaded.logits(x), np.asarray(flax_fn(x)), atol=1e-5, rtol=1e-5)
    chex.assert_trees_all_close(loaded.logits(test_images), np.asarray(flax_fn(test_images)), atol=1e-5, rtol=1e-5)
    probs = loaded.probabilities(test_images[:7])
    chex.assert_shape(probs, (7, 10))
    np.testing.assert_allclose(probs.sum(-1), 1.0, rtol=1e-5)


def test_manifest_describes_the_model(exported):
    trained, _, out, manifest = exported
    assert json.loads((out / MANIFEST_FILE).read_text()) == manifest
    assert manifest["classes"] == list(data.CLASS_NAMES)
    assert manifest["model"]["params"] == models.count_params(trained.model)
    assert manifest["model"]["widths"] == [8, 16]
    assert manifest["member"]["fold"] == 1 and manifest["data_digest"] == trained.info["data_digest"]
    assert manifest["input"]["shape"] == ["batch", 28, 28] and manifest["preprocessing"]["normalize"]["std"] == 0.5
    assert set(manifest["platforms"]) == {"cpu", "cuda"}


def test_tampered_or_missing_files_are_refused(exported, tmp_path):
    _, _, out, _ = exported
    with pytest.raises(ModelFileError, match="not an exported model folder"):
        ExportedModel.load(tmp_path / "nowhere")
    raw = bytearray((out / MODEL_FILE).read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    (out / MODEL_FILE).write_bytes(bytes(raw))
    with pytest.raises(ModelFileError, match="does not match the manifest"):
        ExportedModel.load(out)


BLOCKED_LOADER = textwrap.dedent("""
    import importlib.abc, sys
    BLOCKED = {"flax", "optax", "orbax", "ml_collections", "chex", "PIL", "fastapi"}

    class Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path, target=None):
            if name.split(".")[0] in BLOCKED or (name.startswith("fmnist_jax.") and name != "fmnist_jax.artifact"):
                raise ImportError(f"blocked import of {name}")

    sys.meta_path.insert(0, Block())
    import numpy as np
    from fmnist_jax.artifact import ExportedModel
    model = ExportedModel.load(sys.argv[1])
    np.save(sys.argv[3], model.logits(np.load(sys.argv[2])))
    print(sorted(m for m in sys.modules if m.startswith("fmnist_jax")))
""")


def test_loader_needs_only_jax_and_numpy(exported, tmp_path):
    trained, test_images, out, _ = exported
    np.save(tmp_path / "x.npy", test_images[:9])
    proc = subprocess.run(
        [sys.executable, "-c", BLOCKED_LOADER, str(out), str(tmp_path / "x.npy"), str(tmp_path / "y.npy")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "['fmnist_jax', 'fmnist_jax.artifact']"
    want = jax.jit(exporter.inference_fn(trained.config, trained.model, trained.variables))(test_images[:9])
    chex.assert_trees_all_close(np.load(tmp_path / "y.npy"), np.asarray(want), atol=1e-5, rtol=1e-5)


def test_export_command_on_a_trained_run(tiny_config, tmp_path, capsys):
    workdir, out = tmp_path / "run", tmp_path / "model"
    summary = train.train_and_evaluate(tiny_config, workdir, progress=False)
    assert export_cmd.main(["--workdir", str(workdir), "--out", str(out)]) == 0
    manifest = json.loads((out / MANIFEST_FILE).read_text())
    best = max(summary["members"], key=lambda m: m["val_accuracy"])
    assert (manifest["member"]["fold"], manifest["member"]["seed"]) == (best["fold"], best["seed"])
    assert manifest["test_accuracy"] == best["test_accuracy"]
    check = manifest["check"]
    assert check["test_images"] == 100 and check["max_abs_logit_diff_vs_flax"] < 1e-4
    assert abs(check["exported_test_accuracy"] - best["test_accuracy"]) <= 0.01 + 1e-9  # at most one image apart
    assert "check on 100 test images" in capsys.readouterr().out

    other = summary["members"][1 - summary["members"].index(best)]
    assert (
        export_cmd.main(
            ["--workdir", str(workdir), "--out", str(out), "--member", f"{other['fold']},{other['seed']}", "--nocheck"]
        )
        == 0
    )
    assert json.loads((out / MANIFEST_FILE).read_text())["member"]["fold"] == other["fold"]
    with pytest.raises(errors.RunError, match="no member fold=7 seed=0"):
        export_cmd.main(["--workdir", str(workdir), "--out", str(out), "--member", "7,0"])
    with pytest.raises(errors.RunError, match="no readable summary.json"):
        export_cmd.main(["--workdir", str(tmp_path / "empty"), "--out", str(out)])


def test_non_finite_weights_are_neither_exported_nor_served(exported, tmp_path):
    trained = exported[0]
    params = jax.tree.map(np.array, trained.variables["params"])
    params["Dense_0"]["kernel"][0, 0] = np.nan
    poisoned = dataclasses.replace(trained, variables={**trained.variables, "params": params})
    with pytest.raises(Diverged, match="non-finite weights .*not exporting"):
        exporter.export_model(poisoned, tmp_path / "nan_model")
    assert not (tmp_path / "nan_model").exists()
    # An artifact with NaN weights made without that check is refused at load: predict and serve never answer NaN.
    serialized, manifest = exporter.build_artifact(poisoned)
    (tmp_path / "forged").mkdir()
    (tmp_path / "forged" / MODEL_FILE).write_bytes(serialized)
    exporter.write_manifest(tmp_path / "forged", manifest)
    with pytest.raises(ModelFileError, match="non-finite logits"):
        ExportedModel.load(tmp_path / "forged")
