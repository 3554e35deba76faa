"""Contrasts between candidates measured over seeds: the statistics behind every declared question.

Each candidate is a set of per-seed validation errors (points). A *contrast* is a difference of seed means with
a Student-t interval whose degrees of freedom come from the seeds that enter it (paired by seed when both
candidates ran the same ≥ 3 seeds, Welch–Satterthwaite otherwise). No interval is given from fewer than
`MIN_SEEDS` seeds per candidate: with one or two seeds the spread is unknown and an interval would be
zero-width or wildly unstable, so the answer says "needs ≥ 3 seeds" instead.

A *best* question is answered as the set of options not significantly worse than the best (Gupta's subset
selection with Bonferroni-adjusted one-sided Welch tests against every other option): the true best is in the
set with probability ≥ the level, whatever the number of options, and each option is measured by the mean of
its own candidates' seed means — never by the best of several names, which would favour options measured by
more names. With an indifference `margin` (points), a set whose members are all within the margin of one
another (two one-sided tests, TOST) is an answer too: "these options are equivalent within 0.3 points".
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import stats

LEVEL = 0.95
MIN_SEEDS = 3
MAX_SEEDS_ADVICE = 1000  # beyond this, "more seeds" is not an answer: the effect is too small to resolve


@dataclass(frozen=True)
class Sample:
    """A candidate's per-seed errors; `seeds` (same order) lets two candidates pair by seed."""

    name: str
    values: tuple[float, ...]
    seeds: tuple[int, ...] | None = None

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def mean(self) -> float:
        return float(np.mean(self.values)) if self.values else math.nan

    @property
    def var(self) -> float:
        return float(np.var(self.values, ddof=1)) if self.n > 1 else math.nan


@dataclass
class Contrast:
    """mean(a) − mean(b) in points, its interval and the decision it supports.

    `decision` is "+" (a worse: the interval is above `margin`), "-" (a better: below −margin) or "?"; with a
    margin, "=" means the whole interval lies inside ±margin (equivalent). `seeds_to_resolve` estimates the
    seeds per candidate an open contrast would likely need if the effect is as estimated (None when resolved
    or not estimable)."""

    a: str
    b: str
    estimate: float
    low: float | None
    high: float | None
    df: float | None
    n_a: int
    n_b: int
    paired: bool
    decision: str
    status: str = "ok"  # ok | needs_seeds
    seeds_to_resolve: int | None = None
    message: str = ""


def paired_seeds(a: Sample, b: Sample) -> list[tuple[float, float]] | None:
    """The (a, b) values of the seeds both ran, when both ran exactly the same ≥ MIN_SEEDS seeds."""
    if a.seeds is None or b.seeds is None or sorted(a.seeds) != sorted(b.seeds) or a.n < MIN_SEEDS:
        return None
    by_seed = dict(zip(b.seeds, b.values, strict=True))
    return [(va, by_seed[s]) for s, va in zip(a.seeds, a.values, strict=True)]


def difference_se_df(a: Sample, b: Sample) -> tuple[float, float, float, bool]:
    """(estimate, standard error, degrees of freedom, paired) of mean(a) − mean(b)."""
    pairs = paired_seeds(a, b)
    if pairs is not None:
        d = np.array([x - y for x, y in pairs])
        return float(d.mean()), float(d.std(ddof=1) / math.sqrt(len(d))), float(len(d) - 1), True
    va, vb = a.var / a.n, b.var / b.n
    se = math.sqrt(va + vb)
    df = (va + vb) ** 2 / (va**2 / (a.n - 1) + vb**2 / (b.n - 1)) if va + vb > 0 else float(a.n + b.n - 2)
    return a.mean - b.mean, se, df, False


def contrast(a: Sample, b: Sample, *, level: float = LEVEL, margin: float = 0.0) -> Contrast:
    """Two-sided `level` interval of mean(a) − mean(b) and its decision; refused below MIN_SEEDS seeds."""
    if min(a.n, b.n) < MIN_SEEDS:
        short = ", ".join(f"{s.name} has {s.n}" for s in (a, b) if s.n < MIN_SEEDS)
        return Contrast(a.name, b.name, a.mean - b.mean, None, None, None, a.n, b.n, False, "?", "needs_seeds",
                        message=f"needs ≥ {MIN_SEEDS} seeds per candidate ({short})")
    est, se, df, paired = difference_se_df(a, b)
    half = float(stats.t.ppf(0.5 + level / 2, df)) * se
    low, high = est - half, est + half
    decision = "+" if low > margin else "-" if high < -margin else "?"
    if margin > 0 and decision == "?" and -margin < low and high < margin:
        decision = "="
    out = Contrast(a.name, b.name, est, low, high, df, a.n, b.n, paired, decision)
    if decision == "?":
        out.seeds_to_resolve = seeds_to_resolve(est, se * math.sqrt(min(a.n, b.n)), level, margin)
    return out


def seeds_to_resolve(effect: float, sd_per_seed: float, level: float = LEVEL, margin: float = 0.0,
                     power: float = 0.8) -> int | None:
    """Seeds per candidate for a `power` chance that an effect of this size clears its interval (normal
    approximation, planning value = the estimate, so optimistic when the estimate is lucky). None when the
    effect is not distinguishable from the margin at any reasonable number of seeds."""
    gap = abs(effect) - margin
    if not math.isfinite(sd_per_seed) or sd_per_seed <= 0 or gap <= 0:
        return None
    z = stats.norm.ppf(0.5 + level / 2) + stats.norm.ppf(power)
    n = math.ceil((z * sd_per_seed / gap) ** 2)
    return max(n, MIN_SEEDS) if n <= MAX_SEEDS_ADVICE else None


# ------------------------------------------------------------------------------------------ best set
@dataclass
class OptionEstimate:
    """One option (a K, a width…) measured by the mean of its own candidates' seed means."""

    label: str
    value: Any
    names: list[str]
    mean: float
    se: float
    df: float
    n_min: int  # fewest seeds among its candidates


@dataclass
class BestSet:
    """Options not significantly worse than the best (the true best is among them with prob ≥ level)."""

    options: list[OptionEstimate]
    contenders: list[str]  # labels, best mean first
    resolved: bool
    equivalent: bool  # every contender within `margin` of every other (TOST), so the set is the answer
    margin: float
    status: str = "ok"  # ok | needs_seeds | insufficient
    seeds_to_resolve: int | None = None
    message: str = ""
    pairwise: dict[tuple[str, str], tuple[float, float]] = field(default_factory=dict)  # (i, j) -> (diff, bound)


def option_estimate(label: str, value: Any, samples: list[Sample]) -> OptionEstimate:
    """Mean of the candidates' seed means, its standard error and Welch–Satterthwaite df."""
    m = len(samples)
    parts = [s.var / s.n / m**2 for s in samples]
    se2 = float(sum(parts))
    df_den = sum(p**2 / (s.n - 1) for p, s in zip(parts, samples, strict=True))
    df = se2**2 / df_den if df_den > 0 else float(sum(s.n - 1 for s in samples))
    return OptionEstimate(label, value, [s.name for s in samples], float(np.mean([s.mean for s in samples])),
                          math.sqrt(se2), df, min(s.n for s in samples))


def best_set(options: dict[Any, list[Sample]], *, labels: dict[Any, str] | None = None, level: float = LEVEL,
             margin: float = 0.0) -> BestSet:
    """Gupta-style subset selection: option i stays unless, for some j, mean_i − mean_j exceeds margin by more
    than a one-sided Welch t bound at (1 − level)/(k − 1) (Bonferroni over the k − 1 rivals of i)."""
    labels = labels or {}
    names = [labels.get(v, str(v)) for v in options]
    if len(options) < 2:
        return BestSet([], names, False, False, margin, "insufficient",
                       message="fewer than two options measured: nothing to compare")
    short = [f"{s.name} has {s.n}" for samples in options.values() for s in samples if s.n < MIN_SEEDS]
    if short:
        return BestSet([], names, False, False, margin, "needs_seeds",
                       message=f"needs ≥ {MIN_SEEDS} seeds per candidate ({', '.join(short)})")
    ests = sorted((option_estimate(labels.get(v, str(v)), v, samples) for v, samples in options.items()),
                  key=lambda o: o.mean)
    alpha = (1 - level) / (len(ests) - 1)
    pairwise, contenders = {}, []
    for i in ests:
        excluded = False
        for j in ests:
            if i is j:
                continue
            se = math.sqrt(i.se**2 + j.se**2)
            df = _welch_df(i, j)
            bound = margin + float(stats.t.ppf(1 - alpha, df)) * se
            pairwise[(i.label, j.label)] = (i.mean - j.mean, bound)
            excluded |= i.mean - j.mean > bound
        if not excluded:
            contenders.append(i)
    equivalent = margin > 0 and len(contenders) > 1 and _all_equivalent(contenders, level, margin)
    resolved = len(contenders) == 1 or equivalent
    out = BestSet(ests, [o.label for o in contenders], resolved, equivalent, margin, pairwise=pairwise)
    if not resolved:
        out.seeds_to_resolve = _seeds_for_best(contenders, level, margin)
    return out


def _welch_df(i: OptionEstimate, j: OptionEstimate) -> float:
    a, b = i.se**2, j.se**2
    den = a**2 / i.df + b**2 / j.df
    return (a + b) ** 2 / den if den > 0 else i.df + j.df


def _all_equivalent(opts: list[OptionEstimate], level: float, margin: float) -> bool:
    """TOST on every pair: each difference's (1 − 2α) interval, α = (1 − level) / pairs, inside ±margin."""
    pairs = [(a, b) for k, a in enumerate(opts) for b in opts[k + 1:]]
    alpha = (1 - level) / len(pairs)
    for a, b in pairs:
        half = float(stats.t.ppf(1 - alpha, _welch_df(a, b))) * math.sqrt(a.se**2 + b.se**2)
        if abs(a.mean - b.mean) + half >= margin:
            return False
    return True


def _seeds_for_best(contenders: list[OptionEstimate], level: float, margin: float) -> int | None:
    """Seeds per candidate for the runner-up to leave the set (or, with a margin, for the set to become
    equivalent), if the observed gap is the true one."""
    best, second = contenders[0], contenders[1]
    diff_sd = math.sqrt(best.se**2 * best.n_min + second.se**2 * second.n_min)  # per seed, of the difference
    gap = second.mean - best.mean
    if gap > margin:
        return seeds_to_resolve(gap, diff_sd, level, margin)
    room = margin - abs(gap)
    if room <= 0:
        return None
    z = stats.norm.ppf(0.5 + level / 2) + stats.norm.ppf(0.8)
    n = math.ceil((z * diff_sd / room) ** 2)
    return max(n, MIN_SEEDS) if n <= MAX_SEEDS_ADVICE else None


# ------------------------------------------------------------------------------------------ threshold
@dataclass
class ThresholdAnswer:
    """Where Δ(d) = treatment(d) − its declared reference crosses from + (treatment worse) to − (better).

    `n0` is −inf when the treatment is better at every measured depth and +inf when it is still worse at the
    deepest; the interval's ends may be infinite the same way. `signs` per depth: "+", "-" or "?" from each
    depth's own contrast."""

    depths: list[int]
    deltas: list[Contrast]
    n0: float | None
    low: float | None
    high: float | None
    status: str  # crossed | below_range | above_range | needs_seeds | insufficient
    message: str = ""

    @property
    def signs(self) -> dict[int, str]:
        return {d: c.decision for d, c in zip(self.depths, self.deltas, strict=True)}

    @property
    def resolved(self) -> bool:
        """Every depth's sign is known and the interval does not span the whole measured range."""
        return self.status != "needs_seeds" and all(c.decision in "+-" for c in self.deltas)


def threshold(pairs: list[tuple[int, Sample, Sample]], *, level: float = LEVEL, n_boot: int = 4000,
              seed: int = 0) -> ThresholdAnswer:
    """n₀ from declared (depth, treatment, reference) pairs — one reference per treatment, as the question says.

    The interval comes from parametric replicates: every distinct candidate's mean is redrawn once per replicate
    as mean + sd/√n · t_(n−1), so a reference shared by several depths moves all their Δs together, and n₀ of
    each replicate is its last +→− crossing (interpolated)."""
    pairs = sorted(pairs, key=lambda p: p[0])
    depths = [d for d, _, _ in pairs]
    if len(set(depths)) != len(depths):
        raise ValueError(f"two treatments at one depth: {depths}")
    deltas = [contrast(t, r, level=level) for _, t, r in pairs]
    if not pairs:
        return ThresholdAnswer([], [], None, None, None, "insufficient", "no treatment depth measured")
    if any(c.status == "needs_seeds" for c in deltas):
        msg = "; ".join(c.message for c in deltas if c.status == "needs_seeds")
        return ThresholdAnswer(depths, deltas, None, None, None, "needs_seeds", msg)
    d_arr = np.asarray(depths, dtype=float)
    point = float(crossing_depth(d_arr, np.array([[c.estimate for c in deltas]]))[0])
    draws = _mean_draws({s.name: s for _, t, r in pairs for s in (t, r)}, n_boot, seed)
    reps = np.stack([draws[t.name] - draws[r.name] for _, t, r in pairs], axis=1)
    boot = crossing_depth(d_arr, reps)
    a = (1 - level) / 2
    s = np.sort(boot)
    low = float(s[int(math.floor(a * len(s)))])
    high = float(s[max(0, int(math.ceil((1 - a) * len(s))) - 1)])
    status = "crossed" if math.isfinite(point) else ("below_range" if point < 0 else "above_range")
    return ThresholdAnswer(depths, deltas, point, low, high, status)


def _mean_draws(samples: dict[str, Sample], n_boot: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng([seed, 19])
    return {name: s.mean + math.sqrt(s.var / s.n) * rng.standard_t(s.n - 1, size=n_boot)
            for name, s in sorted(samples.items())}


def crossing_depth(depths: np.ndarray, delta: np.ndarray) -> np.ndarray:
    """n₀ for each row of `delta` (rows × depths): the last + → ≤0 crossing, linearly interpolated.

    "Last" makes n₀ the depth past which the treatment is never worse among the measured depths. Rows with
    no positive Δ give −inf; rows positive at the deepest depth give +inf."""
    depths = np.asarray(depths, dtype=float)
    delta = np.atleast_2d(np.asarray(delta, dtype=float))
    rows, d = delta.shape
    pos = delta > 0
    any_pos = pos.any(axis=1)
    last = d - 1 - np.argmax(pos[:, ::-1], axis=1)
    out = np.full(rows, -np.inf)
    out[any_pos & (last == d - 1)] = np.inf
    mid = np.nonzero(any_pos & (last < d - 1))[0]
    i = last[mid]
    y0, y1 = delta[mid, i], delta[mid, i + 1]
    out[mid] = depths[i] + (depths[i + 1] - depths[i]) * y0 / (y0 - y1)
    return out
