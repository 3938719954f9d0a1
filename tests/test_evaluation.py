"""Restored runs (`fmnist_jax.restore`) and `fmnist-jax evaluate`: restored members reproduce the run's own test
metrics through the lean restore path; confusion matrix and per-class; predictions for one member or all."""

import json

import numpy as np
import pytest
from conftest import tiny

from fmnist_jax import data, errors, restore, train
from fmnist_jax.commands import evaluate as evaluate_cmd
from fmnist_jax.commands.parsing import UsageError


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_data_dir):
    config, workdir = tiny(tiny_data_dir), tmp_path_factory.mktemp("trained")
    config.train.epochs = 2
    return workdir, train.train_and_evaluate(config, workdir, progress=False)


def test_evaluate_all_members(trained, capsys):
    workdir, summary = trained
    assert evaluate_cmd.main(["--workdir", str(workdir)]) == 0
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
    assert evaluate_cmd.main(["--workdir", str(workdir), "--member", "1,0", "--step", "2"]) == 0
    report = json.loads((workdir / "eval" / "evaluation_fold1_seed0_epoch2.json").read_text())
    assert [(m["fold"], m["seed"]) for m in report["members"]] == [(1, 0)]
    np.testing.assert_allclose(report["members"][0]["test_accuracy"], summary["members"][1]["test_accuracy"], rtol=1e-6)


def test_flip_averaging_can_be_switched_at_evaluation(trained):
    workdir, summary = trained
    run = restore.restore(workdir)
    test = data.for_config(run.config, run.data_digest)
    plain, plain_logits = run.evaluate(test.test_images, test.test_labels)
    _, tta_logits = run.evaluate(test.test_images, test.test_labels, tta_flip=True)
    assert not np.allclose(plain_logits, tta_logits, atol=1e-4)
    np.testing.assert_allclose(plain["accuracy"], [m["test_accuracy"] for m in summary["members"]], rtol=1e-6)
    assert evaluate_cmd.main(["--workdir", str(workdir), "--tta_flip", "true"]) == 0
    report = json.loads((workdir / "eval" / "evaluation_tta_true.json").read_text())
    assert report["tta_flip"] is True
    np.testing.assert_allclose(
        [m["test_accuracy"] for m in report["members"]],
        (tta_logits.argmax(-1) == test.test_labels).mean(-1),
        rtol=1e-6,
    )
    _, shift_logits = run.evaluate(test.test_images, test.test_labels, tta_flip=True, tta_shift=1)
    assert evaluate_cmd.main(["--workdir", str(workdir), "--tta_flip", "true", "--tta_shift", "1"]) == 0
    report = json.loads((workdir / "eval" / "evaluation_tta_true_shift1.json").read_text())
    assert report["tta_shift"] == 1 and not np.allclose(shift_logits, tta_logits, atol=1e-4)
    np.testing.assert_allclose(
        [m["test_accuracy"] for m in report["members"]], (shift_logits.argmax(-1) == test.test_labels).mean(-1)
    )


@pytest.mark.parametrize(
    "argv, match",
    [
        (["--member", "1"], "FOLD,SEED"),
        (["--member", "2,0"], r"no member fold=2 seed=0"),
        (["--step", "9"], "no checkpoint for epoch 9"),
    ],
)
def test_bad_requests_are_one_line_errors(trained, argv, match):
    with pytest.raises((UsageError, errors.Error), match=match):
        evaluate_cmd.main(["--workdir", str(trained[0])] + argv)


def test_workdir_without_checkpoint(tmp_path):
    with pytest.raises(errors.NoCheckpoint, match="no checkpoints in"):
        evaluate_cmd.main(["--workdir", str(tmp_path)])


def test_predict_one_member_or_all_on_uint8_images(trained):
    workdir, summary = trained
    run = restore.restore(workdir)
    test = data.for_config(run.config, run.data_digest)
    probs = run.predict(test.test_images)
    assert probs.shape == (2, len(test.test_labels), 10)
    np.testing.assert_allclose(probs.sum(-1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(
        (probs.argmax(-1) == test.test_labels).mean(-1), [m["test_accuracy"] for m in summary["members"]], rtol=1e-6
    )
    one = run.select(1, 0).predict(test.test_images[:7])
    np.testing.assert_allclose(one[0], probs[1, :7], rtol=1e-5, atol=1e-6)  # the same member, alone or with others
