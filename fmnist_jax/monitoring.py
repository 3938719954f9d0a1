"""What a serving model is watched with: Prometheus metrics, the input-drift window and the feedback store, together.

`Monitor` is what `serving` calls: `observe` after each prediction (ids, store rows, window, metrics),
`add_labels` for feedback, `set_model` when a new version is swapped in (the drift window restarts against
that version's reference), `view` for `/monitoring` and `exposition` for `/metrics`. `RequestMetrics` is an
ASGI middleware counting every request by route template and status, with its latency.

Metrics live in the monitor's own registry (not prometheus-client's global one), so several services in one
process (tests) do not collide. Every label is bounded: routes are the app's templates (any unknown path is
`other`), classes and statuses are few, and the model version is one of the versions this process served.
"""

from __future__ import annotations

import threading
import time
import uuid
from typing import Any, Literal

import numpy as np
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from pydantic import BaseModel, ConfigDict, Field, model_validator

from fmnist_jax import drift, feedback
from fmnist_jax.artifact import ExportedModel

MAX_WINDOW = 100_000  # most images in the drift window or the accuracy window
# PSI: 0.2 is the conventional "significant shift" line, about 4x the PSI that sampling noise gives 200 images;
# KS D: 0.15 is above the 0.1% critical value for 200 images (1.95 / sqrt(200) = 0.138).
DEFAULT_THRESHOLDS = {"psi": 0.2, "ks": 0.15}
CONTENT_TYPE = CONTENT_TYPE_LATEST
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
IMAGE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
CONFIDENCE_BUCKETS = (0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99)


class Settings(BaseModel):
    """How a served model is watched; every window is bounded, and the drift threshold is per method."""

    model_config = ConfigDict(frozen=True)

    drift_window: int = Field(default=1000, ge=1, le=MAX_WINDOW, description="Served images the drift scores use.")
    drift_min_images: int = Field(default=200, ge=1, description="Images in the window before drift is judged.")
    drift_method: Literal["psi", "ks"] = Field(default="psi", description="psi: population stability index; ks: KS D.")
    drift_threshold: float = Field(default=0.0, ge=0, description="Score above which a statistic drifts; 0: default.")
    accuracy_window: int = Field(default=500, ge=1, le=MAX_WINDOW, description="Labelled predictions in live accuracy.")
    max_rows: int = Field(default=100_000, ge=1, description="Rows kept per store table; the oldest go first.")
    keep_images: bool = Field(default=False, description="Store the raw 28x28 input with each prediction.")

    @model_validator(mode="after")
    def _check(self) -> Settings:
        if self.drift_min_images > self.drift_window:
            raise ValueError(f"drift_min_images {self.drift_min_images} is over drift_window {self.drift_window}")
        return self

    @property
    def threshold(self) -> float:
        return self.drift_threshold or DEFAULT_THRESHOLDS[self.drift_method]


def version(model: ExportedModel) -> str:
    """A model's version label: the first 12 hex digits of its artifact's SHA-256."""
    return str(model.manifest.get("model_sha256", "unknown"))[:12]


class Metrics:
    """The service's Prometheus metrics, in a registry of their own."""

    def __init__(self, classes: list[str]):
        r = self.registry = CollectorRegistry()
        self.requests = Counter(
            "fmnist_requests", "HTTP requests by route and status.", ["route", "status"], registry=r
        )
        self.latency = Histogram(
            "fmnist_request_latency_seconds",
            "Request latency by route.",
            ["route"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.images = Histogram(
            "fmnist_images_per_request", "Images per predict request.", buckets=IMAGE_BUCKETS, registry=r
        )
        self.predicted = Counter(
            "fmnist_predictions",
            "Predictions by predicted class and model version.",
            ["class", "model_version"],
            registry=r,
        )
        self.confidence = Histogram(
            "fmnist_confidence", "Top-class probability.", ["model_version"], buckets=CONFIDENCE_BUCKETS, registry=r
        )
        self.model = Gauge(
            "fmnist_model_info", "1 for the model version being served.", ["model_version", "name"], registry=r
        )
        self.reloads = Counter("fmnist_model_reloads", "Admin reloads by outcome.", ["outcome"], registry=r)
        self.drift_score = Gauge(
            "fmnist_drift_score", "Drift score of each statistic over the window.", ["statistic", "method"], registry=r
        )
        self.drift = Gauge("fmnist_drift", "1 when any statistic's score is over the threshold.", registry=r)
        self.drift_threshold = Gauge("fmnist_drift_threshold", "The flagging method's threshold.", registry=r)
        self.drift_images = Gauge("fmnist_drift_window_images", "Images in the drift window.", registry=r)
        self.accuracy = Gauge("fmnist_live_accuracy", "Accuracy over the last labelled predictions.", registry=r)
        self.class_accuracy = Gauge(
            "fmnist_live_class_accuracy", "Accuracy per true class over the same window.", ["class"], registry=r
        )
        self.labelled = Gauge(
            "fmnist_live_accuracy_labelled", "Labelled predictions in the accuracy window.", registry=r
        )
        self.feedback = Counter("fmnist_feedback_labels", "Labels received, by outcome.", ["outcome"], registry=r)
        self.classes = classes


class Monitor:
    """Metrics, drift window and feedback store of one service; the served model can be swapped (`set_model`)."""

    def __init__(self, model: ExportedModel, settings: Settings | None = None, store: feedback.Store | None = None):
        self.settings = settings or Settings()
        self.classes = list(model.classes)
        self.store = store or feedback.Store(
            max_rows=self.settings.max_rows,
            keep_images=self.settings.keep_images,
            accuracy_window=self.settings.accuracy_window,
            classes=len(self.classes),
        )
        self.metrics = Metrics(self.classes)
        self.metrics.drift_threshold.set(self.settings.threshold)
        self._lock = threading.Lock()
        self._drifted = False
        self.model: ExportedModel | None = None
        self.window: drift.Window | None = None
        self.drift_off: str | None = None
        self.set_model(model)

    @property
    def version(self) -> str:
        assert self.model is not None
        return version(self.model)

    def set_model(self, model: ExportedModel) -> None:
        """Serve `model` from now on: its version label, and a fresh drift window against its reference.

        The flag drops with the old window and is judged again once the new one holds `drift_min_images`.
        """
        if list(model.classes) != self.classes:
            raise drift.DriftError(f"the new model's classes {model.classes} differ from the served {self.classes}")
        s = self.settings
        try:
            window: drift.Window | None = drift.Window(
                drift.check_reference(model.manifest.get("reference")),
                s.drift_window,
                s.drift_min_images,
                s.drift_method,
                s.threshold,
            )
            off = None
        except drift.DriftError as e:
            window, off = None, f"no drift reference in the model's manifest ({e}); export it again to get one"
        with self._lock:
            previous = None if self.model is None else self.version
            self.model, self.window, self.drift_off, self._drifted = model, window, off, False
            name = str(model.manifest.get("model", {}).get("name", ""))
            self.metrics.model.clear()
            self.metrics.model.labels(model_version=version(model), name=name).set(1)
            self.metrics.drift.set(0)
            self.metrics.drift_score.clear()
        self.store.event("model", {"version": version(model), "previous": previous, "drift": off or "on"})

    def new_request_id(self) -> str:
        return uuid.uuid4().hex

    def observe(
        self,
        request_id: str,
        images_u8: np.ndarray,
        probabilities: np.ndarray,
        model: ExportedModel,
        latency_s: float,
    ) -> list[str]:
        """Account for one answered request (run in a worker thread): metrics, drift window, store. Returns ids."""
        v = version(model)
        m = self.metrics
        m.images.observe(len(images_u8))
        predicted, confidence = probabilities.argmax(-1), probabilities.max(-1)
        for c, n in zip(*np.unique(predicted, return_counts=True)):
            m.predicted.labels(**{"class": self.classes[int(c)], "model_version": v}).inc(int(n))
        for p in confidence:
            m.confidence.labels(model_version=v).observe(float(p))
        keys = ("ready", "drifted", "psi", "ks", "over", "method", "threshold")
        with self._lock:  # one request at a time, so the store's order is the window's
            window = self.window if model is self.model else None  # a request finishing after a swap
            scores = None
            if window is not None:
                window.add(drift.statistics(images_u8, probabilities))
                scores = window.scores()
                self._gauges(scores)
            row = None if scores is None else {k: scores.as_dict()[k] for k in keys}
            ids = self.store.record(request_id, images_u8, probabilities, v, latency_s, row)
            if scores is not None and scores.drifted != self._drifted:  # noted after the request that changed it
                self._drifted = scores.drifted
                kind = "drift_raised" if scores.drifted else "drift_cleared"
                self.store.event(
                    kind, {"over": scores.over, "score": {k: round(x, 4) for k, x in scores.score.items()}}
                )
        return ids

    def _gauges(self, scores: drift.Scores) -> None:
        m = self.metrics
        for name, value in scores.psi.items():
            m.drift_score.labels(statistic=name, method="psi").set(value)
        for name, value in scores.ks.items():
            m.drift_score.labels(statistic=name, method="ks").set(value)
        m.drift_images.set(scores.images)
        m.drift.set(int(scores.drifted))

    def add_labels(self, items: list[tuple[str, int]]) -> dict[str, Any]:
        """Record true labels (all or nothing, `feedback.FeedbackError`s), then refresh live accuracy."""
        labelled, correct = self.store.add_labels(items)
        self.metrics.feedback.labels(outcome="correct").inc(correct)
        self.metrics.feedback.labels(outcome="wrong").inc(labelled - correct)
        return self.refresh_accuracy()

    def refresh_accuracy(self) -> dict[str, Any]:
        acc = self.store.accuracy(self.classes)
        m = self.metrics
        if acc["accuracy"] is not None:
            m.accuracy.set(acc["accuracy"])
        m.labelled.set(acc["labelled"])
        for name, row in acc["per_class"].items():
            if row["accuracy"] is not None:
                m.class_accuracy.labels(**{"class": name}).set(row["accuracy"])
        return acc

    def drift_view(self) -> dict[str, Any]:
        s = self.settings
        base = {
            "method": s.drift_method,
            "threshold": s.threshold,
            "window": s.drift_window,
            "min_images": s.drift_min_images,
        }
        with self._lock:
            window = self.window
            off = self.drift_off
        if window is None:
            return {**base, "enabled": False, "reason": off}
        scores = window.scores()
        ref = window.reference
        by_class = {
            c: {"window": w, "reference": r}
            for c, w, r in zip(self.classes, scores.confidence_by_class, ref["confidence_by_class"])
        }
        mix = {c: {"window": w, "reference": r} for c, w, r in zip(self.classes, scores.class_mix, ref["class_mix"])}
        return {
            **base,
            "enabled": True,
            "images": scores.images,
            "ready": scores.ready,
            "drifted": scores.drifted,
            "over": scores.over,
            "psi": scores.psi,
            "ks": scores.ks,
            "class_mix": mix,
            "confidence_by_class": by_class,
            "reference_source": ref.get("source", ""),
            "reference_images": ref.get("images"),
        }

    def view(self) -> dict[str, Any]:
        """The `/monitoring` JSON: model version, drift, live accuracy, the last events, store size."""
        assert self.model is not None
        return {
            "model_version": self.version,
            "model": {
                "name": self.model.manifest.get("model", {}).get("name"),
                "test_accuracy": self.model.manifest.get("test_accuracy"),
            },
            "time": time.time(),
            "served_images": self.store.served,
            "drift": self.drift_view(),
            "accuracy": self.refresh_accuracy(),
            "events": self.store.events(20),
            "store": {
                **self.store.counts(),
                "max_rows": self.settings.max_rows,
                "keeps_images": self.settings.keep_images,
            },
        }

    def exposition(self) -> bytes:
        """The Prometheus text format of every metric, live accuracy refreshed first."""
        self.refresh_accuracy()
        return generate_latest(self.metrics.registry)


class RequestMetrics:
    """ASGI middleware: every HTTP request counted by route template and status, and timed."""

    def __init__(self, app: Any, metrics: Metrics):
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start, status = time.perf_counter(), 500

        async def send_status(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            route = getattr(scope.get("route"), "path", None) or "other"
            self.metrics.requests.labels(route=route, status=str(status)).inc()
            self.metrics.latency.labels(route=route).observe(time.perf_counter() - start)
