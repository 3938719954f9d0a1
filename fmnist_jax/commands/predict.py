"""`fmnist-jax predict (--workdir RUN | --model DIR) [--member FOLD,SEED] [--invert auto|yes|no] [--json] FILE...`.

Classifies PNG/JPEG (any size or mode), IDX or .npy batches. With `--workdir` the chosen
member is exported in memory first, so predictions go through exactly the program that
`fmnist-jax export` writes. A bad file is reported on its own and the exit code is 1,
while the others still get their answers.
"""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING

from absl import flags

from fmnist_jax import images
from fmnist_jax.commands import parsing

if TYPE_CHECKING:
    from fmnist_jax.artifact import ExportedModel


def _define(fv: flags.FlagValues) -> None:
    flags.DEFINE_string("workdir", None, "A trained run (see --member).", flag_values=fv)
    flags.DEFINE_string("model", None, "An exported model folder (instead of --workdir).", flag_values=fv)
    parsing.define_member(fv, "FOLD,SEED of the run's member (default: best validation accuracy).")
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


def load_model(fv: flags.FlagValues) -> ExportedModel:
    """The exported model of `--model`, or `--workdir`'s member exported in memory."""
    from fmnist_jax.artifact import ExportedModel, ModelFileError  # heavy imports only after flags are good

    if fv.model:
        try:
            return ExportedModel.load(fv.model)
        except ModelFileError as e:
            raise parsing.UsageError(str(e)) from e
    from fmnist_jax import exporter

    return ExportedModel(*exporter.build_artifact(exporter.load_member(fv.workdir, parsing.member(fv))))


def main(argv: list[str]) -> int:
    fv = parsing.parse(argv, _define)
    paths = fv(["fmnist-jax"] + argv)[1:]
    if bool(fv.workdir) == bool(fv.model):
        raise parsing.UsageError("give exactly one of --workdir RUN or --model DIR")
    if not paths:
        raise parsing.UsageError("no input files; usage: fmnist-jax predict --workdir RUN FILE...")
    parsing.member(fv)  # a malformed --member is refused before anything loads
    model = load_model(fv)
    from fmnist_jax import prediction

    result = prediction.predict_files(model, paths, fv.invert)
    if fv.json:
        print(json.dumps({"model": model.manifest.get("member"), **result}, indent=2))
    else:
        if result["predictions"]:
            print(prediction.format_text(result, fv.top_k))
        for e in result["errors"]:
            print(f"error: {e['error']}", file=sys.stderr)
    return 1 if result["errors"] else 0
