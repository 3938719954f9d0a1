"""`fmnist-jax serve --model DIR [--host 127.0.0.1] [--port 8000] [limits]`: HTTP inference over an exported model.

The service itself (routes, limits, decoding) is `fmnist_jax.serving`; this command loads the
model, compiles every batch shape up front and runs uvicorn.
"""

from __future__ import annotations

from pathlib import Path

from absl import flags

from fmnist_jax import serving
from fmnist_jax.artifact import ExportedModel, ModelFileError
from fmnist_jax.commands import parsing


def _define(fv: flags.FlagValues) -> None:
    flags.DEFINE_string("model", None, "An exported model folder (`fmnist-jax export`).", flag_values=fv)
    flags.DEFINE_string(
        "host", "127.0.0.1", "Interface to bind; 0.0.0.0 exposes the service to the network.", flag_values=fv
    )
    flags.DEFINE_integer("port", 8000, "TCP port.", lower_bound=0, upper_bound=65535, flag_values=fv)
    flags.DEFINE_integer("max_batch", serving.MAX_BATCH, "Most images per request.", lower_bound=1, flag_values=fv)
    flags.DEFINE_integer(
        "max_body_bytes",
        serving.MAX_BODY_BYTES,
        "Largest request body (and gzip inflation).",
        lower_bound=1,
        flag_values=fv,
    )
    flags.DEFINE_integer("max_pixels", serving.MAX_PIXELS, "Most pixels in one picture.", lower_bound=1, flag_values=fv)
    flags.DEFINE_float(
        "read_timeout_s", serving.READ_TIMEOUT_S, "Longest wait for a request body.", lower_bound=0.1, flag_values=fv
    )


def main(argv: list[str]) -> int:
    fv = parsing.parse(argv, _define, required=("model",))
    import uvicorn

    try:
        model = ExportedModel.load(Path(fv.model))
    except ModelFileError as e:
        raise parsing.UsageError(str(e)) from e
    limits = serving.Limits(
        max_body_bytes=fv.max_body_bytes,
        max_batch=fv.max_batch,
        max_pixels=fv.max_pixels,
        read_timeout_s=fv.read_timeout_s,
    )
    serving.warm_up(model, limits.max_batch)
    app = serving.create_app(model, limits)
    uvicorn.run(app, host=fv.host, port=fv.port, timeout_keep_alive=serving.KEEP_ALIVE_S)
    return 0
