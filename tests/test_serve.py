"""serve: a real uvicorn server on 127.0.0.1, called with httpx: good inputs, bad inputs, concurrency, the command."""

import io
import os
import re
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest
import uvicorn
from PIL import Image

from deploy_helpers import export_untrained
from fmnist_jax import data, serve
from fmnist_jax.exported import ExportedModel

MAX_BODY, MAX_BATCH = 64 * 1024, 8


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """The service's behaviour does not depend on training: random weights will do."""
    out = tmp_path_factory.mktemp("served") / "model"
    export_untrained(out)
    return out


@pytest.fixture(scope="module")
def server(model_dir):
    model = ExportedModel.load(model_dir)
    srv = uvicorn.Server(uvicorn.Config(serve.create_app(model, MAX_BODY, MAX_BATCH), log_level="warning"))
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    thread = threading.Thread(target=srv.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    for _ in range(600):
        if srv.started:
            break
        time.sleep(0.05)
    assert srv.started, "uvicorn did not start within 30 s"
    with httpx.Client(base_url=f"http://127.0.0.1:{sock.getsockname()[1]}", timeout=60) as client:
        yield client, model
    srv.should_exit = True
    thread.join(timeout=10)


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
    assert meta["limits"] == {"max_body_bytes": MAX_BODY, "max_batch": MAX_BATCH}


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
        assert meta["limits"]["max_batch"] == 2
        response = httpx.post(f"{url}/predict", json={"images": images(3).tolist()}, timeout=30)
        assert response.status_code == 413 and "over the limit of 2" in response.json()["detail"]
        assert len(httpx.post(f"{url}/predict", json=images(2).tolist(), timeout=30).json()["predictions"]) == 2
    finally:
        proc.terminate()
        out = proc.communicate(timeout=30)[0].decode()
    assert "Finished server process" in out and proc.returncode in (0, -15), out  # uvicorn re-raises SIGTERM


def test_serve_command_refuses_a_non_model(tmp_path):
    with pytest.raises(serve.cmdline.UsageError, match="not an exported model folder"):
        serve.main(["--model", str(tmp_path)])
