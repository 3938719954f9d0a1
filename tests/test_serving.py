"""serve on real uvicorn servers (127.0.0.1) called with httpx: good and bad input, limits, concurrency, the command."""

import gzip
import io
import json
import os
import re
import select
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest
from PIL import Image

from deploy_helpers import export_untrained, idx_header, npy_header, png_header, running
from fmnist_jax import data, serving
from fmnist_jax.commands import serve as serve_cmd
from fmnist_jax.commands.parsing import UsageError
from fmnist_jax.artifact import ExportedModel

MAX_BODY, MAX_BATCH = 64 * 1024, 8
LIMITS = serving.Limits(max_body_bytes=MAX_BODY, max_batch=MAX_BATCH)
TIGHT = serving.Limits(max_body_bytes=4096, max_batch=8, read_timeout_s=0.5)  # for the gzip bomb and the slow body
OCTETS = {"content-type": "application/octet-stream"}


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """The service's behaviour does not depend on training: random weights will do."""
    out = tmp_path_factory.mktemp("served") / "model"
    export_untrained(out)
    return out


@pytest.fixture(scope="module")
def server(model_dir):
    model = ExportedModel.load(model_dir)
    with running(serving.create_app(model, LIMITS)) as (client, _):
        yield client, model


@pytest.fixture(scope="module")
def tight(server):
    with running(serving.create_app(server[1], TIGHT)) as running_server:
        yield running_server


def images(n: int, seed: int = 0) -> np.ndarray:
    x = np.random.default_rng(seed).integers(0, 60, (n, 28, 28), dtype=np.uint8)
    x[:, 6:22, 8:20] += 150
    return x


def png(x: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(x).save(buf, "PNG")
    return buf.getvalue()


def npy(x: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, x)
    return buf.getvalue()


def probabilities(response: httpx.Response) -> np.ndarray:
    assert response.status_code == 200, response.text
    return np.array([[p["probabilities"][c] for c in data.CLASS_NAMES] for p in response.json()["predictions"]])


def test_health_and_metadata(server):
    client, model = server
    assert client.get("/health").json() == {"status": "ok"}
    meta = client.get("/metadata").json()
    assert meta["classes"] == list(data.CLASS_NAMES) and meta["model_sha256"] == model.manifest["model_sha256"]
    assert meta["limits"] == {
        "max_body_bytes": MAX_BODY,
        "max_batch": MAX_BATCH,
        "max_pixels": serving.MAX_PIXELS,
        "read_timeout_s": serving.READ_TIMEOUT_S,
    }


def test_metadata_names_no_machine_path(model_dir):
    model = ExportedModel.load(model_dir)
    model.manifest["member"]["workdir"] = "/home/trainer/runs/best"
    model.manifest["check"] = {"data": "C:\\Users\\trainer\\fashion", "note": "x / 255"}
    with running(serving.create_app(model)) as (client, _):
        response = client.get("/metadata")
    assert "trainer" not in response.text
    meta = response.json()
    assert meta["member"] == {"fold": 0, "seed": 0, "workdir": "best"}  # the run's name is kept
    assert meta["check"] == {"data": "fashion", "note": "x / 255"} and meta["classes"] == list(data.CLASS_NAMES)


def test_openapi_describes_predict(server):
    client, _ = server
    operation = client.get("/openapi.json").json()["paths"]["/predict"]["post"]
    content = operation["requestBody"]["content"]
    assert set(content) == {"application/json", "multipart/form-data", "image/*", "application/octet-stream"}
    envelope, bare = content["application/json"]["schema"]["anyOf"]
    assert envelope["required"] == ["images"] and bare == envelope["properties"]["images"]
    assert operation["responses"]["200"]["content"]["application/json"]["schema"]["$ref"].endswith("/Predictions")
    for status in ("408", "413", "415", "422"):
        assert operation["responses"][status]["content"]["application/json"]["schema"]["$ref"].endswith("/Refusal")


def test_every_input_kind_gives_the_model_answer(server):
    client, model = server
    x = images(5)
    want = model.probabilities(x)
    files = [("file", (f"{i}.png", png(xi), "image/png")) for i, xi in enumerate(x[:2])]
    np.testing.assert_allclose(probabilities(client.post("/predict", files=files)), want[:2], rtol=1e-5)
    raw = client.post("/predict", content=png(x[2]), headers={"content-type": "image/png"})
    np.testing.assert_allclose(probabilities(raw), want[2:3], rtol=1e-5)
    batch = client.post("/predict", content=npy(x), headers={"content-type": "application/octet-stream"})
    np.testing.assert_allclose(probabilities(batch), want, rtol=1e-5)
    np.testing.assert_allclose(probabilities(client.post("/predict", json={"images": x.tolist()})), want, rtol=1e-5)
    np.testing.assert_allclose(probabilities(client.post("/predict", json=x[0].tolist())), want[:1], rtol=1e-5)
    negative = client.post("/predict", content=png(255 - x[3]), headers={"content-type": "image/png"})
    np.testing.assert_allclose(probabilities(negative), want[3:4], rtol=1e-5)  # inverted back by auto
    kept = client.post("/predict?invert=no", content=png(255 - x[3]), headers={"content-type": "image/png"})
    np.testing.assert_allclose(probabilities(kept), model.probabilities(255 - x[3:4]), rtol=1e-5)
    p = client.post("/predict", json=x[:1].tolist()).json()["predictions"][0]
    assert p["class"] == data.CLASS_NAMES[p["class_index"]] and p["probability"] == max(p["probabilities"].values())


def chunks(total: int):
    for _ in range(total // 4096):
        yield b"\0" * 4096


def npy_files(*counts: int) -> list:
    return [("file", (f"{i}.npy", npy(images(n)), "application/octet-stream")) for i, n in enumerate(counts)]


@pytest.mark.parametrize(
    "request_kwargs, status, message",
    [
        (dict(files={"file": ("notes.txt", b"hello", "text/plain")}), 422, "not a PNG/JPEG"),
        (dict(files={"file": ("cut.png", png(images(1)[0])[:100], "image/png")}), 422, "corrupt image"),
        (
            dict(
                content=b'--x\r\nContent-Disposition: form-data; name="field"\r\n\r\nvalue\r\n--x--\r\n',
                headers={"content-type": "multipart/form-data; boundary=x"},
            ),
            422,
            "holds no file",
        ),
        (
            dict(content=b"--x\r\nbroken", headers={"content-type": "multipart/form-data; boundary=x"}),
            422,
            "holds no file",
        ),
        (dict(content=b"--x\r\nbroken", headers={"content-type": "multipart/form-data"}), 400, "boundary"),
        (dict(json={"images": [[1, 2, 3]]}), 422, r"expected shape \[N, 28, 28\]"),
        (dict(json={"pixels": []}), 422, 'needs an "images" key'),
        (dict(json=[[0] * 28] * 27 + [[0] * 5]), 422, "rectangular"),
        (dict(json={"images": np.full((2, 28, 28), 999).tolist()}), 422, "0..255"),
        (dict(content=b"{not json", headers={"content-type": "application/json"}), 422, "not valid JSON"),
        (dict(json={"images": []}), 422, r"expected shape|no images"),
        (dict(json={"images": images(MAX_BATCH + 1).tolist()}), 413, "over the limit of 8"),
        (dict(content=b"\0" * (MAX_BODY + 1), headers={"content-type": "application/octet-stream"}), 413, "bytes"),
        (
            dict(content=chunks(2 * MAX_BODY), headers={"content-type": "application/octet-stream"}),
            413,
            "over the limit",
        ),
        (dict(content=b"hello", headers={"content-type": "text/plain"}), 415, "unsupported Content-Type"),
        (dict(content=npy_header((10**6, 28, 28)), headers=OCTETS), 413, "1000000 images are over the limit of 8"),
        (dict(content=gzip.compress(npy_header((10**6, 28, 28))), headers=OCTETS), 413, "1000000 images"),
        (dict(content=idx_header((10**6, 28, 28)), headers=OCTETS), 413, "1000000 images"),
        (dict(content=npy_header((10**6, 32, 32)), headers=OCTETS), 422, r"expected shape .*got \[1000000, 32, 32\]"),
        (dict(content=npy_header((3, 28, 28)) + bytes(784), headers=OCTETS), 422, "needs 2352 bytes"),
        (dict(files=npy_files(4, 4, 4)), 413, "at least 12 images is over the limit of 8"),
        (
            dict(content=png_header(5000, 5000), headers={"content-type": "image/png"}),
            413,
            f"5000x5000 image is over the limit of {serving.MAX_PIXELS} pixels",
        ),
        (dict(content=png_header(20000, 20000), headers={"content-type": "image/png"}), 413, "image too large"),
        (
            dict(content=b"[" * 10_000 + b"]" * 10_000, headers={"content-type": "application/json"}),
            422,
            "recursion limit",
        ),
        (dict(json={"images": [[[[[0] * 28] * 28]]]}), 422, "nest deeper than 4 arrays"),
        (dict(json=[[0] * 28] * 28, params={"invert": "maybe"}), 422, "invert must be one of"),
    ],
)
def test_bad_input_is_a_4xx_with_a_message(server, request_kwargs, status, message):
    client, _ = server
    response = client.post("/predict", **request_kwargs)
    assert response.status_code == status, response.text
    detail = response.json()["detail"]
    assert isinstance(detail, str) and detail
    assert re.search(message, detail), detail
    assert client.get("/health").status_code == 200  # still serving


def test_gzip_is_inflated_no_further_than_the_body_limit(tight):
    client, _ = tight
    bomb = gzip.compress(npy_header((8, 28, 28)) + bytes(2 * 1024 * 1024))  # a valid header, then 2 MiB in 2 KB
    assert len(bomb) < TIGHT.max_body_bytes
    response = client.post("/predict", content=bomb, headers=OCTETS)
    assert response.status_code == 413, response.text
    assert response.json() == {"detail": "body: gzip data inflates to more than 4096 bytes"}


def test_a_trickling_body_meets_one_deadline(tight):
    """One byte per 0.1 s never pauses long, but the whole body is due within `read_timeout_s` (0.5 s)."""
    _, port = tight
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"POST /predict HTTP/1.1\r\nHost: test\r\nContent-Length: 1000\r\n\r\n")
        start = time.monotonic()
        while not select.select([sock], [], [], 0.1)[0]:
            assert time.monotonic() - start < 5, "no answer to a slow body"
            sock.sendall(b"\0")
        elapsed = time.monotonic() - start
        reply = b""
        while chunk := sock.recv(65536):
            reply += chunk
    head, _, body = reply.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408 ") and b"connection: close" in head.lower(), head
    assert json.loads(body) == {"detail": "request body did not arrive within 0.5 s"}
    assert 0.4 < elapsed < 3


def test_concurrent_requests_each_get_their_own_answer(server):
    client, model = server
    x = images(24, seed=1)
    want = model.probabilities(x)

    def call(i: int) -> np.ndarray:
        if i % 2:
            return probabilities(client.post("/predict", content=png(x[i]), headers={"content-type": "image/png"}))[0]
        return probabilities(client.post("/predict", json={"images": x[i : i + 1].tolist()}))[0]

    with ThreadPoolExecutor(max_workers=8) as pool:
        got = np.stack(list(pool.map(call, range(len(x)))))
    np.testing.assert_allclose(got, want, rtol=1e-5)


def test_serve_command_starts_and_answers(model_dir):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "fmnist_jax.cli",
            "serve",
            "--model",
            str(model_dir),
            "--port",
            str(port),
            "--max_batch",
            "2",
            "--max_pixels",
            "1000",
            "--read_timeout_s",
            "5",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env={**os.environ, "JAX_PLATFORMS": "cpu"},
    )
    try:
        url = f"http://127.0.0.1:{port}"
        for _ in range(240):  # the command imports jax and compiles the batch shapes first
            try:
                if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.5)
        meta = httpx.get(f"{url}/metadata", timeout=10).json()
        assert meta["limits"] == {
            **serving.Limits().model_dump(),
            "max_batch": 2,
            "max_pixels": 1000,
            "read_timeout_s": 5,
        }
        response = httpx.post(f"{url}/predict", json={"images": images(3).tolist()}, timeout=30)
        assert response.status_code == 413 and "over the limit of 2" in response.json()["detail"]
        assert len(httpx.post(f"{url}/predict", json=images(2).tolist(), timeout=30).json()["predictions"]) == 2
    finally:
        proc.terminate()
        out = proc.communicate(timeout=30)[0].decode()
    assert "Finished server process" in out and proc.returncode in (0, 143), out  # uvicorn re-raises SIGTERM: 143


def test_serve_command_refuses_a_non_model(tmp_path):
    with pytest.raises(UsageError, match="not an exported model folder"):
        serve_cmd.main(["--model", str(tmp_path)])
