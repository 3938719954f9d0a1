"""`fmnist-jax evaluate`: restored members reproduce the run's own test metrics; confusion matrix and per-class."""

import json

import numpy as np
import pytest
from conftest import tiny

from fmnist_jax import evaluate, run
from fmnist_jax.cmdline import UsageError


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_data_dir):
    config, workdir = tiny(tiny_data_dir), tmp_path_factory.mktemp("trained")
    config.train.epochs = 2
    return workdir, run.train_and_evaluate(config, workdir, progress=False)


def test_evaluate_all_members(trained, capsys):
    workdir, summary = trained
    assert evaluate.main(["--workdir", str(workdir)]) == 0
    report = json.loads((workdir / "eval" / "evaluation.json").read_text())
    assert (workdir / "eval" / "confusion.png").stat().st_size > 10_000
    assert report["epoch"] == 2 and report["data_digest"] == summary["data_digest"]
    np.testing.assert_allclose(
        [m["test_accuracy"] for m in report["members"]], [m["test_accuracy"] for m in summary["members"]], rtol=1e-6
    )
    np.testing.assert_allclose(report["test_accuracy"]["mean"], summary["test_accuracy"]["mean"], rtol=1e-6)
    confusion = np.array(report["confusion"])
    assert confusion.shape == (10, 10) and (confusion.sum(1) == 2 * 10).all()  # 2 members x 10 test images per class
    for m in report["members"]:
        cm = np.array(m["confusion"])
        np.testing.assert_allclose(np.trace(cm) / cm.sum(), m["test_accuracy"], rtol=1e-6)
        np.testing.assert_allclose(list(m["per_class_accuracy"].values()), np.diag(cm) / cm.sum(1))
    out = capsys.readouterr().out
    assert "test accuracy over 2 member(s)" in out and "Ankle boot" in out


def test_evaluate_one_member_at_a_step(trained):
    workdir, summary = trained
    assert evaluate.main(["--workdir", str(workdir), "--member", "1,0", "--step", "2"]) == 0
    report = json.loads((workdir / "eval" / "evaluation_fold1_seed0_epoch2.json").read_text())
    assert [(m["fold"], m["seed"]) for m in report["members"]] == [(1, 0)]
    np.testing.assert_allclose(report["members"][0]["test_accuracy"], summary["members"][1]["test_accuracy"], rtol=1e-6)


def test_flip_averaging_can_be_switched_at_evaluation(trained):
    workdir, summary = trained
    _, _, _, plain, plain_logits, _ = evaluate.test_logits(workdir)
    _, _, _, _, tta_logits, _ = evaluate.test_logits(workdir, tta_flip=True)
    assert not np.allclose(plain_logits, tta_logits, atol=1e-4)
    np.testing.assert_allclose(plain["accuracy"], [m["test_accuracy"] for m in summary["members"]], rtol=1e-6)
    assert evaluate.main(["--workdir", str(workdir), "--tta_flip", "true"]) == 0
    report = json.loads((workdir / "eval" / "evaluation_tta_true.json").read_text())
    assert report["tta_flip"] is True
    np.testing.assert_allclose(
        [m["test_accuracy"] for m in report["members"]],
        (tta_logits.argmax(-1) == run.setup(evaluate.load_trained(workdir)[0]).dataset.test_labels).mean(-1),
        rtol=1e-6,
    )


@pytest.mark.parametrize(
    "argv, match",
    [
        (["--member", "1"], "FOLD,SEED"),
        (["--member", "2,0"], r"no member fold=2 seed=0"),
        (["--step", "9"], "no checkpoint for epoch 9"),
    ],
)
def test_bad_requests_are_usage_errors(trained, argv, match):
    with pytest.raises(UsageError, match=match):
        evaluate.main(["--workdir", str(trained[0])] + argv)


def test_workdir_without_checkpoint(tmp_path):
    with pytest.raises(UsageError, match="no checkpoints in"):
        evaluate.main(["--workdir", str(tmp_path)])
