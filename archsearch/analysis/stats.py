"""Bootstrap over seeds: replicates of a mean, percentile intervals widened by Student's t, seeded streams.

Intervals are percentile bootstraps over seeds: each candidate's seeds are resampled with
replacement (independently per candidate), the resampled mean's deviation is scaled by √(n/(n−1))
(unbiased variance), and the percentile interval is widened about the estimate by t_df/z with
df = Σ(seeds − 1) over the candidates involved. The plain bootstrap under-covers with 3–5 seeds;
this one covers at about its nominal level (tests/analysis/test_analysis.py plants the truth and checks).
Every bootstrap takes a `seed`; each question draws from its own stream (`seeded_rng`), so adding
a question does not change another's numbers.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import stats

LEVEL = 0.95
N_BOOT = 2000


def bootstrap_means(values: np.ndarray, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """Bootstrap replicates of a mean over seeds; deviations scaled by √(n/(n−1)) (unbiased variance)."""
    values = np.asarray(values, dtype=float)
    n, m = len(values), float(np.mean(values))
    if n < 2:
        return np.full(n_boot, m)
    resampled = values[rng.integers(0, n, size=(n_boot, n))].mean(axis=1)
    return m + (resampled - m) * math.sqrt(n / (n - 1))


def interval(
    samples: np.ndarray, level: float = LEVEL, *, point: float | None = None, df: int | None = None
) -> tuple[float, float]:
    """Percentile interval by order statistics, so ±inf replicates (censored n₀) stay meaningful.

    With `point` and `df` the interval is widened about the point by t_df / z: the bootstrap gives
    the shape, Student's t the small-sample width (a 5-seed mean's plain bootstrap under-covers).
    `df` is the pooled degrees of freedom, Σ(seeds − 1) over the candidates the quantity uses.
    """
    s = np.sort(np.asarray(samples, dtype=float))
    s = s[~np.isnan(s)]
    if len(s) == 0:
        return (math.nan, math.nan)
    a = (1.0 - level) / 2.0
    lo = float(s[min(len(s) - 1, int(math.floor(a * len(s))))])
    hi = float(s[max(0, int(math.ceil((1.0 - a) * len(s))) - 1)])
    if point is None or df is None or df < 1 or not math.isfinite(point):
        return (lo, hi)
    f = t_widening(df, level)
    return (point - (point - lo) * f, point + (hi - point) * f)


def t_widening(df: int, level: float = LEVEL) -> float:
    """t_df / z at `level`: how much a bootstrap interval of a mean over few seeds must be widened."""
    a = (1.0 - level) / 2.0
    return float(stats.t.ppf(1.0 - a, df) / stats.norm.ppf(1.0 - a)) if df >= 1 else 1.0


def widened(samples: np.ndarray, point: float, df: int, level: float = LEVEL) -> np.ndarray:
    """Bootstrap replicates scaled about `point` by t_df / z: their percentile interval is `interval`'s
    t-widened one, and quantities derived from several of them (n₀ from Δ at each depth) inherit it."""
    return point + (np.asarray(samples, dtype=float) - point) * t_widening(df, level)


def seeded_rng(seed: int, *stream: int) -> np.random.Generator:
    """The generator of one question's stream: (seed, question, ...) keeps questions' draws apart."""
    return np.random.default_rng([seed, *stream])


def bootstrap_spearman(x: np.ndarray, y: np.ndarray, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """Spearman ρ of resampled pairs, vectorised; degenerate resamples (a constant side) are NaN."""
    idx = rng.integers(0, len(x), size=(n_boot, len(x)))
    rx = stats.rankdata(x[idx], axis=1)
    ry = stats.rankdata(y[idx], axis=1)
    rx -= rx.mean(axis=1, keepdims=True)
    ry -= ry.mean(axis=1, keepdims=True)
    den = np.sqrt((rx**2).sum(axis=1) * (ry**2).sum(axis=1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, (rx * ry).sum(axis=1) / den, np.nan)
