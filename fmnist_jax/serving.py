"""An HTTP inference service over an exported model (what `fmnist-jax serve` runs): routes, limits, decoding.

Endpoints (FastAPI on uvicorn; the schema is at `/openapi.json`, browsable at `/docs`):
- `POST /predict`: a multipart upload (one or more files: PNG/JPEG/IDX/.npy), a raw file body
  (`Content-Type: image/png`, `application/octet-stream`, ...), or JSON `{"images": [...]}` /
  a bare array of uint8 28x28 images (or one image). Query `?invert=auto|yes|no` as in predict.
  Answers `{"predictions": [{class, class_index, probability, probabilities}, ...]}`.
- `GET /health`, `GET /metadata` (the manifest, machine paths cut to their last part, and the limits).

Every limit is checked before the work it bounds; a refusal is JSON `{"detail": "<one line>"}`:
- 408: the body has not all arrived within `read_timeout_s` (one deadline, so a trickle cannot hold on).
- 413: a body over `max_body_bytes` (the declared length, then while streaming); gzip data that would
  inflate past the same cap (inflated as read, so a bomb costs at most the cap); an IDX/.npy header or
  a JSON array claiming more than `max_batch` images (before any pixel is read); a picture whose header
  says it has more than `max_pixels` (before Pillow decodes it).
- 415: an unknown content type. 422: undecodable data, a wrong shape (from headers too), JSON nested
  deeper than an image batch (parsed by pydantic's Rust parser: no Python recursion).
The model runs in the threadpool, so the event loop keeps accepting requests while XLA works.

Monitoring (`fmnist_jax.monitoring`): every prediction gets an id (`<request_id>.<position>`) and a row in
the bounded feedback store; `POST /feedback` takes true labels for them (`{"id", "label"}` or
`{"items": [...]}`; 404 unknown id, 409 already labelled) and answers the live accuracy;
`GET /metrics` is the Prometheus text format; `GET /monitoring` shows drift scores against the model's
reference, the drift flag, live accuracy and store size. `POST /admin/reload` (bearer token, compared in
constant time; off without one) loads and compiles another export from inside the reload root while the
current model keeps answering, then swaps it in: a request in flight finishes on the model it started with.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hmac
import time
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Annotated, Any, cast

import numpy as np
from fastapi import FastAPI, Header, HTTPException, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field
from pydantic_core import from_json
from starlette.datastructures import UploadFile

from fmnist_jax import feedback, images, monitoring
from fmnist_jax.artifact import ExportedModel, ModelFileError, describe

MAX_BODY_BYTES = 8 * 1024 * 1024
MAX_BATCH = 256
MAX_PIXELS = 4096 * 4096  # a 16-megapixel photo; decoding one takes up to ~250 MB (RGBA) for a moment
READ_TIMEOUT_S = 30.0
KEEP_ALIVE_S = 5  # an idle keep-alive connection is closed after this long (uvicorn's default, made explicit)
MAX_JSON_DEPTH = 4  # [N, 28, 28, 1], the deepest array `images.as_uint8` takes
MAX_FEEDBACK = 1000  # labels in one /feedback request
MIN_TOKEN_CHARS = 16  # an admin token shorter than this is refused at start


class Limits(BaseModel):
    """What one request may cost (see the module docstring for when each bound is checked)."""

    model_config = ConfigDict(frozen=True)

    max_body_bytes: int = Field(
        default=MAX_BODY_BYTES, gt=0, description="Largest body, and largest a gzip body inflates to."
    )
    max_batch: int = Field(default=MAX_BATCH, gt=0, description="Most images in one request.")
    max_pixels: int = Field(default=MAX_PIXELS, gt=0, description="Most pixels (width x height) in one picture.")
    read_timeout_s: float = Field(default=READ_TIMEOUT_S, gt=0, description="Longest wait for the whole body.")

    def for_files(self) -> images.Limits:
        """The same bounds as `images.decode` takes them."""
        return images.Limits(
            max_inflated_bytes=self.max_body_bytes, max_images=self.max_batch, max_pixels=self.max_pixels
        )


DEFAULT_LIMITS = Limits()
_Image = list[list[float]]  # one 28x28 image


class ImagesJSON(BaseModel):
    """A JSON body; the bare array (what `images` holds) is taken too. Integers are 0..255, floats lie in [0, 1]."""

    images: _Image | list[_Image] | list[list[list[list[float]]]] = Field(
        description="[N, 28, 28], [28, 28] (one image) or [N, 28, 28, 1]"
    )


class Prediction(BaseModel):
    """One image's answer: the likeliest class, its probability, and every class's probability."""

    id: str = Field(description="This prediction's id, for POST /feedback.")
    class_: str = Field(alias="class")
    class_index: int
    probability: float
    probabilities: dict[str, float]


class Predictions(BaseModel):
    """One prediction per image, in the order the request holds them."""

    request_id: str
    model_version: str = Field(description="First 12 hex digits of the answering model's SHA-256.")
    predictions: list[Prediction]


@dataclasses.dataclass(frozen=True)
class Admin:
    """Who may reload the model (the bearer token) and from where (exports inside `root` only)."""

    token: str
    root: Path
    default: Path  # what a reload without a body loads: the folder the service started with

    def __post_init__(self) -> None:
        if len(self.token) < MIN_TOKEN_CHARS:
            raise ValueError(f"the admin token must have at least {MIN_TOKEN_CHARS} characters")

    def allows(self, authorization: str | None) -> bool:
        scheme, _, given = (authorization or "").partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), self.token.encode())

    def resolve(self, model: str | None) -> Path:
        """The export folder a reload names (relative to `root`); ValueError outside `root`."""
        root = self.root.resolve()
        path = self.default.resolve() if not model else (root / model).resolve()
        if not path.is_relative_to(root):
            raise ValueError("the model folder must lie inside the reload root")
        return path


class Refusal(BaseModel):
    """Every 4xx answer."""

    detail: str = Field(description="Why, in one line.")


_REFUSALS: dict[int | str, dict[str, Any]] = {
    status: {"model": Refusal, "description": why}
    for status, why in [
        (408, "The body did not all arrive within `read_timeout_s`."),
        (413, "Over a limit: body bytes, inflated bytes, images or pixels (see /metadata)."),
        (415, "Unsupported Content-Type."),
        (422, "Undecodable data, a wrong shape or too deeply nested JSON."),
    ]
}


def _error(status: int, message: str) -> HTTPException:
    return HTTPException(status_code=status, detail=message)


def _openapi_body() -> dict[str, Any]:
    """/predict's request body for OpenAPI: the route reads the raw request itself, so FastAPI cannot infer it."""
    envelope = ImagesJSON.model_json_schema()
    binary = {"schema": {"type": "string", "format": "binary"}}
    files = {"type": "array", "items": {"type": "string", "format": "binary"}}
    return {
        "required": True,
        "content": {
            "application/json": {"schema": {"anyOf": [envelope, envelope["properties"]["images"]]}},
            "multipart/form-data": {"schema": {"type": "object", "properties": {"file": files}}},
            "image/*": binary,
            "application/octet-stream": binary,
        },
    }


async def _stream(request: Request, limit: int) -> bytes:
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise _error(413, f"request body is over the limit of {limit} bytes")
    return bytes(body)


async def _read_body(request: Request, limits: Limits) -> bytes:
    """The body, refused when over `max_body_bytes` (413) or not all arrived within `read_timeout_s` (408)."""
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > limits.max_body_bytes):
        raise _error(413, f"request body of {declared} bytes is over the limit of {limits.max_body_bytes} bytes")
    try:
        return await asyncio.wait_for(_stream(request, limits.max_body_bytes), limits.read_timeout_s)
    except asyncio.TimeoutError:
        message = f"request body did not arrive within {limits.read_timeout_s:g} s"
        raise HTTPException(408, message, headers={"Connection": "close"}) from None


def _json_shape(value: Any) -> tuple[int, ...]:
    """The shape along first elements, at most one level past `MAX_JSON_DEPTH` (np.asarray refuses ragged rest)."""
    shape: list[int] = []
    while isinstance(value, list) and len(shape) <= MAX_JSON_DEPTH:
        shape.append(len(value))
        if not value:
            break
        value = value[0]
    return tuple(shape)


def _from_json(body: bytes, invert: images.Invert, max_images: int) -> np.ndarray:
    try:
        payload = from_json(body)  # Rust: nesting past its limit is a ValueError, never a RecursionError
    except ValueError as e:
        raise images.ImageError(f"body is not valid JSON ({e})") from e
    if isinstance(payload, dict):
        if "images" not in payload:
            raise images.ImageError('JSON object needs an "images" key holding [N, 28, 28] or [28, 28] numbers')
        payload = payload["images"]
    shape = _json_shape(payload)
    if len(shape) > MAX_JSON_DEPTH:
        raise images.ImageError(f"JSON images nest deeper than {MAX_JSON_DEPTH} arrays ([N, 28, 28, 1])")
    images.check_batch(shape, "JSON images", max_images)  # before numpy copies the lists
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
    try:
        files = [
            (f.filename or f"file {i}", await f.read())
            for i, (_, f) in enumerate(form.multi_items())
            if isinstance(f, UploadFile)
        ]
    finally:
        await form.close()  # the uploads' spooled temporary files
    if not files:
        raise images.ImageError("multipart form holds no file; send the image as a file field, e.g. -F file=@shirt.png")
    return files


def _decode_files(files: list[tuple[str, bytes]], invert: images.Invert, limits: images.Limits) -> np.ndarray:
    """Decode file by file, stopping once the request holds too many images, so many files cannot multiply a limit."""
    batches: list[np.ndarray] = []
    for name, raw in files:
        batches.append(images.decode(raw, name, invert, limits))
        total = sum(map(len, batches))
        if total > limits.max_images:
            raise images.TooLarge(f"batch of at least {total} images is over the limit of {limits.max_images}")
    return np.concatenate(batches)


async def _decode(request: Request, body: bytes, invert: images.Invert, limits: Limits) -> np.ndarray:
    """The request's images, by Content-Type; decoding runs in the threadpool."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind == "application/json":
        return await run_in_threadpool(_from_json, body, invert, limits.max_batch)
    if kind == "multipart/form-data":
        files = await _multipart_files(request, body, limits.max_batch)
        return await run_in_threadpool(_decode_files, files, invert, limits.for_files())
    if kind.startswith("image/") or kind in ("application/octet-stream", "application/x-npy", ""):
        return await run_in_threadpool(images.decode, body, "body", invert, limits.for_files())
    raise _error(
        415,
        f"unsupported Content-Type {kind!r}; send multipart/form-data, "
        "an image/* or application/octet-stream body, or application/json",
    )


def _without_paths(value: Any) -> Any:
    """`value` with every absolute path cut to its last part: a response names no folder of the machine."""
    if isinstance(value, dict):
        return {k: _without_paths(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_without_paths(v) for v in value]
    if isinstance(value, str) and (PurePosixPath(value).is_absolute() or PureWindowsPath(value).is_absolute()):
        return PureWindowsPath(value).name  # splits on both / and \
    return value


def _labels(body: bytes, classes: list[str]) -> list[tuple[str, int]]:
    """(id, class index) pairs of a /feedback body (parsed by pydantic's Rust parser: no Python recursion)."""
    try:
        payload = from_json(body)
    except ValueError as e:
        raise feedback.FeedbackError(f"body is not valid JSON ({e})") from e
    return feedback.parse_labels(payload, classes, MAX_FEEDBACK)


def _answer(
    monitor: monitoring.Monitor, model: ExportedModel, batch: np.ndarray, start: float
) -> tuple[str, list[str], np.ndarray]:
    """Run the model and account for the request (in a worker thread); (request id, prediction ids, probabilities)."""
    probabilities = model.probabilities(batch)
    request_id = monitor.new_request_id()
    ids = monitor.observe(request_id, batch, probabilities, model, time.perf_counter() - start)
    return request_id, ids, probabilities


def load_model(path: str | Path, max_batch: int) -> ExportedModel:
    """Load an export and compile its batch shapes (`warm_up`), so its first request pays nothing."""
    model = ExportedModel.load(path)
    warm_up(model, max_batch)
    return model


def create_app(
    model: ExportedModel,
    limits: Limits = DEFAULT_LIMITS,
    monitor: monitoring.Monitor | None = None,
    admin: Admin | None = None,
) -> FastAPI:
    """The FastAPI app over a loaded `ExportedModel`, watched by `monitor` (default: in-memory store, defaults)."""

    app = FastAPI(title="fmnist_jax", description="Fashion-MNIST classifier (exported JAX model)")
    monitor = monitor or monitoring.Monitor(model)
    app.add_middleware(monitoring.RequestMetrics, metrics=monitor.metrics)
    reloading = asyncio.Lock()

    def served() -> ExportedModel:
        assert monitor.model is not None
        return monitor.model

    @app.get("/health")
    def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/metadata")
    def metadata() -> dict[str, Any]:
        return {
            **_without_paths(served().manifest),
            "model_version": monitor.version,
            "limits": limits.model_dump(),
            "monitoring": monitor.settings.model_dump(),
        }

    @app.post(
        "/predict", response_model=Predictions, responses=_REFUSALS, openapi_extra={"requestBody": _openapi_body()}
    )
    async def predict(
        request: Request,
        invert: Annotated[
            str, Query(description="Make dark-on-light pictures light-on-dark; auto: when the border is light.")
        ] = "auto",
    ) -> dict[str, Any]:
        start = time.perf_counter()
        if invert not in images.INVERT_CHOICES:
            raise _error(422, f"invert must be one of {images.INVERT_CHOICES}, got {invert!r}")
        body = await _read_body(request, limits)
        try:
            batch = await _decode(request, body, cast(images.Invert, invert), limits)
        except images.TooLarge as e:
            raise _error(413, str(e)) from e
        except images.ImageError as e:
            raise _error(422, str(e)) from e
        if len(batch) == 0:
            raise _error(422, "no images in the request")
        model = served()  # this request finishes on this model, whatever a reload does meanwhile
        request_id, ids, probabilities = await run_in_threadpool(_answer, monitor, model, batch, start)
        answers = [{"id": i, **a} for i, a in zip(ids, describe(probabilities, model.classes))]
        return {"request_id": request_id, "model_version": monitoring.version(model), "predictions": answers}

    @app.post("/feedback", responses=_REFUSALS | {404: _REFUSALS[422] | {"description": "Unknown id."}})
    async def give_feedback(request: Request) -> dict[str, Any]:
        """True labels for served predictions: `{"id": ..., "label": 3 or "Dress"}` or `{"items": [...]}`."""
        body = await _read_body(request, limits)
        try:
            items = _labels(body, monitor.classes)
            accuracy = await run_in_threadpool(monitor.add_labels, items)
        except feedback.UnknownPrediction as e:
            raise _error(404, str(e)) from e
        except feedback.AlreadyLabelled as e:
            raise _error(409, str(e)) from e
        except feedback.FeedbackError as e:
            raise _error(422, str(e)) from e
        return {"labelled": len(items), "accuracy": accuracy}

    @app.get("/monitoring")
    async def monitoring_view() -> dict[str, Any]:
        return await run_in_threadpool(monitor.view)

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(await run_in_threadpool(monitor.exposition), media_type=monitoring.CONTENT_TYPE)

    @app.post("/admin/reload")
    async def reload(request: Request, authorization: Annotated[str | None, Header()] = None) -> dict[str, Any]:
        """Load another export (body `{"model": "folder inside the reload root"}`; none: the starting one) and swap."""
        if admin is None:
            raise _error(403, "admin reload is off: start serve with an admin token")
        if not admin.allows(authorization):
            raise HTTPException(401, "missing or wrong bearer token", headers={"WWW-Authenticate": "Bearer"})
        body = await _read_body(request, limits)
        try:
            payload = from_json(body) if body.strip() else {}
            if (
                not isinstance(payload, dict)
                or set(payload) - {"model"}
                or not isinstance(payload.get("model", ""), str)
            ):
                raise ValueError('send {"model": "FOLDER"} or an empty body')
            path = admin.resolve(payload.get("model"))
        except ValueError as e:
            raise _error(422, str(e)) from e
        if reloading.locked():
            monitor.metrics.reloads.labels(outcome="busy").inc()
            raise _error(409, "a reload is already in progress")
        async with reloading:
            previous = monitor.version
            try:
                new = await run_in_threadpool(load_model, path, limits.max_batch)
                monitor.set_model(new)
            except (ModelFileError, ValueError) as e:
                monitor.metrics.reloads.labels(outcome="refused").inc()
                shown = path.relative_to(admin.root.resolve()).as_posix() or "."
                raise _error(422, str(e).replace(str(path), shown)) from e  # names no machine folder
        monitor.metrics.reloads.labels(outcome="done").inc()
        return {"model_version": monitor.version, "previous": previous, "drift": monitor.drift_off or "on"}

    return app


def warm_up(model: ExportedModel, max_batch: int) -> None:
    """Compile every padded batch shape up front, so no request pays for compilation."""
    n = 1
    while True:
        model.logits(np.zeros((min(n, max_batch), 28, 28), np.uint8))
        if n >= max_batch:
            break
        n *= 2
