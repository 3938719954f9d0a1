"""A simulated production stream on the real Fashion-MNIST test set, watched, retrained and reloaded (issue 15).

    .venv/bin/python scripts/monitoring_demo.py            # ~10 min on 2 busy CPU cores; writes results/monitoring/

What it runs, with the project's own commands (printed as they run):
1. `fmnist-jax export` the best run's best member (fold 0, seed 2) with its drift reference -> WORK/models/v1.
2. `fmnist-jax serve` it on 127.0.0.1 with a feedback store and an admin token, and stream test images in
   requests of 1-16 images, sending every true label back (`POST /feedback`), in phases:
   clean -> contrast x0.6 and background +20 grey levels -> clean again -> a class-mix change (70% tops).
3. `fmnist-jax retrain` the same member on new labelled data: training-set images (not test) under the same
   shift. First fine-tuned with as many replayed clean training images (2 epochs); if the gate (clean test
   set, at most 0.5 points lower) refuses that, the new data is appended to the member's whole training fold
   for one epoch. Both gate decisions are kept.
4. The shifted phase again, on the same test images: the admin reload to the new version is sent while the
   stream runs, so some of its first requests are answered by v1 and the rest by v2, none dropped.
5. `fmnist-jax monitor` turns the store into results/monitoring/ (PNGs, report.md, monitoring.json), and this
   script adds summary.json, gate_*.json and README.md from those outputs.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from fmnist_jax import data, feedback, writers  # noqa: E402

CONTRAST, BRIGHTNESS = 0.6, 20.0
TOPS = (0, 2, 4, 6)  # T-shirt/top, Pullover, Coat, Shirt: the classes the model confuses most
ATTEMPTS = [("v2_finetune", ["--epochs", "2"]), ("v2_append", ["--epochs", "1", "--replay", "-1"])]


def shift(x: np.ndarray) -> np.ndarray:
    """Lower contrast on a lit background: what a new camera or lighting might do."""
    return np.clip(np.round(x.astype(np.float32) * CONTRAST + BRIGHTNESS), 0, 255).astype(np.uint8)


def run(cmd: list[str], log: list[str], **kwargs) -> subprocess.CompletedProcess:
    shown = "fmnist-jax " + " ".join(cmd)
    print(f"$ {shown}", flush=True)
    log.append(shown)
    done = subprocess.run(
        [sys.executable, "-m", "fmnist_jax.cli", *cmd], cwd=ROOT, text=True, capture_output=True, **kwargs
    )
    print(done.stdout + done.stderr, flush=True)
    return done


def npy(x: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, x)
    return buf.getvalue()


class Stream:
    """Sends images in random-size requests, labels every answer, and keeps count."""

    def __init__(self, client: httpx.Client, seed: int):
        self.client, self.rng = client, np.random.default_rng(seed)
        self.served = 0
        self.statuses: list[int] = []
        self.versions: list[str] = []

    def send(self, x: np.ndarray, y: np.ndarray) -> None:
        s = 0
        while s < len(x):
            n = int(self.rng.integers(1, 17))
            r = self.client.post(
                "/predict", content=npy(x[s : s + n]), headers={"content-type": "application/octet-stream"}
            )
            self.statuses.append(r.status_code)
            if r.status_code == 200:
                got = r.json()
                self.versions += [got["model_version"]] * len(got["predictions"])
                items = [{"id": p["id"], "label": int(t)} for p, t in zip(got["predictions"], y[s : s + n])]
                f = self.client.post("/feedback", json={"items": items})
                assert f.status_code == 200, f.text
                self.served += len(got["predictions"])
            s += n


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--run", default="results/best/run")
    ap.add_argument("--member", default="0,2")
    ap.add_argument("--work", default="runs/monitoring_demo")
    ap.add_argument("--out", default="results/monitoring")
    ap.add_argument("--phase_images", type=int, default=3000)
    ap.add_argument("--new_images", type=int, default=6000)
    ap.add_argument("--epochs", type=int, default=2)
    args = ap.parse_args()
    work, out = ROOT / args.work, ROOT / args.out
    if work.exists():
        shutil.rmtree(work)
    (work / "models").mkdir(parents=True)
    out.mkdir(parents=True, exist_ok=True)
    log: list[str] = []
    started = time.time()

    v1 = run(["export", "--workdir", args.run, "--member", args.member, "--out", f"{args.work}/models/v1"], log)
    if v1.returncode:
        return v1.returncode

    ds = data.load()
    rng = np.random.default_rng(0)
    perm = rng.permutation(len(ds.test_labels))
    n = args.phase_images
    clean_a, shifted_idx, clean_b = perm[:n], perm[n : 2 * n], perm[2 * n : 2 * n + n // 2]
    tops = np.isin(ds.test_labels, TOPS)
    k = 2 * n // 3
    mix_idx = np.concatenate(
        [
            rng.choice(np.flatnonzero(tops), int(0.7 * k), replace=False),
            rng.choice(np.flatnonzero(~tops), k - int(0.7 * k), replace=False),
        ]
    )
    mix_idx = rng.permutation(mix_idx)
    x, y = ds.test_images, ds.test_labels

    # New labelled data for retraining: training-set images under the production shift (the member trained on them
    # unshifted; the test set stays untouched for the gate).
    new = rng.choice(len(ds.train_labels), args.new_images, replace=False)
    (work / "new_data").mkdir()
    np.save(work / "new_data" / "images.npy", shift(ds.train_images[new]))
    np.save(work / "new_data" / "labels.npy", ds.train_labels[new].astype(np.int64))

    token = secrets.token_hex(16)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    store = work / "store.sqlite"
    serve_cmd = ["serve", "--model", f"{args.work}/models/v1", "--port", str(port), "--max_batch", "32"]
    serve_cmd += ["--store", f"{args.work}/store.sqlite"]
    log.append("FMNIST_ADMIN_TOKEN=... fmnist-jax " + " ".join(serve_cmd))
    print(f"$ {log[-1]}", flush=True)
    server_log = (work / "serve.log").open("w")  # a file, not a pipe: uvicorn logs every request
    server = subprocess.Popen(
        [sys.executable, "-m", "fmnist_jax.cli", *serve_cmd],
        cwd=ROOT,
        env={**os.environ, "FMNIST_ADMIN_TOKEN": token},
        stdout=server_log,
        stderr=subprocess.STDOUT,
    )
    marks: list[dict] = []
    reload_info: dict = {}
    gates: dict[str, dict] = {}
    accepted = None
    try:
        url = f"http://127.0.0.1:{port}"
        for _ in range(600):
            try:
                if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.5)
        with httpx.Client(base_url=url, timeout=120) as client:
            stream = Stream(client, seed=1)
            phases = [
                ("clean", x[clean_a], y[clean_a]),
                (f"contrast x{CONTRAST}, +{BRIGHTNESS:g}", shift(x[shifted_idx]), y[shifted_idx]),
                ("clean again", x[clean_b], y[clean_b]),
                ("class mix: 70% tops", x[mix_idx], y[mix_idx]),
            ]
            for label, px, py in phases:
                marks.append({"label": label, "start": stream.served})
                print(f"phase {label!r}: {len(px)} images from {stream.served}", flush=True)
                stream.send(px, py)

            # Two retrainings, in order, until one passes the gate: fine-tuning on the new data with as many
            # replayed clean images, then the new data appended to the member's whole training fold for one epoch.
            for name, extra in ATTEMPTS:
                done = run(
                    ["retrain", "--from", args.run, "--member", args.member]
                    + ["--data", f"{args.work}/new_data/images.npy", "--labels", f"{args.work}/new_data/labels.npy"]
                    + ["--out", f"{args.work}/models/{name}", *extra],
                    log,
                )
                if done.returncode not in (0, 1):
                    return done.returncode
                gates[name] = json.loads((work / "models" / name / "gate.json").read_text())
                if gates[name]["accepted"]:
                    accepted = name
                    break

            label = f"contrast x{CONTRAST}, +{BRIGHTNESS:g} (reload)"
            marks.append({"label": label, "start": stream.served})
            print(f"phase {label!r}: {len(shifted_idx)} images from {stream.served}", flush=True)

            def reload() -> None:
                t0 = time.monotonic()
                before = stream.served
                body = {"model": accepted}
                r = client.post("/admin/reload", json=body, headers={"authorization": f"Bearer {token}"})
                reload_info.update(
                    status=r.status_code,
                    answer=r.json(),
                    seconds=round(time.monotonic() - t0, 1),
                    images_served_during=stream.served - before,
                )

            reloader = threading.Thread(target=reload)
            if accepted:
                reloader.start()
            stream.send(shift(x[shifted_idx]), y[shifted_idx])
            if accepted:
                reloader.join()
                log.append(
                    f'curl -X POST -H "Authorization: Bearer $FMNIST_ADMIN_TOKEN" -d \'{{"model": "{accepted}"}}\' '
                    "127.0.0.1:PORT/admin/reload   # sent while the last phase streamed"
                )
            final_view = client.get("/monitoring").json()
    finally:
        server.terminate()
        server.wait(timeout=60)
        server_log.close()
    writers.write_json(work / "marks.json", marks)
    report = run(
        ["monitor", "--store", f"{args.work}/store.sqlite", "--out", args.out, "--marks", f"{args.work}/marks.json"],
        log,
    )
    if report.returncode:
        return report.returncode

    summary = json.loads((out / "monitoring.json").read_text())
    snap = feedback.read(store)
    p = snap.predictions
    v1_version, v2_version = (
        summary["model_versions"][0]["model_version"],
        reload_info.get("answer", {}).get("model_version"),
    )
    # v1 and v2 on the same shifted test images: phase 2 (v1) and the v2 answers of the last phase, by input digest.
    same = {}
    if v2_version:
        db_digests = _digests(store)
        s2, e2 = marks[1]["start"], marks[2]["start"]
        last = marks[-1]["start"]
        v1_on = {d: (pr == lab) for seq, d, pr, lab in db_digests if s2 < seq <= e2}
        v2_on = {d: (pr == lab) for seq, d, pr, lab, ver in _digests(store, True) if seq > last and ver == v2_version}
        both = sorted(set(v1_on) & set(v2_on))
        same = {
            "images": len(both),
            "v1_accuracy": float(np.mean([v1_on[d] for d in both])),
            "v2_accuracy": float(np.mean([v2_on[d] for d in both])),
        }
    result = {
        "command": ".venv/bin/python scripts/monitoring_demo.py",
        "commands_run": log,
        "minutes": round((time.time() - started) / 60, 1),
        "settings": {
            "drift": final_view["drift"]["method"],
            "threshold": final_view["drift"]["threshold"],
            "drift_window": final_view["drift"]["window"],
            "drift_min_images": final_view["drift"]["min_images"],
            "accuracy_window": final_view["accuracy"]["window"],
        },
        "phases": summary["phases"],
        "model_versions": summary["model_versions"],
        "gates": {
            name: {k: g[k] for k in ("accepted", "rule", "before", "after", "new_data")}
            | {"replay_images": g["finetune"]["replay_images"], "epochs": g["finetune"]["epochs"]}
            for name, g in gates.items()
        },
        "accepted": accepted,
        "reload": {**reload_info, "http_statuses": sorted(set(stream.statuses)), "requests": len(stream.statuses)},
        "same_shifted_images_v1_vs_v2": same,
        "latency_ms": summary["latency_ms"],
        "images": int(len(p["seq"])),
        "v1": v1_version,
        "v2": v2_version,
    }
    writers.write_json(out / "summary.json", result)
    for name in gates:
        shutil.copy(work / "models" / name / "gate.json", out / f"gate_{name}.json")
    writers.write_text(out / "README.md", _readme(result))
    print(json.dumps({k: result[k] for k in ("phases", "gates", "reload", "same_shifted_images_v1_vs_v2")}, indent=1))
    return 0


def _digests(store: Path, with_version: bool = False) -> list[tuple]:
    import sqlite3

    db = sqlite3.connect(f"file:{store}?mode=ro", uri=True)
    cols = "seq, digest, prediction, label" + (", model_version" if with_version else "")
    rows = db.execute(f"SELECT {cols} FROM predictions WHERE label IS NOT NULL ORDER BY seq").fetchall()
    db.close()
    return rows


def _pct(v: float | None) -> str:
    return "–" if v is None else f"{100 * v:.2f}%"


def _readme(r: dict) -> str:
    def delay(ph: dict) -> str:
        if ph["detection_delay_images"] is None:
            return ""
        return f"{ph['detection_delay_images']} images / {ph['detection_delay_requests']} requests"

    rows = [
        f"| {ph['phase']} | {ph['images']:,} | {_pct(ph['accuracy'])} | {', '.join(ph['model_versions'])} | "
        f"{_pct(ph['flagged_share'])} | {'yes' if ph['flagged_at_start'] else 'no'} | {delay(ph)} |"
        for ph in r["phases"]
    ]
    same, rel, s = r["same_shifted_images_v1_vs_v2"], r["reload"], r["settings"]
    gate_rows = [
        f"| `{name}` | {g['replay_images']:,} | {g['epochs']} | "
        f"{_pct(g['before']['test'])} -> {_pct(g['after']['test'])} | "
        f"{_pct(g['before']['new_holdout'])} -> {_pct(g['after']['new_holdout'])} | "
        f"{'**passed, exported**' if g['accepted'] else 'refused'} |"
        for name, g in r["gates"].items()
    ]
    first = next(iter(r["gates"].values()))
    lines = [
        "# Monitoring a deployed model on the real data (issue 15)",
        "",
        f"Made by `{r['command']}` ({r['minutes']} min on the 2-core CPU shared with other jobs); every number",
        "below is read from `summary.json`, `monitoring.json` and `gate_*.json` in this folder. The commands it ran:",
        "",
        "```bash",
        *r["commands_run"],
        "```",
        "",
        "Stream: Fashion-MNIST test images in requests of 1-16 images, every answer labelled back through",
        f"`POST /feedback`. Drift: {s['drift'].upper()} over the last {s['drift_window']} served images (judged from",
        f"{s['drift_min_images']}), threshold {s['threshold']}, against the serving version's reference; live accuracy",
        f"over the last {s['accuracy_window']} labels. v1 = `{r['v1']}` (the best run's fold 0, seed 2),",
        f"v2 = `{r['v2']}` (retrained).",
        "",
        "| phase | images | accuracy | model | requests flagged | flag up at start | detection delay |",
        "| --- | ---: | ---: | --- | ---: | --- | --- |",
        *rows,
        "",
        f"Retraining: {first['new_data']['images']:,} shifted training images (new labelled data),",
        f"{first['new_data']['held_out']:,} of them held out; gate: {first['rule']} (clean test set, 10,000 images).",
        "",
        "| attempt | clean images replayed | epochs | test accuracy | held-out new data | gate |",
        "| --- | ---: | ---: | --- | --- | --- |",
        *gate_rows,
        "",
        f"On the same {same.get('images', 0):,} shifted test images, v1 {_pct(same.get('v1_accuracy'))} and v2",
        f"{_pct(same.get('v2_accuracy'))}. The reload (HTTP {rel.get('status')}, {rel.get('seconds')} s to load and",
        f"compile v2) was sent while the stream ran; {rel.get('images_served_during')} images were answered meanwhile,",
        f"and all {rel['requests']:,} predict requests of the run got HTTP {rel['http_statuses']}.",
        "",
        "![live accuracy](accuracy.png)",
        "![drift scores](drift.png)",
        "![class mix](class_mix.png)",
        "![latency](latency.png)",
        "",
        "`report.md` is `fmnist-jax monitor`'s own report (phases, versions, every drift and reload event).",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
