"""`fmnist-jax serve --model DIR [--host 127.0.0.1] [--port 8000]`: an HTTP service over an exported model.

Endpoints (FastAPI on uvicorn):
- `POST /predict`: a multipart upload (one or more files: PNG/JPEG/IDX/.npy), a raw file body
  (`Content-Type: image/png`, `application/octet-stream`, ...), or JSON `{"images": [...]}` /
  a bare array of uint8 28x28 images (or one image). Query `?invert=auto|yes|no` as in predict.
  Answers `{"predictions": [{class, class_index, probability, probabilities}, ...]}`.
- `GET /health`, `GET /metadata` (the manifest and the service limits).

Bad input is a 4xx with a message: 413 for a body over `max_body_bytes` (checked on the
declared length and while streaming) or a batch over `max_batch`, 415 for an unknown
content type, 422 for undecodable data. The model runs in the threadpool, so the event
loop keeps accepting requests while XLA works.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from absl import flags
from fastapi import FastAPI, HTTPException, Request
from fastapi.concurrency import run_in_threadpool

from fmnist_jax import cmdline, images
from fmnist_jax.exported import ExportedModel, ModelFileError, describe

MAX_BODY_BYTES = 8 * 1024 * 1024
MAX_BATCH = 256


def _error(status: int, message: str) -> HTTPException:
    return HTTPException(status_code=status, detail=message)


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > limit):
        raise _error(413, f"request body of {declared} bytes is over the limit of {limit} bytes")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise _error(413, f"request body is over the limit of {limit} bytes")
    return bytes(body)


def _from_json(body: bytes, invert: images.Invert) -> np.ndarray:
    try:
        payload = json.loads(body)
    except (ValueError, UnicodeDecodeError) as e:
        raise images.ImageError(f"body is not valid JSON ({e})") from e
    if isinstance(payload, dict):
        if "images" not in payload:
            raise images.ImageError('JSON object needs an "images" key holding [N, 28, 28] or [28, 28] numbers')
        payload = payload["images"]
    try:
        array = np.asarray(payload)
    except ValueError as e:  # ragged nesting
        raise images.ImageError(f"images are not a rectangular array ({e})") from e
    return images.from_array(array, invert, "JSON images")


async def _multipart_files(request: Request, body: bytes, max_files: int) -> list[tuple[str, bytes]]:
    """(name, bytes) of each uploaded file; a malformed form is starlette's 400 with its message."""

    async def replay():
        return {"type": "http.request", "body": body, "more_body": False}

    form = await Request(request.scope, replay).form(max_files=max_files, max_fields=max_files)
    files = [
        (f.filename or f"file {i}", await f.read()) for i, (_, f) in enumerate(form.multi_items()) if hasattr(f, "read")
    ]
    if not files:
        raise images.ImageError("multipart form holds no file; send the image as a file field, e.g. -F file=@shirt.png")
    return files


def _decode_files(files: list[tuple[str, bytes]], invert: images.Invert) -> np.ndarray:
    return np.concatenate([images.decode(raw, name, invert) for name, raw in files])


def create_app(model: ExportedModel, max_body_bytes: int = MAX_BODY_BYTES, max_batch: int = MAX_BATCH) -> FastAPI:
    """The FastAPI app over a loaded `ExportedModel`."""

    app = FastAPI(title="fmnist_jax", description="Fashion-MNIST classifier (exported JAX model)")
    limits = {"max_body_bytes": max_body_bytes, "max_batch": max_batch}

    @app.get("/health")
    def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/metadata")
    def metadata() -> dict[str, Any]:
        return {**model.manifest, "limits": limits}

    @app.post("/predict")
    async def predict(request: Request, invert: str = "auto") -> dict[str, Any]:
        if invert not in images.INVERT_CHOICES:
            raise _error(422, f"invert must be one of {images.INVERT_CHOICES}, got {invert!r}")
        body = await _read_body(request, max_body_bytes)
        kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
        try:
            if kind == "application/json":
                batch = await run_in_threadpool(_from_json, body, invert)
            elif kind == "multipart/form-data":
                files = await _multipart_files(request, body, max_batch)
                batch = await run_in_threadpool(_decode_files, files, invert)
            elif kind.startswith("image/") or kind in ("application/octet-stream", "application/x-npy", ""):
                batch = await run_in_threadpool(images.decode, body, "body", invert)
            else:
                raise _error(
                    415,
                    f"unsupported Content-Type {kind!r}; send multipart/form-data, "
                    "an image/* or application/octet-stream body, or application/json",
                )
        except images.ImageError as e:
            raise _error(422, str(e)) from e
        if len(batch) == 0:
            raise _error(422, "no images in the request")
        if len(batch) > max_batch:
            raise _error(413, f"batch of {len(batch)} images is over the limit of {max_batch}")
        probabilities = await run_in_threadpool(model.probabilities, batch)
        return {"predictions": describe(probabilities, model.classes)}

    return app


def _define(fv: flags.FlagValues) -> None:
    flags.DEFINE_string("model", None, "An exported model folder (`fmnist-jax export`).", flag_values=fv)
    flags.DEFINE_string(
        "host", "127.0.0.1", "Interface to bind; 0.0.0.0 exposes the service to the network.", flag_values=fv
    )
    flags.DEFINE_integer("port", 8000, "TCP port.", lower_bound=0, upper_bound=65535, flag_values=fv)
    flags.DEFINE_integer("max_batch", MAX_BATCH, "Most images per request.", lower_bound=1, flag_values=fv)
    flags.DEFINE_integer("max_body_bytes", MAX_BODY_BYTES, "Largest request body.", lower_bound=1, flag_values=fv)


def warm_up(model: ExportedModel, max_batch: int) -> None:
    """Compile every padded batch shape up front, so no request pays for compilation."""
    n = 1
    while True:
        model.logits(np.zeros((min(n, max_batch), 28, 28), np.uint8))
        if n >= max_batch:
            break
        n *= 2


def main(argv: list[str]) -> int:
    fv = cmdline.parse(argv, _define, required=("model",))
    import uvicorn

    try:
        model = ExportedModel.load(Path(fv.model))
    except ModelFileError as e:
        raise cmdline.UsageError(str(e)) from e
    warm_up(model, fv.max_batch)
    uvicorn.run(create_app(model, fv.max_body_bytes, fv.max_batch), host=fv.host, port=fv.port)
    return 0
