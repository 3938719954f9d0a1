"""A stop that Python swallows (raised inside a gc callback) still stops the run."""

import gc
import signal
import sys
from pathlib import Path

import pytest
from conftest import tiny_flags

from fmnist_jax import cli, stops

DEFAULT = str(Path(__file__).resolve().parents[1] / "configs" / "default.py")


@pytest.fixture
def sigterm_in_a_gc_callback(monkeypatch):
    """Deliver one SIGTERM inside the first gc callback run while `stops` handles SIGTERM, as JAX's
    `_xla_gc_callback` once took one; yields the exceptions Python printed as "Exception ignored"."""
    swallowed: list[BaseException] = []
    monkeypatch.setattr(sys, "unraisablehook", lambda u: swallowed.append(u.exc_value))

    def callback(phase, info):
        if phase == "start" and not swallowed and signal.getsignal(signal.SIGTERM) is stops._on_sigterm:
            signal.raise_signal(signal.SIGTERM)

    gc.callbacks.append(callback)
    try:
        yield swallowed
    finally:
        gc.callbacks.remove(callback)


def test_a_swallowed_sigterm_is_raised_again_by_check(sigterm_in_a_gc_callback):
    before = signal.getsignal(signal.SIGTERM)
    with stops.sigterm_unwinds():
        stops.check()  # nothing pending
        gc.collect()  # the SIGTERM lands in the callback, and Python drops its KeyboardInterrupt
        assert [repr(e) for e in sigterm_in_a_gc_callback] == ["KeyboardInterrupt('SIGTERM')"]
        with pytest.raises(KeyboardInterrupt, match="SIGTERM"):
            stops.check()
    stops.check()  # cleared on the way out: the next command in this process starts clean
    assert signal.getsignal(signal.SIGTERM) is before


def test_a_training_whose_sigterm_was_swallowed_stops_with_143(
    tiny_data_dir, tmp_path, sigterm_in_a_gc_callback, capsys
):
    """Before `stops.check()` ran once a step, this run trained all its epochs and exited 0."""
    args = ["train", "--config", DEFAULT, "--workdir", str(tmp_path), "--noprogress", *tiny_flags(tiny_data_dir)]
    assert cli.main(args) == 143
    assert [repr(e) for e in sigterm_in_a_gc_callback] == ["KeyboardInterrupt('SIGTERM')"]
    assert capsys.readouterr().err.splitlines()[-1] == "fmnist-jax train: stopped by SIGTERM"
    assert not (tmp_path / "summary.json").exists()
