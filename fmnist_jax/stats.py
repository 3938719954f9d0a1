"""Statistics over members: mean ± std, paired differences between grid points, and their formatting.

One owner for how every report, summary and table states an accuracy, so they agree to the digit.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy import stats as scipy_stats


def mean_std(x: Any) -> dict[str, float]:
    """{'mean', 'std'} of the values; std is the sample std (ddof=1), 0 for a single value."""
    x = np.asarray(x, np.float64)
    return {"mean": float(x.mean()), "std": float(x.std(ddof=1)) if x.size > 1 else 0.0}


def pct(mean: float, std: float, unit: str = "%") -> str:
    """Fractions as '93.51 ± 0.07%'."""
    return f"{100 * mean:.2f} ± {100 * std:.2f}{unit}"


def pct_of(ms: dict[str, float], unit: str = "%") -> str:
    """A `mean_std` dict as '93.51 ± 0.07%'."""
    return pct(ms["mean"], ms["std"], unit)


def difference(
    delta: float | None,
    low: float | None = None,
    high: float | None = None,
    p: float | None = None,
    p_adj: float | None = None,
) -> str:
    """'+0.40 [+0.10, +0.70] p=0.030 (adj. 0.060)': a paired difference in points, its 95% CI and its raw and
    Benjamini-Hochberg adjusted p. One formatter for tables, reports and findings, so they read alike; a part
    that is None or NaN (untestable, or read back from strict JSON as null) is left out."""
    d, lo, hi, p, p_adj = (math.nan if x is None else float(x) for x in (delta, low, high, p, p_adj))
    if math.isnan(d):
        return "—"
    text = f"{100 * d:+.2f}" + (f" [{100 * lo:+.2f}, {100 * hi:+.2f}]" if not math.isnan(lo + hi) else "")
    if not math.isnan(p):
        return text + f" p{_p(p)}" + (f" (adj. {_p(p_adj).lstrip('=')})" if not math.isnan(p_adj) else "")
    return text + (f" adj. p{_p(p_adj)}" if not math.isnan(p_adj) else "")


def _p(p: float) -> str:
    """'=0.030', or '<0.001' where three decimals would print a p of 0.000, which no test can reach."""
    return "<0.001" if p < 0.001 else f"={p:.3f}"


def paired(a: Sequence[dict], b: Sequence[dict], key: str) -> tuple[float, float]:
    """Mean of b - a over the same (fold, seed) members, and the paired t-test's two-sided p-value.

    NaN when the two points do not share exactly the same members, or (p only) with fewer than two
    or no spread of differences (the t statistic is then undefined).
    """
    d = paired_differences(a, b, key)
    if d is None:
        return float("nan"), float("nan")
    if len(d) < 2 or np.all(d == d[0]):
        return float(d.mean()), float("nan")
    return float(d.mean()), float(scipy_stats.ttest_1samp(d, 0.0).pvalue)


def compare(a: Sequence[dict], b: Sequence[dict], key: str) -> tuple[float, float, float, float]:
    """b - a over the same (fold, seed) members: the mean difference, the paired t-test's p (`paired`) and the
    difference's 95% t-interval (`confidence_interval`), NaN where undefined."""
    delta, p = paired(a, b, key)
    return (delta, p, *confidence_interval(paired_differences(a, b, key)))


def paired_differences(a: Sequence[dict], b: Sequence[dict], key: str) -> np.ndarray | None:
    """b - a per (fold, seed) member, in member order; None unless both hold exactly the same members."""
    va = {(m["fold"], m["seed"]): m[key] for m in a}
    vb = {(m["fold"], m["seed"]): m[key] for m in b}
    if set(va) != set(vb):
        return None
    return np.array([vb[k] - va[k] for k in sorted(va)], np.float64)


def confidence_interval(d: np.ndarray | None, level: float = 0.95) -> tuple[float, float]:
    """Student-t interval of the mean of paired differences `d` (NaN with fewer than two)."""
    if d is None or len(d) < 2:
        return float("nan"), float("nan")
    half = float(scipy_stats.t.ppf(0.5 + level / 2, len(d) - 1) * d.std(ddof=1) / np.sqrt(len(d)))
    return float(d.mean()) - half, float(d.mean()) + half


def adjust(p_values: Sequence[float]) -> list[float]:
    """Benjamini-Hochberg adjusted p-values (scipy's `false_discovery_control`) of one grid's comparisons.

    Each point is tested against the same baseline, so a grid of k points makes k tests; without
    correction a chance-level grid finds "significant" differences. NaNs (untestable) stay NaN and
    do not count as tests.
    """
    p = np.asarray(p_values, np.float64)
    out = np.full(p.shape, np.nan)
    ok = ~np.isnan(p)
    if ok.any():
        out[ok] = scipy_stats.false_discovery_control(p[ok], method="bh")
    return out.tolist()
