"""A deployed model's record turned into figures and a Markdown report (what `fmnist-jax monitor` writes).

Everything is read from the service's feedback store (`fmnist_jax.feedback`), so a report needs no access
to the service and can be made while it runs. The x axis is images served, the store's own clock: live
accuracy (rolling over labelled predictions), drift scores with the threshold and the flagged stretches,
the predicted class mix, and request latency. Optional marks (`[{"label", "start"}]`, `start` = images
served before the phase) cut the stream into phases, each summarised with its accuracy, the share of
requests flagged and how many images it took for the flag to rise (the detection delay).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from collections.abc import Sequence

import numpy as np
from matplotlib.figure import Figure

from fmnist_jax import drift, feedback, plots
from fmnist_jax.data import CLASS_NAMES
from fmnist_jax.reporting import markdown_table
from fmnist_jax.writers import write_json, write_text

FIGURES = ("accuracy.png", "drift.png", "class_mix.png", "latency.png")


def read_marks(path: str | Path) -> list[dict[str, Any]]:
    """Phase marks from a JSON file: `[{"label": "clean", "start": 0}, ...]`, starts increasing."""
    try:
        marks = json.loads(Path(path).read_text())
    except (OSError, ValueError) as e:
        raise feedback.StoreError(f"{path}: no readable marks JSON ({e})") from e
    ok = isinstance(marks, list) and all(
        isinstance(m, dict) and isinstance(m.get("label"), str) and isinstance(m.get("start"), int) for m in marks
    )
    if not ok or [m["start"] for m in marks] != sorted({m["start"] for m in marks}):
        raise feedback.StoreError(f'{path}: marks must be [{{"label": str, "start": int}}, ...] with increasing starts')
    return marks


def rolling(values: np.ndarray, window: int) -> np.ndarray:
    """Mean of the last `window` values at each position (fewer at the start)."""
    c = np.concatenate([[0.0], np.cumsum(values, dtype=np.float64)])
    n = np.arange(1, len(values) + 1)
    lo = np.maximum(n - window, 0)
    return (c[n] - c[lo]) / (n - lo)


def _segments(marks: Sequence[dict[str, Any]], end: int) -> list[tuple[str, int, int]]:
    starts = [m["start"] for m in marks] + [end]
    return [(m["label"], starts[i], starts[i + 1]) for i, m in enumerate(marks) if starts[i + 1] > starts[i]]


def phases(snap: feedback.Snapshot, marks: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per phase: images, labelled, accuracy, model versions, share of judged requests flagged, detection delay."""
    p, r = snap.predictions, snap.requests
    end = int(p["seq"].max()) if len(p["seq"]) else 0
    rows = []
    for label, start, stop in _segments(marks, end):
        inside = (p["seq"] > start) & (p["seq"] <= stop)
        labelled = inside & (p["label"] >= 0)
        req = (r["seq_end"] > start) & (r["seq_end"] <= stop)
        judged = req & (r["drifted"] >= 0)
        before = np.flatnonzero((r["seq_end"] <= start) & (r["drifted"] >= 0))
        flagged_at_start = bool(len(before) and r["drifted"][before[-1]] == 1)
        hits = np.flatnonzero(req & (r["drifted"] == 1))
        delay = None if flagged_at_start or not len(hits) else int(r["seq_end"][hits[0]] - start)
        rows.append(
            {
                "phase": label,
                "images": int(inside.sum()),
                "labelled": int(labelled.sum()),
                "accuracy": float((p["prediction"][labelled] == p["label"][labelled]).mean())
                if labelled.any()
                else None,
                "model_versions": sorted(set(p["model_version"][inside].tolist())),
                "requests": int(req.sum()),
                "flagged_share": float((r["drifted"][judged] == 1).mean()) if judged.any() else None,
                "flagged_at_start": flagged_at_start,
                "detection_delay_images": delay,
                "detection_delay_requests": None if delay is None else int((req[: hits[0] + 1]).sum()),
            }
        )
    return rows


def versions(snap: feedback.Snapshot) -> list[dict[str, Any]]:
    """Per model version, in serving order: images, labelled predictions and their accuracy."""
    p = snap.predictions
    order = list(dict.fromkeys(p["model_version"].tolist()))
    rows = []
    for v in order:
        mine = p["model_version"] == v
        lab = mine & (p["label"] >= 0)
        rows.append(
            {
                "model_version": v,
                "images": int(mine.sum()),
                "first_seq": int(p["seq"][mine].min()),
                "last_seq": int(p["seq"][mine].max()),
                "labelled": int(lab.sum()),
                "accuracy": float((p["prediction"][lab] == p["label"][lab]).mean()) if lab.any() else None,
            }
        )
    return rows


def _marks_on(ax: Any, marks: Sequence[dict[str, Any]], events: Sequence[dict[str, Any]]) -> None:
    for m in marks:
        ax.axvline(m["start"], color="0.4", ls="--", lw=0.8)
        where: dict[str, Any] = {"xycoords": ("data", "axes fraction"), "va": "top", "ha": "right"}
        ax.annotate(m["label"], (m["start"], 1.0), fontsize=7, rotation=90, color="0.3", **where)
    for e in events:
        if e["kind"] == "model" and e["detail"].get("previous"):
            ax.axvline(e["seq"], color="tab:green", lw=1.2)


def accuracy_figure(snap: feedback.Snapshot, window: int, marks: Sequence[dict[str, Any]]) -> Figure:
    p = snap.predictions
    lab = p["label"] >= 0
    fig = Figure(figsize=(10, 3.4), layout="constrained")
    ax = fig.subplots()
    if lab.any():
        correct = (p["prediction"][lab] == p["label"][lab]).astype(np.float64)
        skip = min(50, window, len(correct) - 1)  # the first few labels alone say little
        acc = rolling(correct, window)[skip:]
        ax.plot(p["seq"][lab][skip:], acc, color="tab:blue", lw=1.5, label=f"last {window} labelled")
        ax.set_ylim(max(0.0, float(acc.min()) - 0.05), 1.0)
    _marks_on(ax, marks, snap.events)
    ax.set_xlabel("images served")
    ax.set_ylabel("live accuracy")
    ax.set_title("Live accuracy from feedback labels (green: model reload)")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower left")
    return fig


def drift_figure(snap: feedback.Snapshot, marks: Sequence[dict[str, Any]]) -> Figure:
    r = snap.requests
    judged = [i for i, d in enumerate(r["drift"]) if d and d.get("ready")]
    fig = Figure(figsize=(10, 3.8), layout="constrained")
    ax = fig.subplots()
    if judged:
        method = r["drift"][judged[-1]]["method"]
        threshold = r["drift"][judged[-1]]["threshold"]
        x = r["seq_end"]
        names = [n for n in drift.SCORED if n in r["drift"][judged[-1]][method]]
        ok = set(judged)
        for name in names:  # NaN where unjudged (a restarted window), so lines break there
            y = [r["drift"][i][method].get(name, np.nan) if i in ok else np.nan for i in range(len(x))]
            ax.plot(x, y, lw=1.2, label=name)
        ax.axhline(threshold, color="k", ls=":", lw=1, label=f"threshold {threshold:g}")
        flagged = r["drifted"] == 1
        band: dict[str, Any] = {"transform": ax.get_xaxis_transform(), "color": "tab:red", "alpha": 0.12, "lw": 0}
        ax.fill_between(x, 0, 1, where=flagged, label="drift flagged", **band)
        ax.set_yscale("symlog", linthresh=0.05)
        ax.set_ylabel(f"{method.upper()} vs reference")
    _marks_on(ax, marks, snap.events)
    ax.set_xlabel("images served")
    ax.set_title("Drift scores of the last window of served images")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncols=5, loc="upper center", bbox_to_anchor=(0.5, -0.2))
    return fig


def class_mix_figure(snap: feedback.Snapshot, bucket: int, marks: Sequence[dict[str, Any]]) -> Figure:
    p = snap.predictions
    fig = Figure(figsize=(10, 3.6), layout="constrained")
    ax = fig.subplots()
    if len(p["seq"]):
        edges = np.arange(0, len(p["seq"]) + bucket, bucket)[: -1 if len(p["seq"]) % bucket == 0 else None]
        groups = [p["prediction"][s : s + bucket] for s in edges if s < len(p["seq"])]
        mix = np.stack([np.bincount(g, minlength=len(CLASS_NAMES)) / len(g) for g in groups])
        centres = [float(p["seq"][s : s + bucket].mean()) for s in edges if s < len(p["seq"])]
        ax.stackplot(centres, mix.T, labels=CLASS_NAMES, alpha=0.85)
        ax.set_xlim(float(p["seq"][0]), float(p["seq"][-1]))
    _marks_on(ax, marks, snap.events)
    ax.set_ylim(0, 1)
    ax.set_xlabel("images served")
    ax.set_ylabel(f"predicted classes (per {bucket} images)")
    ax.set_title("Predicted class mix")
    ax.legend(fontsize=7, ncols=5, loc="upper center", bbox_to_anchor=(0.5, -0.2))
    return fig


def latency_figure(snap: feedback.Snapshot, bucket: int, marks: Sequence[dict[str, Any]]) -> Figure:
    r = snap.requests
    fig = Figure(figsize=(10, 3.4), layout="constrained")
    ax = fig.subplots()
    if len(r["seq_end"]):
        ms = 1000 * r["latency_s"]
        ax.scatter(r["seq_end"], ms, s=3, alpha=0.3, color="0.5", label="request")
        k = max(1, bucket // max(1, int(np.median(r["images"]))))  # about `bucket` images per point
        idx = range(0, len(ms), k)
        centres = [r["seq_end"][i : i + k].mean() for i in idx]
        ax.plot(centres, [np.median(ms[i : i + k]) for i in idx], label="median")
        ax.plot(centres, [np.quantile(ms[i : i + k], 0.95) for i in idx], label="95th percentile")
        ax.set_yscale("log")
    _marks_on(ax, marks, snap.events)
    ax.set_xlabel("images served")
    ax.set_ylabel("latency in the service (ms)")
    ax.set_title("Predict latency (decode, model, monitoring; not the network)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return fig


def summarize(snap: feedback.Snapshot, marks: Sequence[dict[str, Any]]) -> dict[str, Any]:
    p, r = snap.predictions, snap.requests
    lab = p["label"] >= 0
    return {
        "images": int(len(p["seq"])),
        "requests": int(len(r["seq_end"])),
        "labelled": int(lab.sum()),
        "accuracy": float((p["prediction"][lab] == p["label"][lab]).mean()) if lab.any() else None,
        "latency_ms": {
            "median": float(np.median(r["latency_s"]) * 1000) if len(r["latency_s"]) else None,
            "p95": float(np.quantile(r["latency_s"], 0.95) * 1000) if len(r["latency_s"]) else None,
        },
        "phases": phases(snap, marks) if marks else [],
        "model_versions": versions(snap),
        "events": [
            {"seq": e["seq"], "kind": e["kind"], **{k: v for k, v in e["detail"].items() if k != "score"}}
            for e in snap.events
        ],
    }


def _pct(v: float | None) -> str:
    return "" if v is None else f"{100 * v:.2f}%"


def write_report(
    store: str | Path,
    out: str | Path,
    marks: Sequence[dict[str, Any]] = (),
    window: int = 500,
    bucket: int = 250,
) -> Path:
    """Figures (`FIGURES`), `monitoring.json` and `report.md` for a store file; returns the report's path."""
    if window < 1 or bucket < 1:
        raise feedback.StoreError(f"window and bucket must be positive, got {window}, {bucket}")
    snap = feedback.read(store)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    plots.save(accuracy_figure(snap, window, marks), out / FIGURES[0])
    plots.save(drift_figure(snap, marks), out / FIGURES[1])
    plots.save(class_mix_figure(snap, bucket, marks), out / FIGURES[2])
    plots.save(latency_figure(snap, bucket, marks), out / FIGURES[3])
    summary = summarize(snap, marks)
    write_json(out / "monitoring.json", summary)
    latency = summary["latency_ms"]
    lines = [
        "# Monitoring report",
        "",
        f"Store `{Path(store).name}`: {summary['images']:,} images in {summary['requests']:,} requests, "
        f"{summary['labelled']:,} labelled (accuracy {_pct(summary['accuracy'])}); latency in the service "
        f"median {latency['median'] or 0:.1f} ms, 95th percentile {latency['p95'] or 0:.1f} ms.",
        "",
    ]
    if summary["phases"]:
        rows = [
            {
                "phase": ph["phase"],
                "images": ph["images"],
                "labelled": ph["labelled"],
                "accuracy": _pct(ph["accuracy"]),
                "model": ", ".join(ph["model_versions"]),
                "requests flagged": _pct(ph["flagged_share"]),
                "flag up at start": ph["flagged_at_start"],
                "detection delay (images / requests)": ""
                if ph["detection_delay_images"] is None
                else f"{ph['detection_delay_images']} / {ph['detection_delay_requests']}",
            }
            for ph in summary["phases"]
        ]
        lines += ["## Phases", "", markdown_table(rows), ""]
    vrows = [{**v, "accuracy": _pct(v["accuracy"])} for v in summary["model_versions"]]
    if vrows:
        lines += ["## Model versions", "", markdown_table(vrows), ""]
    erows = [
        {"images served": e["seq"], "event": e["kind"], "detail": json.dumps(e["detail"], sort_keys=True)}
        for e in snap.events
    ]
    if erows:
        lines += ["## Events", "", markdown_table(erows), ""]
    lines += ["## Figures", ""] + [f"![{f[:-4]}]({f})" for f in FIGURES] + [""]
    write_text(out / "report.md", "\n".join(lines))
    return out / "report.md"
