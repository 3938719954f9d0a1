"""How a run stops: SIGTERM unwinds like Ctrl-C, a stop inside a save waits for it, and a swallowed stop comes back.

SIGTERM (a scheduler's, a session's or `kill`'s stop) raises KeyboardInterrupt("SIGTERM"), so that a run's
`finally` blocks still wait for pending checkpoint writes and close its W&B runs; Python's default for SIGTERM
skips them all. Python runs a signal handler between any two bytecodes, also inside a gc callback or a
`__del__`, where an exception is printed as "Exception ignored" and dropped: JAX's `_xla_gc_callback` ate a
study's SIGTERM so, and the run trained on. The handler therefore records the stop before raising it, and the
training loops call `check()` once a step, which raises it again if it never unwound.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from typing import Any

_pending: str | None = None


def _on_sigterm(signum: int, frame: Any) -> None:
    global _pending
    _pending = "SIGTERM"
    raise KeyboardInterrupt("SIGTERM")


def check() -> None:
    """Raise a stop that was requested but swallowed where it landed; a global read, free at every step."""
    if _pending is not None:
        raise KeyboardInterrupt(_pending)


@contextlib.contextmanager
def sigterm_unwinds() -> Iterator[None]:
    """For a command's duration, SIGTERM raises KeyboardInterrupt("SIGTERM"). A stop pending from an earlier
    command in the same process (tests run many) is cleared on the way in and out."""
    global _pending
    _pending = None
    before = signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, before)
        _pending = None


@contextlib.contextmanager
def deferred() -> Iterator[None]:
    """Hold Ctrl-C and SIGTERM until the block ends, then deliver the first one to its own handler.

    A KeyboardInterrupt that lands inside Orbax's synchronous part of a save leaves the step without its commit
    marker (seen once in tests/test_ablation.py's SIGTERM test): resume skips it, but the epoch is lost. Deferred,
    the stop lands a save later (a fraction of a second at this size) and every step on disk is whole. Signal
    handlers belong to the main thread; elsewhere nothing is deferred.
    """
    main = threading.current_thread() is threading.main_thread()
    held = [s for s in (signal.SIGINT, signal.SIGTERM) if main and signal.getsignal(s) is not None]
    caught: list[int] = []
    previous = {s: signal.signal(s, lambda n, _: caught.append(n)) for s in held}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        if caught:
            signal.raise_signal(caught[0])
