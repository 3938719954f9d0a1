"""Monitoring over real HTTP on 127.0.0.1: drift flag on shifted inputs only, exact live accuracy from feedback,
Prometheus metrics, and an authenticated model reload under concurrent requests that loses none."""

import io
import os
import socket
import subprocess
import sys
import threading
import time

import httpx
import numpy as np
import pytest
from conftest import SHIFTS, batch
from prometheus_client.parser import text_string_to_metric_families

from deploy_helpers import export_untrained, running
from fmnist_jax import feedback, monitoring, serving
from fmnist_jax.artifact import ExportedModel

TOKEN = "s3cret-admin-token-0123456789"
LIMITS = serving.Limits(max_batch=64)
OCTETS = {"content-type": "application/octet-stream"}


def npy(x: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, x)
    return buf.getvalue()


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """Two versions (different random weights) with drift references of the generated images, in one reload root."""
    root = tmp_path_factory.mktemp("models")
    for name, seed in (("a", 0), ("b", 1)):
        export_untrained(root / name, seed=seed, reference_images=batch(2000, 0))
    export_untrained(root / "plain")  # an older export: no reference
    return root, ExportedModel.load(root / "a"), ExportedModel.load(root / "b")


def app(model, admin_root=None, **settings):
    monitor = monitoring.Monitor(model, monitoring.Settings(**settings))
    admin = None if admin_root is None else serving.Admin(TOKEN, admin_root, admin_root / "a")
    return serving.create_app(model, LIMITS, monitor, admin), monitor


def predict(client, x: np.ndarray, invert: str = "no") -> dict:
    response = client.post(f"/predict?invert={invert}", content=npy(x), headers=OCTETS)
    assert response.status_code == 200, response.text
    return response.json()


def metrics(client) -> dict:
    response = client.get("/metrics")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(response.text)
        for s in family.samples
    }


def test_shifted_inputs_raise_the_drift_flag_and_clean_ones_do_not(models):
    _, model, _ = models
    service, _ = app(model, drift_window=300, drift_min_images=300)
    with running(service) as (client, _):
        phases = ["clean", "inverted", "clean", "darkened", "clean", "noised", "clean"]
        for i, phase in enumerate(phases):
            x = batch(300, 10 + i)
            x = x if phase == "clean" else SHIFTS[phase](x)
            for s in range(0, 300, 60):
                predict(client, x[s : s + 60])
            view = client.get("/monitoring").json()["drift"]
            assert view["enabled"] and view["ready"] and view["images"] == 300
            assert view["drifted"] == (phase != "clean"), (phase, view["psi"])
            if phase == "clean":
                assert max(view["psi"].values()) < view["threshold"] == 0.2, view["psi"]
            assert metrics(client)[("fmnist_drift", ())] == (phase != "clean")
        got = metrics(client)
        events = client.get("/monitoring").json()["events"]
    assert [e["kind"] for e in events] == ["model"] + ["drift_raised", "drift_cleared"] * 3
    for k, e in enumerate(events[1:]):  # each phase is 300 images: raised within its first 120, cleared within it
        start = 300 * (k + 1)
        assert start < e["seq"] <= start + (120 if e["kind"] == "drift_raised" else 300), events
    assert got[("fmnist_drift_score", (("method", "psi"), ("statistic", "mean_intensity")))] < 0.2
    assert got[("fmnist_drift_window_images", ())] == 300


def test_feedback_updates_accuracy_exactly(models):
    _, model, _ = models
    service, _ = app(model, accuracy_window=25)
    with running(service) as (client, _):
        answer = predict(client, batch(40, 3))
        ids = [p["id"] for p in answer["predictions"]]
        preds = [p["class_index"] for p in answer["predictions"]]
        assert len(set(ids)) == 40 and all(i.startswith(answer["request_id"] + ".") for i in ids)
        # 20 right, then 10 wrong: the last 25 labels are 15 right and 10 wrong
        items = [{"id": i, "label": p} for i, p in zip(ids[:20], preds[:20])]
        items += [{"id": i, "label": (p + 1) % 10} for i, p in zip(ids[20:30], preds[20:30])]
        first = client.post("/feedback", json={"items": items[:29]})
        assert first.status_code == 200, first.text
        last = client.post("/feedback", json={"id": items[29]["id"], "label": model.classes[items[29]["label"]]})
        acc = last.json()["accuracy"]
        assert (acc["labelled"], acc["correct"], acc["accuracy"], acc["labelled_total"]) == (25, 15, 0.6, 30)
        true = [it["label"] for it in items[5:]]
        right = [it["label"] == p for it, p in zip(items[5:], preds[5:30])]
        for c, name in enumerate(model.classes):
            n = sum(t == c for t in true)
            want = None if not n else sum(r for t, r in zip(true, right) if t == c) / n
            assert acc["per_class"][name] == {"labelled": n, "accuracy": want}
        assert client.get("/monitoring").json()["accuracy"] == acc
        m = metrics(client)
        assert m[("fmnist_live_accuracy", ())] == 0.6 and m[("fmnist_live_accuracy_labelled", ())] == 25
        assert m[("fmnist_feedback_labels_total", (("outcome", "correct"),))] == 20
        assert m[("fmnist_feedback_labels_total", (("outcome", "wrong"),))] == 10

        refusals = [
            ({"id": ids[0], "label": 1}, 409, "already has a label"),
            ({"id": "nope.0", "label": 1}, 404, "no prediction with id 'nope.0'"),
            ({"items": [{"id": ids[31], "label": 1}, {"id": "nope.1", "label": 1}]}, 404, "nope.1"),
            ({"id": ids[32], "label": 12}, 422, "0..9"),
            ({"id": ids[32], "label": "Hat"}, 422, "unknown class 'Hat'"),
            ({"id": ids[32]}, 422, "label"),
            ([], 422, "send"),
        ]
        for body, status, message in refusals:
            response = client.post("/feedback", json=body)
            assert response.status_code == status and message in response.json()["detail"], response.text
        assert client.get("/monitoring").json()["accuracy"]["labelled_total"] == 30  # nothing of the refusals


def test_metrics_count_requests_images_classes_and_version(models):
    _, model, _ = models
    service, _ = app(model)
    version = model.manifest["model_sha256"][:12]
    with running(service) as (client, _):
        answers = [predict(client, batch(n, n)) for n in (1, 5, 12)]
        assert client.post("/predict", content=b"hello", headers={"content-type": "text/plain"}).status_code == 415
        assert client.get("/no/such/path").status_code == 404
        m = metrics(client)
    assert all(a["model_version"] == version for a in answers)
    assert m[("fmnist_requests_total", (("route", "/predict"), ("status", "200")))] == 3
    assert m[("fmnist_requests_total", (("route", "/predict"), ("status", "415")))] == 1
    assert m[("fmnist_requests_total", (("route", "other"), ("status", "404")))] == 1
    assert m[("fmnist_request_latency_seconds_count", (("route", "/predict"),))] == 4
    assert (m[("fmnist_images_per_request_count", ())], m[("fmnist_images_per_request_sum", ())]) == (3, 18)
    classes = [p["class"] for a in answers for p in a["predictions"]]
    for name in set(classes):
        key = ("fmnist_predictions_total", (("class", name), ("model_version", version)))
        assert m[key] == classes.count(name)
    assert m[("fmnist_confidence_count", (("model_version", version),))] == 18
    assert m[("fmnist_model_info", (("model_version", version), ("name", "default")))] == 1


def test_a_reload_under_concurrent_requests_loses_none(models):
    """Four clients keep sending while the new version loads, compiles and is swapped in; bounded to 400 requests."""
    root, a, b = models
    x = batch(8, 5)
    want = {monitoring.version(m): m.probabilities(x) for m in (a, b)}
    service, _ = app(a, admin_root=root)
    results: list[tuple[int, float, str, np.ndarray]] = []
    stop = threading.Event()
    with running(service) as (client, _):

        def call() -> tuple[int, float, str, np.ndarray]:
            sent = time.monotonic()
            response = client.post("/predict?invert=no", content=npy(x), headers=OCTETS)
            got = response.json()
            probs = np.array([[p["probabilities"][c] for c in a.classes] for p in got["predictions"]])
            return response.status_code, sent, got["model_version"], probs

        def keep_sending() -> None:
            while not stop.is_set() and len(results) < 400:
                results.append(call())

        clients = [threading.Thread(target=keep_sending) for _ in range(4)]
        for t in clients:
            t.start()
        time.sleep(0.3)
        reload = client.post("/admin/reload", json={"model": "b"}, headers={"authorization": f"Bearer {TOKEN}"})
        done = time.monotonic()
        time.sleep(0.3)
        stop.set()
        for t in clients:
            t.join(timeout=60)
    assert reload.status_code == 200, reload.text
    assert reload.json() == {"model_version": monitoring.version(b), "previous": monitoring.version(a), "drift": "on"}
    assert {r[0] for r in results} == {200}  # none dropped, none refused
    for _, _, version, probs in results:
        np.testing.assert_allclose(probs, want[version], rtol=1e-5)  # each answer is its named model's
    before = [r for r in results if r[2] == monitoring.version(a)]
    after = [r for r in results if r[2] == monitoring.version(b)]
    assert before and after and len(before) + len(after) == len(results)
    assert all(r[2] == monitoring.version(b) for r in results if r[1] > done)  # sent after the swap: the new one


def test_admin_reload_needs_the_token_and_a_model_inside_the_root(models):
    root, a, _ = models
    service, monitor = app(a, admin_root=root)
    with running(service) as (client, _):
        good = {"authorization": f"Bearer {TOKEN}"}
        for headers in ({}, {"authorization": "Bearer wrong"}, {"authorization": TOKEN}):
            response = client.post("/admin/reload", json={"model": "b"}, headers=headers)
            assert response.status_code == 401 and response.headers["www-authenticate"] == "Bearer"
        outside = client.post("/admin/reload", json={"model": "../elsewhere"}, headers=good)
        assert outside.status_code == 422 and "inside the reload root" in outside.json()["detail"]
        missing = client.post("/admin/reload", json={"model": "nothing"}, headers=good)
        assert missing.status_code == 422 and "not an exported model folder" in missing.json()["detail"]
        assert str(root) not in missing.text  # names no machine folder
        plain = client.post("/admin/reload", json={"model": "plain"}, headers=good)
        assert plain.status_code == 200 and plain.json()["drift"].startswith("no drift reference")
        assert client.get("/monitoring").json()["drift"]["enabled"] is False
        back = client.post("/admin/reload", content=b"", headers=good)  # no body: the starting folder
        assert back.status_code == 200 and back.json()["model_version"] == monitoring.version(a)
        m = metrics(client)
    assert m[("fmnist_model_reloads_total", (("outcome", "done"),))] == 2
    assert m[("fmnist_model_reloads_total", (("outcome", "refused"),))] == 1
    assert monitor.version == monitoring.version(a)
    off, _ = app(a)
    with running(off) as (client, _):
        response = client.post("/admin/reload", headers={"authorization": f"Bearer {TOKEN}"})
        assert response.status_code == 403 and "admin reload is off" in response.json()["detail"]
    with pytest.raises(ValueError, match="at least 16 characters"):
        serving.Admin("short", root, root / "a")


def test_serve_command_with_store_feedback_reload_then_monitor(models, tmp_path):
    root, a, b = models
    store, token_file = tmp_path / "store.sqlite", tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    argv = ["serve", "--model", str(root / "a"), "--port", str(port), "--max_batch", "16", "--store", str(store)]
    argv += ["--admin_token_file", str(token_file), "--drift_window", "40", "--drift_min_images", "20"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "fmnist_jax.cli", *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env={**os.environ, "JAX_PLATFORMS": "cpu"},
    )
    try:
        url = f"http://127.0.0.1:{port}"
        for _ in range(240):
            try:
                if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.5)
        with httpx.Client(base_url=url, timeout=60) as client:
            assert client.get("/metadata").json()["monitoring"]["drift_window"] == 40
            ids = [p["id"] for s in range(3) for p in predict(client, batch(16, s))["predictions"]]
            assert client.post("/feedback", json={"items": [{"id": i, "label": 0} for i in ids]}).status_code == 200
            dark = predict(client, SHIFTS["darkened"](batch(16, 7)))
            assert client.get("/monitoring").json()["drift"]["images"] == 40
            auth = {"authorization": f"Bearer {TOKEN}"}
            assert client.post("/admin/reload", json={"model": "b"}, headers=auth).status_code == 200
            assert predict(client, batch(4, 8))["model_version"] == monitoring.version(b) != dark["model_version"]
    finally:
        proc.terminate()
        out = proc.communicate(timeout=30)[0].decode()
    assert proc.returncode in (0, 143), out  # uvicorn re-raises SIGTERM, which the CLI ends with 143
    snap = feedback.read(store)
    assert len(snap.predictions["seq"]) == 68 and (snap.predictions["label"] >= 0).sum() == 48
    assert set(snap.predictions["model_version"]) == {monitoring.version(a), monitoring.version(b)}

    from fmnist_jax.commands import monitor as monitor_cmd

    marks = tmp_path / "marks.json"
    marks.write_text('[{"label": "clean", "start": 0}, {"label": "dark", "start": 48}, {"label": "b", "start": 64}]')
    assert monitor_cmd.main(["--store", str(store), "--out", str(tmp_path / "report"), "--marks", str(marks)]) == 0
    report = (tmp_path / "report" / "report.md").read_text()
    assert "| clean | 48 | 48 |" in report and "## Events" in report
    for name in ("accuracy.png", "drift.png", "class_mix.png", "latency.png"):
        assert (tmp_path / "report" / name).stat().st_size > 5_000


def test_serve_command_refuses_bad_monitoring_flags(models, tmp_path):
    from fmnist_jax.commands import serve as serve_cmd
    from fmnist_jax.commands.parsing import UsageError

    model = str(models[0] / "a")
    with pytest.raises(UsageError, match="--drift_min_images: .*over drift_window 100"):
        serve_cmd.main(["--model", model, "--drift_window", "100", "--drift_min_images", "200"])
    with pytest.raises(UsageError, match="--store_max_rows: Input should be greater than or equal to 1"):
        serve_cmd.main(["--model", model, "--store_max_rows", "0"])
    (tmp_path / "token").write_text("short\n")
    with pytest.raises(UsageError, match="at least 16 characters"):
        serve_cmd.main(["--model", model, "--admin_token_file", str(tmp_path / "token")])
    with pytest.raises(UsageError, match="cannot read"):
        serve_cmd.main(["--model", model, "--admin_token_file", str(tmp_path / "none")])
