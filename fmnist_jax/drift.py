"""Input drift: cheap statistics of what the model sees, their reference profile, and PSI / KS scores against it.

Why these statistics: each costs one pass over 784 bytes, needs no label, and moves under a different
production failure. Mean intensity and contrast move with lighting and exposure; ink fraction and border
brightness with noise, a lit background or a missed inversion; the model's confidence when inputs leave what
it learned; the predicted class mix when the mix of items changes (which also changes live accuracy).

A reference (`reference`, stored in an exported model's manifest) holds per statistic the inner decile edges
with the reference fraction in each bin (for the population stability index, PSI) and 101 quantiles (for the
Kolmogorov-Smirnov distance to the reference distribution), plus the predicted class mix and the mean confidence per
predicted class. `Window` keeps the last `size` served images' statistics in a fixed ring buffer and scores
them against the reference; a statistic drifts when its score passes the threshold of the chosen method.
This module needs only numpy and scipy.
"""

from __future__ import annotations

import dataclasses
import threading
from typing import Any, Literal

import numpy as np
from scipy import stats as scipy_stats

FEATURES = ("mean_intensity", "contrast", "ink_fraction", "border_brightness", "confidence")
CLASS_MIX = "class_mix"  # the predicted classes, scored by PSI over the 10 classes (KS needs an order)
SCORED = (*FEATURES, CLASS_MIX)
METHODS = ("psi", "ks")
Method = Literal["psi", "ks"]
INK_LEVEL = 32  # a pixel above this grey level is ink; Fashion-MNIST's background is 0
BORDER = 2  # the outer frame whose brightness is the background's
BINS = 10
QUANTILES = 101
EPS = 1e-4  # floor for bin fractions in PSI, so an empty bin costs a finite (large) amount
FORMAT = "fmnist_jax.drift/1"


class DriftError(ValueError):
    """A reference that cannot be used (wrong format, missing statistic)."""


def image_statistics(images_u8: np.ndarray) -> dict[str, np.ndarray]:
    """Per image [N]: mean intensity, contrast (pixel std), ink fraction and border brightness, all in [0, 1]."""
    images_u8 = np.asarray(images_u8, np.uint8)
    x = images_u8.reshape(len(images_u8), -1).astype(np.float32) / 255.0
    frame = np.ones((28, 28), bool)
    frame[BORDER:-BORDER, BORDER:-BORDER] = False
    return {
        "mean_intensity": x.mean(1),
        "contrast": x.std(1),
        "ink_fraction": (images_u8.reshape(len(images_u8), -1) > INK_LEVEL).mean(1).astype(np.float32),
        "border_brightness": x[:, frame.ravel()].mean(1),
    }


def statistics(images_u8: np.ndarray, probabilities: np.ndarray) -> dict[str, np.ndarray]:
    """`image_statistics` plus the model's confidence (top probability) and predicted class per image."""
    p = np.asarray(probabilities)
    return {**image_statistics(images_u8), "confidence": p.max(-1).astype(np.float32), "predicted": p.argmax(-1)}


def _fractions(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Fraction of values per bin: (-inf, e0), [e0, e1), ..., [e_last, inf)."""
    counts = np.bincount(np.searchsorted(edges, values, side="right"), minlength=len(edges) + 1)
    return counts / max(len(values), 1)


def psi(window: np.ndarray, reference: np.ndarray) -> float:
    """Population stability index of two bin-fraction vectors: sum (w - r) ln(w / r), fractions floored at EPS.

    Conventional reading: below 0.1 stable, 0.1-0.25 a moderate shift, above 0.25 a large one.
    """
    w, r = np.maximum(np.asarray(window, np.float64), EPS), np.maximum(np.asarray(reference, np.float64), EPS)
    return float(((w - r) * np.log(w / r)).sum())


def _round(values: np.ndarray) -> list[float]:
    return [round(float(v), 6) for v in values]


def reference(images_u8: np.ndarray, probabilities: np.ndarray, source: str = "") -> dict[str, Any]:
    """The reference profile (JSON-ready) of images the model is expected to see, with its answers on them.

    Use held-out images from the training distribution: on its own training images a model is more
    confident than on anything it serves, which would read as confidence drift.
    """
    if len(images_u8) < 2 * BINS:
        raise DriftError(f"a reference needs at least {2 * BINS} images, got {len(images_u8)}")
    s = statistics(images_u8, probabilities)
    features = {}
    for name in FEATURES:
        v = s[name].astype(np.float64)
        edges = np.unique(np.round(np.quantile(v, np.linspace(0, 1, BINS + 1)[1:-1]), 6))
        features[name] = {
            "edges": _round(edges),
            "fractions": _round(_fractions(v, edges)),
            "quantiles": _round(np.quantile(v, np.linspace(0, 1, QUANTILES))),
            "mean": round(float(v.mean()), 6),
        }
    k = np.asarray(probabilities).shape[-1]
    predicted, confidence = s["predicted"], s["confidence"]
    by_class = [float(confidence[predicted == c].mean()) if (predicted == c).any() else None for c in range(k)]
    return {
        "format": FORMAT,
        "source": source,
        "images": int(len(images_u8)),
        "features": features,
        "class_mix": _round(np.bincount(predicted, minlength=k) / len(predicted)),
        "confidence_by_class": [None if c is None else round(c, 6) for c in by_class],
    }


def check_reference(ref: Any) -> dict[str, Any]:
    """`ref` if it is a usable reference, else DriftError saying what is wrong."""
    if not isinstance(ref, dict) or ref.get("format") != FORMAT:
        got = ref.get("format") if isinstance(ref, dict) else type(ref).__name__
        raise DriftError(f"drift reference format {got!r}, expected {FORMAT!r}")
    missing = [f for f in FEATURES if f not in ref.get("features", {})] + [
        k for k in ("class_mix", "confidence_by_class") if k not in ref
    ]
    if missing:
        raise DriftError(f"drift reference lacks {', '.join(missing)}")
    return ref


def _ks(values: np.ndarray, quantiles: list[float]) -> float:
    """The two-sample KS distance D between `values` and the reference's 101 quantiles taken as its sample.

    The quantiles stand for the reference to within 1/101 in CDF; unlike a one-sample test against a
    continuous CDF, the two-sample D stays exact where the statistics have ties (a black border is 0 in
    most images). Only D is used: the quantiles are no random sample, so no p-value is claimed.
    """
    return float(scipy_stats.ks_2samp(values, np.asarray(quantiles)).statistic)


@dataclasses.dataclass(frozen=True)
class Scores:
    """One assessment of a window: PSI and KS per statistic, which pass the threshold, and the window's profile."""

    images: int
    ready: bool  # at least `min_images` in the window; before that nothing is flagged
    method: str
    threshold: float
    psi: dict[str, float]
    ks: dict[str, float]
    over: list[str]
    class_mix: list[float]
    confidence_by_class: list[float | None]

    @property
    def drifted(self) -> bool:
        return self.ready and bool(self.over)

    @property
    def score(self) -> dict[str, float]:
        """The scores of the flagging method."""
        return self.psi if self.method == "psi" else self.ks

    def as_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "drifted": self.drifted}


def assess(
    ref: dict[str, Any],
    stats: dict[str, np.ndarray],
    method: Method = "psi",
    threshold: float = 0.2,
    min_images: int = 1,
) -> Scores:
    """Score the statistics of a batch of served images (`statistics`' keys) against the reference."""
    if method not in METHODS:
        raise DriftError(f"drift method must be one of {METHODS}, got {method!r}")
    n = len(stats["predicted"])
    k = len(ref["class_mix"])
    predicted = np.asarray(stats["predicted"], np.int64)
    mix = np.bincount(predicted, minlength=k)[:k] / max(n, 1)
    psis, kss = {}, {}
    for name in FEATURES:
        f = ref["features"][name]
        values = np.asarray(stats[name], np.float64)
        psis[name] = psi(_fractions(values, np.asarray(f["edges"])), f["fractions"]) if n else 0.0
        kss[name] = _ks(values, f["quantiles"]) if n else 0.0
    psis[CLASS_MIX] = psi(mix, ref["class_mix"]) if n else 0.0
    kss[CLASS_MIX] = float(0.5 * np.abs(mix - np.asarray(ref["class_mix"])).sum()) if n else 0.0  # total variation
    chosen = psis if method == "psi" else kss
    confidence = np.asarray(stats["confidence"], np.float64)
    by_class = [float(confidence[predicted == c].mean()) if (predicted == c).any() else None for c in range(k)]
    return Scores(
        images=n,
        ready=n >= min_images,
        method=method,
        threshold=threshold,
        psi=psis,
        ks=kss,
        over=[name for name in SCORED if chosen[name] > threshold],
        class_mix=[float(m) for m in mix],
        confidence_by_class=by_class,
    )


class Window:
    """The statistics of the last `size` served images in a fixed ring buffer (memory bounded), thread-safe."""

    def __init__(self, ref: dict[str, Any], size: int, min_images: int, method: Method = "psi", threshold: float = 0.2):
        if size < 1 or not 1 <= min_images <= size:
            raise DriftError(f"need 1 <= min_images <= size, got min_images={min_images}, size={size}")
        self.reference = check_reference(ref)
        self.size, self.min_images, self.method, self.threshold = size, min_images, method, threshold
        self._values = np.zeros((size, len(FEATURES) + 1), np.float64)  # FEATURES..., predicted class
        self._next = self._count = 0
        self._lock = threading.Lock()

    def add(self, stats: dict[str, np.ndarray]) -> None:
        """Append a batch's statistics; the oldest fall out once `size` is reached."""
        rows = np.stack([np.asarray(stats[f], np.float64) for f in (*FEATURES, "predicted")], axis=1)[-self.size :]
        with self._lock:
            idx = (self._next + np.arange(len(rows))) % self.size
            self._values[idx] = rows
            self._next = int((self._next + len(rows)) % self.size)
            self._count = min(self.size, self._count + len(rows))

    def scores(self) -> Scores:
        with self._lock:
            rows = self._values[: self._count].copy()
        stats = {f: rows[:, i] for i, f in enumerate(FEATURES)} | {"predicted": rows[:, -1].astype(np.int64)}
        return assess(self.reference, stats, self.method, self.threshold, self.min_images)
