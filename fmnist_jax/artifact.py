"""Load and run an exported model with nothing but jax and numpy (no flax, no training code).

An export folder holds `model.jax` (a serialized `jax.export` StableHLO program with the
weights baked in; uint8 [batch, 28, 28] -> logits [batch, 10], scaling and normalisation
inside) and `manifest.json` (classes, preprocessing, provenance, accuracy). This file
imports nothing from fmnist_jax, so it can be copied next to the two files and used alone.

Batches are padded to the next power of two (chunks of at most `MAX_CHUNK`), so a server
that sees every batch size compiles only a handful of shapes.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import jax
import numpy as np
from jax import export

MODEL_FILE = "model.jax"
MANIFEST_FILE = "manifest.json"
FORMAT = "fmnist_jax.export/1"
MAX_CHUNK = 256


class ModelFileError(RuntimeError):
    """A missing, corrupt or incompatible export folder."""


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def describe(probabilities: np.ndarray, classes: list[str]) -> list[dict[str, Any]]:
    """Per image: predicted class name and index, its probability, and every class's probability."""
    return [
        {
            "class": classes[int(p.argmax())],
            "class_index": int(p.argmax()),
            "probability": float(p.max()),
            "probabilities": {c: float(q) for c, q in zip(classes, p)},
        }
        for p in probabilities
    ]


def _bucket(n: int) -> int:
    return 1 << max(0, n - 1).bit_length()


class ExportedModel:
    """A deserialized export: `logits(images_u8)` and `probabilities(images_u8)` on numpy batches."""

    def __init__(self, serialized: bytes, manifest: dict[str, Any]):
        self.manifest = manifest
        self.classes: list[str] = list(manifest["classes"])
        self.exported = export.deserialize(bytearray(serialized))
        self._call = jax.jit(self.exported.call)

    @classmethod
    def load(cls, directory: str | Path) -> ExportedModel:
        d = Path(directory)
        try:
            manifest = json.loads((d / MANIFEST_FILE).read_text())
            serialized = (d / MODEL_FILE).read_bytes()
        except (OSError, ValueError) as e:
            raise ModelFileError(f"{d}: not an exported model folder ({e}); make one with `fmnist-jax export`") from e
        if manifest.get("format") != FORMAT:
            raise ModelFileError(f"{d}: manifest format {manifest.get('format')!r}, expected {FORMAT!r}")
        digest = hashlib.sha256(serialized).hexdigest()
        if digest != manifest.get("model_sha256"):
            raise ModelFileError(
                f"{d / MODEL_FILE}: SHA-256 {digest[:12]}... does not match the manifest (corrupt or replaced)"
            )
        platform = jax.default_backend()
        platform = "cuda" if platform == "gpu" else platform
        if platform not in manifest.get("platforms", [platform]):
            raise ModelFileError(f"{d}: exported for {manifest['platforms']}, this JAX runs on {platform}")
        model = cls(serialized, manifest)
        if not np.isfinite(model.logits(np.zeros((1, 28, 28), np.uint8))).all():  # weights of a diverged run
            raise ModelFileError(
                f"{d / MODEL_FILE}: the model gives non-finite logits (NaN/inf weights); not serving it"
            )
        return model

    def logits(self, images: np.ndarray) -> np.ndarray:
        """uint8 [N, 28, 28] (Fashion-MNIST convention: light item on black) -> float32 [N, 10]."""
        images = np.asarray(images)
        if images.dtype != np.uint8 or images.ndim != 3 or images.shape[1:] != (28, 28):
            raise ValueError(f"expected uint8 [N, 28, 28], got {images.dtype} {list(images.shape)}")
        out = []
        for s in range(0, len(images), MAX_CHUNK):
            chunk = images[s : s + MAX_CHUNK]
            padded = np.zeros((_bucket(len(chunk)), 28, 28), np.uint8)
            padded[: len(chunk)] = chunk
            out.append(np.asarray(self._call(padded))[: len(chunk)])
        return np.concatenate(out) if out else np.zeros((0, len(self.classes)), np.float32)

    def probabilities(self, images: np.ndarray) -> np.ndarray:
        return softmax(self.logits(images).astype(np.float64)).astype(np.float32)
