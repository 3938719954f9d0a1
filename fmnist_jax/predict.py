"""`fmnist-jax predict (--workdir RUN | --model DIR) [--invert auto|yes|no] [--json] FILE...`.

Classifies PNG/JPEG (any size or mode), IDX or .npy batches. With `--workdir` the chosen
member is exported in memory first, so predictions go through exactly the program that
`fmnist-jax export` writes. Every decodable file is classified in one batch; a bad file is
reported on its own and the exit code is 1, while the others still get their answers.
"""

from __future__ import annotations

import collections
import json
import sys
from typing import Any

import numpy as np
from absl import flags

from fmnist_jax import cmdline, images


def _define(fv: flags.FlagValues) -> None:
    flags.DEFINE_string("workdir", None, "A trained run (see --member).", flag_values=fv)
    flags.DEFINE_string("model", None, "An exported model folder (instead of --workdir).", flag_values=fv)
    flags.DEFINE_string(
        "member", None, "FOLD,SEED of the run's member (default: best validation accuracy).", flag_values=fv
    )
    flags.DEFINE_enum(
        "invert",
        "auto",
        images.INVERT_CHOICES,
        "Make dark-on-light pictures light-on-dark like Fashion-MNIST; auto: when the border is light.",
        flag_values=fv,
    )
    flags.DEFINE_bool("json", False, "Print one JSON document instead of text.", flag_values=fv)
    flags.DEFINE_integer(
        "top_k", 3, "Classes shown per image in text output.", lower_bound=1, upper_bound=10, flag_values=fv
    )


def _load_model(fv: flags.FlagValues):
    from fmnist_jax.exported import ExportedModel, ModelFileError  # heavy imports only after flags are good

    if fv.model:
        try:
            return ExportedModel.load(fv.model)
        except ModelFileError as e:
            raise cmdline.UsageError(str(e)) from e
    from fmnist_jax import export

    return ExportedModel(*export.build_artifact(export.load_member(fv.workdir, fv.member)))


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


def predict_files(model, paths: list[str], invert: images.Invert = "auto") -> dict[str, Any]:
    """{'predictions': [{file, index, class, probability, probabilities...}], 'errors': [{file, error}]}."""
    from fmnist_jax.exported import describe

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


def main(argv: list[str]) -> int:
    fv = cmdline.parse(argv, _define)
    paths = fv(["fmnist-jax"] + argv)[1:]
    if bool(fv.workdir) == bool(fv.model):
        raise cmdline.UsageError("give exactly one of --workdir RUN or --model DIR")
    if not paths:
        raise cmdline.UsageError("no input files; usage: fmnist-jax predict --workdir RUN FILE...")
    model = _load_model(fv)
    result = predict_files(model, paths, fv.invert)
    if fv.json:
        print(json.dumps({"model": model.manifest.get("member"), **result}, indent=2))
    else:
        if result["predictions"]:
            print(format_text(result, fv.top_k))
        for e in result["errors"]:
            print(f"error: {e['error']}", file=sys.stderr)
    return 1 if result["errors"] else 0
