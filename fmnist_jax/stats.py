"""Statistics over members: mean ± std, paired differences between grid points, and their formatting.

One owner for how every report, summary and table states an accuracy, so they agree to the digit.
"""

from __future__ import annotations

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


def paired(a: Sequence[dict], b: Sequence[dict], key: str) -> tuple[float, float]:
    """Mean of b - a over the same (fold, seed) members, and the paired t-test's two-sided p-value.

    NaN when the two points do not share exactly the same members, or (p only) with fewer than two
    or no spread of differences (the t statistic is then undefined).
    """
    va = {(m["fold"], m["seed"]): m[key] for m in a}
    vb = {(m["fold"], m["seed"]): m[key] for m in b}
    if set(va) != set(vb):
        return float("nan"), float("nan")
    order = sorted(va)
    x, y = np.array([va[k] for k in order]), np.array([vb[k] for k in order])
    delta = float((y - x).mean())
    if len(order) < 2 or np.all(y - x == (y - x)[0]):
        return delta, float("nan")
    return delta, float(scipy_stats.ttest_rel(y, x).pvalue)
