"""The design space as a whole: error distributions (EDFs), Pareto fronts, error against path length."""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from dataclasses import dataclass

import numpy as np
from scipy import stats

from archsearch.analysis.candidates import budget_sort_key, summarize
from archsearch.analysis.stats import LEVEL, N_BOOT, bootstrap_spearman, interval, seeded_rng
from archsearch.study.records import TrialRecord


@dataclass
class EDF:
    """Complexity-normalised error distribution function of one family (Radosavovic et al. 2019)."""

    family: str
    errors: list[float]
    cdf: list[float]
    n: int
    normalized: bool  # False when the families share no complexity bin (then unweighted across bins)
    bins: list[str]


def edfs(records: list[TrialRecord], *, n_bins: int = 8) -> list[EDF]:
    """Weighted EDF per family, weights matching each family's complexity distribution.

    Complexity bins are the budget groups when trials carry budget labels (an equal-budget study's
    natural bins), otherwise `n_bins` log-spaced params bins. Each family's trials get weights so that
    every bin shared by all families carries equal total weight (pycls's normalisation: a family
    that sampled more large models gains nothing from it); trials outside the shared bins get 0.
    """
    usable = [r for r in records if r.usable]
    if not usable:
        return []
    if all(r.budget != "?" for r in usable):
        bin_of = {id(r): r.budget for r in usable}
    else:
        ps = np.log10([r.params or 1.0 for r in usable])
        edges = np.linspace(ps.min(), ps.max() + 1e-9, n_bins + 1)
        bin_of = {id(r): f"10^{edges[i]:.2f}" for r, i in
                  zip(usable, np.clip(np.digitize(ps, edges) - 1, 0, n_bins - 1), strict=True)}
    fams: dict[str, list[TrialRecord]] = defaultdict(list)
    for r in usable:
        fams[r.family].append(r)
    shared = set.intersection(*({bin_of[id(r)] for r in rs} for rs in fams.values()))
    out = []
    for fam, rs in sorted(fams.items()):
        bins = shared or {bin_of[id(r)] for r in rs}
        count = Counter(bin_of[id(r)] for r in rs)
        w = np.array([1.0 / (count[bin_of[id(r)]] * len(bins)) if bin_of[id(r)] in bins else 0.0 for r in rs])
        errs = np.array([r.value for r in rs], dtype=float)
        order = np.argsort(errs, kind="stable")
        keep = w[order] > 0
        out.append(EDF(fam, errs[order][keep].tolist(), np.cumsum(w[order])[keep].tolist(), len(rs),
                       bool(shared), sorted(bins, key=budget_sort_key)))
    return out


@dataclass
class ParetoPoint:
    name: str
    family: str
    budget: str
    error: float  # mean over seeds
    x: float  # params, MACs or latency (median over seeds)
    on_front: bool


@dataclass
class ParetoFront:
    """Validation error against one cost axis; `front` lists the non-dominated names, cheapest first."""

    axis: str  # params | macs | latency_b1_ms
    points: list[ParetoPoint]
    front: list[str]


def pareto(records: list[TrialRecord], axis: str) -> ParetoFront:
    """Non-dominated candidates (lower error and lower cost) among full-fidelity means."""
    pts = []
    for c in summarize(records):
        x = getattr(c, axis)
        if c.mean is not None and x is not None:
            pts.append(ParetoPoint(c.name, c.family, c.budget, c.mean, float(x), False))
    pts.sort(key=lambda p: (p.x, p.error))
    best, front = math.inf, []
    for p in pts:
        if p.error < best:
            p.on_front, best = True, p.error
            front.append(p.name)
    return ParetoFront(axis, pts, front)


@dataclass
class PathLengthResult:
    """Error against mean path length within one budget (errors are comparable only there)."""

    budget: str
    names: list[str]
    families: list[str]
    path_length: list[float]
    error: list[float]
    std: list[float | None]
    spearman: float | None
    ci: tuple[float, float] | None


def path_length_analysis(
    records: list[TrialRecord], *, seed: int = 0, n_boot: int = N_BOOT, level: float = LEVEL
) -> list[PathLengthResult]:
    """Spearman ρ of mean error vs `path_length_mean` per budget, CI by resampling candidates."""
    cands = [c for c in summarize(records) if c.mean is not None and c.path_length_mean is not None]
    out = []
    for i, budget in enumerate(sorted({c.budget for c in cands}, key=budget_sort_key)):
        cs = sorted((c for c in cands if c.budget == budget), key=lambda c: c.path_length_mean)
        x = np.array([c.path_length_mean for c in cs])
        y = np.array([c.mean for c in cs])
        rho, ci = None, None
        if len(cs) >= 3 and np.ptp(x) > 0 and np.ptp(y) > 0:
            rho = float(stats.spearmanr(x, y).statistic)
            ci = interval(bootstrap_spearman(x, y, n_boot, seeded_rng(seed, 6, i)), level)
        out.append(PathLengthResult(budget, [c.name for c in cs], [c.family for c in cs], x.tolist(),
                                    y.tolist(), [c.std for c in cs], rho, ci))
    return out
