"""`fmnist-jax serve --model DIR [--host 127.0.0.1] [--port 8000] [limits] [monitoring] [--admin_token_file F]`.

The service itself (routes, limits, decoding, monitoring) is `fmnist_jax.serving`; this command loads the
model, compiles every batch shape up front, opens the feedback store and runs uvicorn. The admin reload
is on only with a token: `--admin_token_file` or the `FMNIST_ADMIN_TOKEN` environment variable (never a
flag, which other users could read from the process list).
"""

from __future__ import annotations

import os
from pathlib import Path

from absl import flags

from fmnist_jax import serving
from fmnist_jax.commands import parsing

TOKEN_ENV = "FMNIST_ADMIN_TOKEN"


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
    flags.DEFINE_string(
        "store",
        None,
        "SQLite file recording predictions and feedback (default: in memory, lost at exit).",
        flag_values=fv,
    )
    flags.DEFINE_integer("store_max_rows", 100_000, "Rows kept per store table (oldest go first).", flag_values=fv)
    flags.DEFINE_bool("store_images", False, "Also store each raw 28x28 input (off: only its digest).", flag_values=fv)
    flags.DEFINE_integer("accuracy_window", 500, "Labelled predictions in the live accuracy.", flag_values=fv)
    flags.DEFINE_integer("drift_window", 1000, "Served images the drift scores cover.", flag_values=fv)
    flags.DEFINE_integer("drift_min_images", 200, "Images in the window before drift is judged.", flag_values=fv)
    flags.DEFINE_enum(
        "drift_method", "psi", ["psi", "ks"], "psi: population stability index; ks: KS D.", flag_values=fv
    )
    flags.DEFINE_float(
        "drift_threshold", 0.0, "Score over which a statistic drifts (0: 0.2 PSI, 0.15 KS).", flag_values=fv
    )
    flags.DEFINE_string(
        "admin_token_file",
        None,
        f"File holding the admin bearer token (else ${TOKEN_ENV}; neither: no reload).",
        flag_values=fv,
    )
    flags.DEFINE_string(
        "reload_root", None, "Folder every reloaded export must lie in (default: --model's parent).", flag_values=fv
    )


def _admin(fv: flags.FlagValues) -> serving.Admin | None:
    if fv.admin_token_file:
        try:
            token = Path(fv.admin_token_file).read_text().strip()
        except OSError as e:
            raise parsing.UsageError(f"--admin_token_file: cannot read {fv.admin_token_file} ({e.strerror})") from e
    else:
        token = os.environ.get(TOKEN_ENV, "").strip()
    if not token:
        return None
    model = Path(fv.model).resolve()
    try:
        return serving.Admin(token, Path(fv.reload_root or model.parent).resolve(), model)
    except ValueError as e:
        raise parsing.UsageError(str(e)) from e


def main(argv: list[str]) -> int:
    fv = parsing.parse(argv, _define, required=("model",))
    import pydantic
    import uvicorn

    from fmnist_jax import feedback, monitoring
    from fmnist_jax.artifact import ModelFileError

    try:
        limits = serving.Limits(
            max_body_bytes=fv.max_body_bytes,
            max_batch=fv.max_batch,
            max_pixels=fv.max_pixels,
            read_timeout_s=fv.read_timeout_s,
        )
        settings = monitoring.Settings(
            drift_window=fv.drift_window,
            drift_min_images=fv.drift_min_images,
            drift_method=fv.drift_method,
            drift_threshold=fv.drift_threshold,
            accuracy_window=fv.accuracy_window,
            max_rows=fv.store_max_rows,
            keep_images=fv.store_images,
        )
    except pydantic.ValidationError as e:
        first = e.errors()[0]
        field = ".".join(map(str, first["loc"])) or "drift_min_images"  # the one check across fields
        flag = {"max_rows": "store_max_rows", "keep_images": "store_images"}.get(field, field)
        raise parsing.UsageError(f"--{flag}: {first['msg']}") from None
    admin = _admin(fv)
    try:
        model = serving.load_model(Path(fv.model), limits.max_batch)
    except ModelFileError as e:
        raise parsing.UsageError(str(e)) from e
    store = feedback.Store(
        fv.store or ":memory:", settings.max_rows, settings.keep_images, settings.accuracy_window, len(model.classes)
    )
    monitor = monitoring.Monitor(model, settings, store)
    if monitor.drift_off:
        print(f"fmnist-jax serve: drift monitoring is off: {monitor.drift_off}")
    app = serving.create_app(model, limits, monitor, admin)
    try:
        uvicorn.run(app, host=fv.host, port=fv.port, timeout_keep_alive=serving.KEEP_ALIVE_S)
    finally:
        store.close()
    return 0
