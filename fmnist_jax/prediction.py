"""Files -> predictions with an exported model: what `fmnist-jax predict` prints.

Every decodable file (PNG/JPEG of any size or mode, IDX or .npy batches; `fmnist_jax.images`)
is classified in one batch; a bad file is reported on its own while the others still get answers.
"""

from __future__ import annotations

import collections
from typing import Any

import numpy as np
from fmnist_jax import images
from fmnist_jax.artifact import ExportedModel, describe


def decode_files(paths: list[str], invert: images.Invert) -> tuple[list[tuple[str, np.ndarray]], list[dict[str, str]]]:
    """(file, images) for every readable file, and {file, error} for the rest."""
    ok, errors = [], []
    for p in paths:
        try:
            x = images.load(p, invert)
            if not len(x):  # an empty batch would otherwise pass silently, with no line and exit 0
                raise images.ImageError(f"{p}: holds no images")
            ok.append((p, x))
        except images.ImageError as e:
            errors.append({"file": p, "error": str(e)})
    return ok, errors


def predict_files(model: ExportedModel, paths: list[str], invert: images.Invert = "auto") -> dict[str, Any]:
    """{'predictions': [{file, index, class, probability, probabilities...}], 'errors': [{file, error}]}."""
    ok, errors = decode_files(paths, invert)
    batch = np.concatenate([x for _, x in ok]) if ok else np.zeros((0, 28, 28), np.uint8)
    described = iter(describe(model.probabilities(batch), model.classes))
    predictions = [{"file": p, "index": i, **next(described)} for p, x in ok for i in range(len(x))]
    return {"predictions": predictions, "errors": errors}


def format_text(result: dict[str, Any], top_k: int) -> str:
    """One line per image, `file` or `file[i]` for batches: the top-k classes with probabilities."""
    per_file = collections.Counter(r["file"] for r in result["predictions"])
    lines = []
    for r in result["predictions"]:
        ranked = sorted(r["probabilities"].items(), key=lambda kv: -kv[1])[:top_k]
        name = r["file"] if per_file[r["file"]] == 1 else f"{r['file']}[{r['index']}]"
        lines.append(f"{name}: " + "  ".join(f"{c} {100 * p:.1f}%" for c, p in ranked))
    return "\n".join(lines)
