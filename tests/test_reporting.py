"""`fmnist-jax report`: run and ablation reports on tiny generated data, and the model summary table."""

import json
import shutil

import chex
import numpy as np
import pytest
from PIL import Image

from fmnist_jax import ablation, data, models, reporting, train
from fmnist_jax.commands import report as report_cmd
from fmnist_jax.commands.parsing import UsageError


def assert_png(path):
    with Image.open(path) as im:
        assert im.format == "PNG" and min(im.size) > 100, path


def test_run_report_matches_the_run(tiny_config, tmp_path):
    workdir = tmp_path / "run"
    summary = train.train_and_evaluate(tiny_config, workdir, progress=False)
    assert report_cmd.main(["--workdir", str(workdir)]) == 0
    out = workdir / "report"
    for name in ("learning_curves.png", "confusion.png", "predictions.png"):
        assert_png(out / name)
    # The report re-evaluates the checkpoint: its pooled confusion must reproduce the run's test accuracy.
    counts = np.array(json.loads((out / "confusion.json").read_text())["counts"])
    assert counts.sum() == len(summary["members"]) * 100
    chex.assert_trees_all_close(np.trace(counts) / counts.sum(), summary["test_accuracy"]["mean"], atol=1e-6)
    md = (out / "report.md").read_text()
    t = summary["test_accuracy"]
    assert f"{100 * t['mean']:.2f} ± {100 * t['std']:.2f}%" in md
    assert "![confusion](confusion.png)" in md and f"| {summary['params']:,} |" in md

    # Without a checkpoint the report still has the curves and says what is missing.
    bare = tmp_path / "bare"
    shutil.copytree(workdir, bare, ignore=shutil.ignore_patterns("checkpoints", "report"))
    assert report_cmd.main(["--workdir", str(bare), "--out", str(tmp_path / "bare_report")]) == 0
    assert_png(tmp_path / "bare_report" / "learning_curves.png")
    assert not (tmp_path / "bare_report" / "confusion.png").exists()
    assert "No checkpoint" in (tmp_path / "bare_report" / "report.md").read_text()


def test_ablation_report_uses_the_ablation_table(tiny_config, tmp_path):
    tiny_config.cv.folds = (0,)
    tiny_config.train.epochs = 2
    points = ablation.expand(tiny_config, [("flip", {"augment": "flip_lr"}), ("none", {"augment": "none"})])
    ablation.run_grid(points, tmp_path, progress=False)
    out = tmp_path / "results"  # the table apart from the runs, as `ablate --out` writes it
    ablation.write_results("tiny", points, tmp_path, out, "flip", "test")
    table, baseline, _ = reporting.read_ablation(out)
    assert baseline == "flip" and [r["point"] for r in table] == ["flip", "none"]
    assert isinstance(table[0]["test_acc_mean"], float) and isinstance(table[0]["params"], int)
    assert report_cmd.main(["--workdir", str(out)]) == 0
    for name in ("ablation.png", "deltas.png", "ablation_curves.png"):  # curves from the runs, found via grid.json
        assert_png(out / "report" / name)
    md = (out / "report" / "report.md").read_text()
    assert "## Ablation: tiny" in md and "| **flip** |" in md


@pytest.mark.parametrize("batch_norm,residual", [(False, False), (True, True)])
def test_model_table_adds_up(batch_norm, residual):
    model = models.CNN(widths=(8, 8, 16), depths=(1, 1, 1), batch_norm=batch_norm, residual=residual)
    rows = reporting.model_table(model)
    layers, total = rows[:-1], rows[-1]
    assert [r["layer"] for r in layers] == ["ConvBlock_0", "ConvBlock_1", "ConvBlock_2", "Dense_0", "(pooling)"]
    # hand counts: 3x3 conv weights (+ bias without BN, + BN scale and offset with it), dense 16x10 + 10
    hand = [
        9 * 1 * 8 + 8 * (2 if batch_norm else 1),
        9 * 8 * 8 + 8 * (2 if batch_norm else 1),
        9 * 8 * 16 + 16 * (2 if batch_norm else 1),
        16 * 10 + 10,
        0,
    ]
    assert [r["params"] for r in layers] == hand
    assert total["params"] == models.count_params(model) == sum(hand)
    assert total["flops"] == models.flops_per_image(model)
    assert [r["output"] for r in layers[:4]] == [(28, 28, 8), (14, 14, 8), (7, 7, 16), (10,)]
    assert layers[1]["op"].endswith("+ skip") == residual and ("BN" in layers[0]["op"]) == batch_norm
    # A 3x3 conv costs at least its multiply-adds; XLA adds the bias/BN/ReLU elementwise work on top.
    macs = 28 * 28 * 9 * 1 * 8
    assert 2 * macs <= layers[0]["flops"] <= 2 * macs + 10 * 28 * 28 * 8
    assert layers[4]["flops"] > 0


def test_markdown_table_formats_cells():
    md = reporting.markdown_table([{"a": 12345, "b": 0.123456, "c": (7, 7), "d": None, "e": 36794160.0}])
    assert md.splitlines() == [
        "| a | b | c | d | e |",
        "|---|---|---|---|---|",
        "| 12,345 | 0.1235 | 7 × 7 |  | 36,794,160 |",
    ]


def test_top_confusions_orders_mistakes():
    counts = np.diag(np.full(10, 50))
    counts[6, 0], counts[4, 2], counts[0, 6] = 9, 5, 3
    top = reporting.top_confusions(counts, 3)
    assert [(r["true"], r["predicted"], r["count"]) for r in top] == [
        ("Shirt", "T-shirt/top", 9),
        ("Coat", "Pullover", 5),
        ("T-shirt/top", "Shirt", 3),
    ]


def test_write_eda(tiny_data_dir, tmp_path):
    dataset = data.load(str(tiny_data_dir), verify=False)
    for path in reporting.write_eda(dataset, tmp_path):
        assert_png(path)


def test_usage_errors(tmp_path):
    with pytest.raises(UsageError, match="neither a run dir"):
        report_cmd.main(["--workdir", str(tmp_path)])
    with pytest.raises(UsageError, match="--eda needs --out"):
        report_cmd.main(["--eda"])
    with pytest.raises(UsageError, match="missing --workdir"):
        report_cmd.main([])


def test_read_ablation_keeps_point_names_as_text(tmp_path):
    row = {c: 0.5 for c in ablation.COLUMNS} | {
        "point": "2",
        "overrides": "model.depths=2",
        "params": 900,
        "members": 2,
    }
    ablation.write_csv([row], tmp_path / "table.csv")
    (tmp_path / "table.md").write_text("# Ablation: d\n\nBaseline: **2**. ...\n")
    table, baseline, _ = reporting.read_ablation(tmp_path)
    assert (
        baseline == "2" and table[0]["point"] == "2" and table[0]["params"] == 900 and table[0]["val_acc_mean"] == 0.5
    )
