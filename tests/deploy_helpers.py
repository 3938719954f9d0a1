"""Deployment test helpers: a trained-in-memory tiny member (no checkpoint needed), files that lie about their size,
an app on a real server at 127.0.0.1."""

import contextlib
import io
import socket
import struct
import threading
import time
import zlib

import httpx
import jax
import numpy as np
import uvicorn

from configs import default
from fmnist_jax import exporter, members, models, train


def tiny_member(config, member: int = 1) -> tuple[exporter.TrainedMember, np.ndarray]:
    """Member `member` of `config` after one epoch (so BatchNorm statistics are not the init ones), and test images."""
    exp = train.setup(config)
    state, _ = train.train_epoch(exp, train.init_state(exp), 0, progress=False)
    s = members.unstack(state, member)
    m = exp.members[member]
    trained = exporter.TrainedMember(
        config,
        exp.model,
        {"params": s.params, "batch_stats": s.batch_stats},
        {"fold": m.fold, "seed": m.seed, "data_digest": exp.dataset.digest},
    )
    return trained, exp.dataset.test_images


def export_untrained(out, seed: int = 0, reference_images: np.ndarray | None = None) -> None:
    """Export a small CNN with random weights to `out`: enough for tests of files and HTTP, no training.

    With `reference_images`, the manifest gets a drift reference computed on them (as `export` does).
    """
    config = default.get_config()
    config.model.widths, config.model.depths = (8, 16), (1, 1)
    model = models.build(config)
    variables = models.init_variables(model, jax.random.key(seed))
    trained = exporter.TrainedMember(config, model, variables, {"fold": 0, "seed": seed})
    reference = None
    if reference_images is not None:
        reference = exporter.reference_statistics(trained, reference_images, "generated test images")
    exporter.export_model(trained, out, reference=reference)


def npy_header(shape: tuple[int, ...], descr: str = "|u1") -> bytes:
    """A .npy header claiming `shape`, with no data after it."""
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": descr, "fortran_order": False, "shape": shape})
    return buf.getvalue()


def idx_header(shape: tuple[int, ...]) -> bytes:
    """An IDX (unsigned bytes) header claiming `shape`, with no data after it."""
    return bytes([0, 0, 0x08, len(shape)]) + struct.pack(f">{len(shape)}I", *shape)


def png_header(width: int, height: int) -> bytes:
    """A PNG whose header claims a width x height RGBA picture, and no pixel data at all."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 6, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b"")


@contextlib.contextmanager
def running(app):
    """`app` on a real uvicorn server at a free port of 127.0.0.1; yields an httpx client and the port."""
    srv = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    thread = threading.Thread(target=srv.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    for _ in range(600):
        if srv.started:
            break
        time.sleep(0.05)
    assert srv.started, "uvicorn did not start within 30 s"
    port = sock.getsockname()[1]
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as client:
            yield client, port
    finally:
        srv.should_exit = True
        thread.join(timeout=10)
