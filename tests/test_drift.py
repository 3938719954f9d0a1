"""Drift statistics, references and scores: clean images stay under the threshold, shifted ones pass it."""

import json

import numpy as np
import pytest
from conftest import SHIFTS, batch

from fmnist_jax import drift


def probabilities(x: np.ndarray) -> np.ndarray:
    """A fixed stand-in model: classes by brightness band, so its answers move with its inputs as a CNN's do."""
    m = x.reshape(len(x), -1).mean(1, keepdims=True)
    logits = -((m - 10.0 * np.arange(10)) ** 2) / 50.0
    e = np.exp(logits - logits.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


@pytest.fixture(scope="module")
def ref():
    x = batch(2000, 0)
    return drift.reference(x, probabilities(x), "generated")


def scores(ref, x, method="psi"):
    threshold = 0.2 if method == "psi" else 0.15
    return drift.assess(ref, drift.statistics(x, probabilities(x)), method, threshold, min_images=100)


def test_statistics_of_known_images():
    black = np.zeros((1, 28, 28), np.uint8)
    framed = np.zeros((1, 28, 28), np.uint8)
    framed[0, :2], framed[0, -2:], framed[0, :, :2], framed[0, :, -2:] = 255, 255, 255, 255
    s = drift.image_statistics(np.concatenate([black, framed]))
    np.testing.assert_allclose(s["mean_intensity"], [0, (784 - 24 * 24) / 784], rtol=1e-6)
    np.testing.assert_allclose(s["ink_fraction"], [0, (784 - 24 * 24) / 784], rtol=1e-6)
    np.testing.assert_allclose(s["border_brightness"], [0, 1])
    assert drift.psi([0.5, 0.5], [0.5, 0.5]) == 0
    assert drift.psi([0.9, 0.1], [0.5, 0.5]) == pytest.approx(0.4 * np.log(1.8) - 0.4 * np.log(0.2))


def test_reference_is_strict_json_and_checked(ref):
    back = json.loads(json.dumps(ref, allow_nan=False))
    assert drift.check_reference(back) == ref
    assert set(ref["features"]) == set(drift.FEATURES) and ref["images"] == 2000
    assert sum(ref["class_mix"]) == pytest.approx(1) and len(ref["confidence_by_class"]) == 10
    for f in ref["features"].values():
        assert sum(f["fractions"]) == pytest.approx(1) and len(f["quantiles"]) == drift.QUANTILES
    with pytest.raises(drift.DriftError, match="format"):
        drift.check_reference({"format": "other"})
    with pytest.raises(drift.DriftError, match="lacks contrast"):
        drift.check_reference({**ref, "features": {k: v for k, v in ref["features"].items() if k != "contrast"}})
    with pytest.raises(drift.DriftError, match="at least 20 images"):
        drift.reference(batch(5, 0), probabilities(batch(5, 0)))


@pytest.mark.parametrize("method", drift.METHODS)
def test_clean_images_pass_and_shifted_ones_are_flagged(ref, method):
    clean = scores(ref, batch(500, 1), method)
    assert clean.ready and not clean.drifted, clean.score
    for name, shift in SHIFTS.items():
        shifted = scores(ref, shift(batch(500, 1)), method)
        assert shifted.drifted, (name, shifted.score)
        assert {"mean_intensity", "ink_fraction"} & set(shifted.over) or name == "darkened", (name, shifted.over)


def test_class_mix_change_alone_is_flagged(ref):
    x = batch(1000, 1)
    p = probabilities(x)
    skewed = np.flatnonzero(np.isin(p.argmax(1), p.argmax(1)[:3]) | (np.arange(len(x)) % 5 == 0))
    s = scores(ref, x[skewed])
    assert "class_mix" in s.over and s.drifted


def test_window_is_bounded_and_forgets(ref):
    w = drift.Window(ref, size=300, min_images=200)
    w.add(drift.statistics(batch(150, 1), probabilities(batch(150, 1))))
    assert not w.scores().ready and not w.scores().drifted
    dark = SHIFTS["darkened"](batch(300, 2))
    w.add(drift.statistics(dark, probabilities(dark)))
    s = w.scores()
    assert s.images == 300 and s.drifted  # the 150 clean images fell out
    w.add(drift.statistics(batch(1000, 3), probabilities(batch(1000, 3))))  # more than the window at once
    assert w.scores().images == 300 and not w.scores().drifted
    with pytest.raises(drift.DriftError, match="min_images"):
        drift.Window(ref, size=10, min_images=11)
