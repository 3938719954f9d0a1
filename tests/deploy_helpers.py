"""Deployment test helpers: a trained-in-memory tiny member (no checkpoint needed), files that lie about their size."""

import io
import struct
import zlib

import jax
import numpy as np

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


def export_untrained(out) -> None:
    """Export a small CNN with random weights to `out`: enough for tests of files and HTTP, no training."""
    config = default.get_config()
    config.model.widths, config.model.depths = (8, 16), (1, 1)
    model = models.build(config)
    variables = models.init_variables(model, jax.random.key(0))
    exporter.export_model(exporter.TrainedMember(config, model, variables, {"fold": 0, "seed": 0}), out)


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
