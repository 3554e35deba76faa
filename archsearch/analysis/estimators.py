"""Answers from a study: n₀, best K, WRN width vs depth, EDFs, Pareto fronts, fidelity checks.

Everything here is pure computation on plain `TrialRecord`s (read from a study by
`archsearch.study.records.load_records`), so the same code runs on an Optuna study, on a synthetic
population in a test, or on records from elsewhere.

Rules shared by every answer:
- Only full-fidelity COMPLETE trials with a finite value feed them (`TrialRecord.usable`); pruned,
  failed and reduced-fidelity trials never do. A question without such trials returns a result with
  status "insufficient" and the reason, never a guess or an exception.
- Trials with the same canonical name are seeds of one candidate. A candidate's error is the mean
  over its seeds.
- Intervals are percentile bootstraps over seeds: each candidate's seeds are resampled with
  replacement (independently per candidate), the resampled mean's deviation is scaled by √(n/(n−1))
  (unbiased variance), and the percentile interval is widened about the estimate by t_df/z with
  df = Σ(seeds − 1) over the candidates involved. The plain bootstrap under-covers with 3–5 seeds;
  this one covers at about its nominal level (tests/test_analysis.py plants the truth and checks).
  A candidate with one seed does not vary; results report `min_seeds` / `n` so a reader can tell.
- Every bootstrap takes a `seed`; each question draws from its own stream, so adding a question does
  not change another's numbers.
"""

from __future__ import annotations

import math
import re
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import stats

from archsearch.study.records import TrialRecord

LEVEL = 0.95
N_BOOT = 2000
BEST_K_GROUPS = {  # family asked about → families whose trials enter (the K = 1 baseline included)
    "multiresnet": ("multiresnet", "resnet"),
    "dmrnet": ("dmrnet", "postresnet"),
    "dvanet": ("dvanet", "postresnet"),
    "warpnet": ("warpnet",),
}


def budget_sort_key(label: str) -> tuple[float, str]:
    """Order budget labels by the number they spell ("0.29M" < "1.7M"), unknown labels last."""
    m = re.fullmatch(r"\s*([0-9.]+)\s*([kKmMgG]?)\S*\s*", label)
    if not m:
        return (math.inf, label)
    scale = {"": 1, "k": 1e3, "m": 1e6, "g": 1e9}[m.group(2).lower()]
    try:
        return (float(m.group(1)) * scale, label)
    except ValueError:
        return (math.inf, label)


def block_of(name: str) -> str:
    """Block kind of a ResNet/Multi-ResNet name; n₀ and best k compare only within one kind."""
    if "-bottleneck" in name:
        return "bottleneck"
    return "wide" if re.search(r"-w\d", name) else "basic"


# ----------------------------------------------------------------------------------- summaries
@dataclass
class CandidateSummary:
    """One canonical name: its seeds' errors and its complexity."""

    name: str
    family: str
    budget: str
    depth: int | None
    branches: int | None
    width: int | None
    n: int  # full-fidelity seeds
    mean: float | None
    std: float | None
    params: float | None
    macs: float | None
    latency_b1_ms: float | None
    path_length_mean: float | None
    test_error: float | None
    n_pruned: int
    n_failed: int


def summarize(records: list[TrialRecord]) -> list[CandidateSummary]:
    """Per canonical name: mean ± std over full-fidelity seeds, counts of pruned/failed trials."""
    by_name: dict[tuple[str, str], list[TrialRecord]] = defaultdict(list)
    for r in records:
        by_name[(r.name, r.budget)].append(r)
    out = []
    for (name, _), rs in by_name.items():
        ok = [r for r in rs if r.usable]
        vals = np.array([r.value for r in ok], dtype=float)
        first = (ok or rs)[0]
        tests = [r.test_error for r in ok if r.test_error is not None]
        out.append(
            CandidateSummary(
                name=name,
                family=first.family,
                budget=first.budget,
                depth=first.depth,
                branches=first.branches,
                width=first.width,
                n=len(ok),
                mean=float(vals.mean()) if len(ok) else None,
                std=float(vals.std(ddof=1)) if len(ok) > 1 else None,
                params=first.params,
                macs=first.macs,
                latency_b1_ms=_median([r.latency_b1_ms for r in ok]),
                path_length_mean=first.path_length_mean,
                test_error=float(np.mean(tests)) if tests else None,
                n_pruned=sum(r.state == "PRUNED" for r in rs),
                n_failed=sum(r.state == "FAIL" for r in rs),
            )
        )
    inf = math.inf
    out.sort(key=lambda c: (c.family, budget_sort_key(c.budget), inf if c.mean is None else c.mean))
    return out


def _median(xs: list[float | None]) -> float | None:
    xs = [x for x in xs if x is not None]
    return float(np.median(xs)) if xs else None


# ----------------------------------------------------------------------------------- bootstrap
def _values_by_name(records: list[TrialRecord]) -> dict[str, np.ndarray]:
    out: dict[str, list[float]] = defaultdict(list)
    for r in records:
        if r.usable:
            out[r.name].append(float(r.value))  # type: ignore[arg-type]
    return {k: np.asarray(v) for k, v in sorted(out.items())}


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


def _rng(seed: int, *stream: int) -> np.random.Generator:
    return np.random.default_rng([seed, *stream])


# ----------------------------------------------------------------------------------- n₀
@dataclass
class DeltaPoint:
    """Δ(d) = error(multi at depth d) − error(plain reference at the same budget), in points."""

    depth: int
    delta: float
    ci: tuple[float, float]
    multi: list[str]
    plain: str
    budget: str


@dataclass
class N0Result:
    """Where Δ(d) crosses from positive (multi worse) to ≤ 0 (multi better).

    `n0` is −inf when multi is already better at the shallowest measured depth, +inf when it is still
    worse at the deepest (status "below_range" / "above_range"); the interval's ends may be infinite
    the same way. `p_crossed` is the share of bootstrap replicates (t-widened like the Δ intervals) that
    cross inside the range.
    """

    budget: str  # a budget label, or "all" for the paper's reading across budgets
    block: str
    status: str  # crossed | below_range | above_range | insufficient
    n0: float | None = None
    ci: tuple[float, float] | None = None
    p_crossed: float | None = None
    points: list[DeltaPoint] = field(default_factory=list)
    min_seeds: int = 0
    message: str = ""

    def describe(self, short: bool = False) -> str:
        """One line: "n₀ = 22.4 (interval 18.7 – >30)", or why there is no n₀."""
        if self.status == "insufficient" or self.n0 is None or not self.points:
            return self.message
        lo, hi = self.points[0].depth, self.points[-1].depth

        def depth(v: float) -> str:
            return f"<{lo}" if v == -math.inf else f">{hi}" if v == math.inf else f"{v:.1f}"

        head = {"crossed": f"n₀ = {self.n0:.1f}", "below_range": f"n₀ < {lo}", "above_range": f"n₀ > {hi}"}
        why = {"below_range": " (multi better at every measured depth)",
               "above_range": " (multi not better at the deepest measured depth)"}
        head = head[self.status] + ("" if short else why.get(self.status, ""))
        ci = "" if self.ci is None else f" (interval {depth(self.ci[0])} – {depth(self.ci[1])})"
        return head + ci


def crossing_depth(depths: np.ndarray, delta: np.ndarray) -> np.ndarray:
    """n₀ for each row of `delta` (rows × depths): the last + → ≤0 crossing, linearly interpolated.

    "Last" makes n₀ the depth past which multi is never worse among the measured depths. Rows with
    no positive Δ give −inf; rows positive at the deepest depth give +inf.
    """
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


def n0_analysis(
    records: list[TrialRecord], *, seed: int = 0, n_boot: int = N_BOOT, level: float = LEVEL
) -> list[N0Result]:
    """n₀ per (budget, block kind), then across budgets when more than one budget has a pair.

    Pairing: in a budget group the plain reference is the k = 1 candidate of lowest mean error (the
    best way to spend that budget on depth alone; re-chosen in every bootstrap replicate); with one
    plain candidate, the usual case, it is simply that one. Multi candidates (k > 1) of the same
    depth are averaged. Across budgets (the Multi-ResNet paper's Table II reading: one pair per
    budget) every budget's Δ(d) joins one curve; Δs at the same depth are averaged.
    Wide Multi-ResNets (`-w`) are left out: their plain reference would be a WRN, not a ResNet.
    """
    fams = ("multiresnet", "resnet")
    present = [r for r in records if r.family in fams]
    if not present:
        return []
    usable = [r for r in present if r.usable and block_of(r.name) != "wide"]
    if not usable:
        return [N0Result("all", "basic", "insufficient", message=_no_data("Multi-ResNet/ResNet", present))]
    values: dict[tuple[str, str], np.ndarray] = {
        (b, n): v for b in sorted({r.budget for r in usable})
        for n, v in _values_by_name([r for r in usable if r.budget == b]).items()}
    rng = _rng(seed, 1)
    boots = {k: bootstrap_means(v, n_boot, rng) for k, v in values.items()}
    meta = {(r.budget, r.name): r for r in usable}
    groups: dict[tuple[str, str], list[tuple[str, str]]] = defaultdict(list)
    for key in meta:
        groups[(key[0], block_of(key[1]))].append(key)
    results, pooled = [], defaultdict(list)
    for (budget, block), keys in sorted(groups.items(), key=lambda kv: (kv[0][1], budget_sort_key(kv[0][0]))):
        plain = [k for k in keys if (meta[k].branches or 1) == 1]
        multi: dict[int, list[tuple[str, str]]] = defaultdict(list)
        for k in keys:
            if (meta[k].branches or 1) > 1 and meta[k].depth is not None:
                multi[meta[k].depth].append(k)
        if not plain or not multi:
            missing = "plain (k = 1)" if not plain else "multi (k > 1)"
            msg = f"no full-fidelity {missing} candidate at budget {budget}"
            results.append(N0Result(budget, block, "insufficient", message=msg))
            continue
        ref_boot = np.min([boots[k] for k in plain], axis=0)
        ref = min(plain, key=lambda k: values[k].mean())
        rows = []
        for depth in sorted(multi):
            used = frozenset(multi[depth] + plain)
            point = float(np.mean([values[k].mean() for k in multi[depth]]) - values[ref].mean())
            boot = np.mean([boots[k] for k in multi[depth]], axis=0) - ref_boot
            ci = interval(boot, level, point=point, df=_df(values, used))
            dp = DeltaPoint(depth, point, ci, [k[1] for k in multi[depth]], ref[1], budget)
            rows.append((depth, point, boot, dp, used))
            pooled[block].append(rows[-1])
        results.append(_n0_from_rows(budget, block, rows, values, level))
    for block, rows in pooled.items():
        if len({row[3].budget for row in rows}) < 2:
            continue
        by_depth: dict[int, list] = defaultdict(list)
        for row in rows:
            by_depth[row[0]].append(row)
        merged = []
        for depth, rs in sorted(by_depth.items()):
            point = float(np.mean([r[1] for r in rs]))
            boot = np.mean([r[2] for r in rs], axis=0)
            used = frozenset().union(*(r[4] for r in rs))
            pts = [r[3] for r in rs]
            ci = interval(boot, level, point=point, df=_df(values, used))
            dp = DeltaPoint(depth, point, ci, sum((p.multi for p in pts), []),
                            "+".join(p.plain for p in pts), "+".join(p.budget for p in pts))
            merged.append((depth, point, boot, dp, used))
        results.append(_n0_from_rows("all", block, merged, values, level))
    return results


def _df(values: dict, used: frozenset) -> int:
    return sum(len(values[k]) - 1 for k in used)


def _n0_from_rows(budget: str, block: str, rows: list, values: dict, level: float) -> N0Result:
    depths = np.array([r[0] for r in rows], dtype=float)
    point = float(crossing_depth(depths, np.array([[r[1] for r in rows]]))[0])
    # n₀'s replicates come from the t-widened Δ replicates, so its interval is as wide as theirs
    # (widening n₀ itself is impossible when it is ±inf, and a censored n₀ must not look resolved
    # while a Δ interval spans 0)
    widened_deltas = [widened(r[2], r[1], _df(values, r[4]), level) for r in rows]
    boot = crossing_depth(depths, np.stack(widened_deltas, axis=1))
    used = frozenset().union(*(r[4] for r in rows))
    status = "crossed" if math.isfinite(point) else ("below_range" if point < 0 else "above_range")
    ci = interval(boot, level)
    return N0Result(budget, block, status, point, ci, float(np.isfinite(boot).mean()),
                    [r[3] for r in rows], min(len(values[k]) for k in used))


def _no_data(what: str, present: list[TrialRecord]) -> str:
    c = Counter(r.state for r in present)
    partial = sum(r.state == "COMPLETE" and not r.full_fidelity for r in present)
    detail = ", ".join(f"{n} {s.lower()}" for s, n in sorted(c.items()))
    extra = f"; {partial} complete below full fidelity" if partial else ""
    return f"insufficient data: no full-fidelity COMPLETE {what} trial ({detail}{extra})"


# ----------------------------------------------------------------------------------- best of
@dataclass
class Option:
    """One choice (a K, or a WRN candidate): its best candidate's mean error, CI, P(best)."""

    label: str
    value: Any
    name: str  # the candidate that carries this option (lowest mean among its names)
    names: list[str]
    mean: float
    std: float | None
    n: int
    ci: tuple[float, float]
    p_best: float


@dataclass
class BestResult:
    """The option of lowest mean error, with each option's bootstrap probability of being best."""

    question: str  # "best K" | "WRN width/depth"
    family: str
    budget: str
    status: str  # ok | insufficient
    best: Option | None = None
    options: list[Option] = field(default_factory=list)
    message: str = ""


def best_of(
    options: dict[Any, list[str]], values: dict[str, np.ndarray], *, labels: dict[Any, str] | None = None,
    seed: int = 0, n_boot: int = N_BOOT, level: float = LEVEL, stream: tuple[int, ...] = (),
) -> tuple[Option, list[Option]]:
    """Argmin of mean error over options; an option with several names counts its best one.

    P(best) is the share of bootstrap replicates in which the option has the lowest error (the best
    name re-chosen in each). The interval is the chosen option's own replicate distribution.
    """
    rng = _rng(seed, 2, *stream)
    keys = list(options)
    boots = {n: bootstrap_means(values[n], n_boot, rng) for k in keys for n in options[k]}
    opt_boot = np.stack([np.min([boots[n] for n in options[k]], axis=0) for k in keys])
    p = np.bincount(np.argmin(opt_boot, axis=0), minlength=len(keys)) / n_boot
    out = []
    for i, k in enumerate(keys):
        name = min(options[k], key=lambda n: values[n].mean())
        v = values[name]
        ci = interval(opt_boot[i], level, point=float(v.mean()), df=len(v) - 1)
        out.append(Option((labels or {}).get(k, str(k)), k, name, list(options[k]), float(v.mean()),
                          float(v.std(ddof=1)) if len(v) > 1 else None, len(v), ci, float(p[i])))
    return min(out, key=lambda o: o.mean), out


def best_k(
    records: list[TrialRecord], *, seed: int = 0, n_boot: int = N_BOOT, level: float = LEVEL
) -> list[BestResult]:
    """Best K per family (dmrnet, dvanet, multiresnet by block kind, warpnet) and budget.

    The K = 1 baseline (postresnet for dmrnet/dvanet, resnet for multiresnet) joins at budgets where
    the family has trials. Several names with one K (e.g. both of DMRNet Fig. 7's settings) count
    the best of them for that K; the per-name table shows them all.
    """
    results = []
    for f_i, (family, fams) in enumerate(BEST_K_GROUPS.items()):
        present = [r for r in records if r.family == family]
        if not present:
            continue
        group = [r for r in records if r.family in fams and r.usable and block_of(r.name) != "wide"]
        main = [r for r in group if r.family == family]
        if not main:
            msg = _no_data(family, present)
            results.append(BestResult("best K", family, "all", "insufficient", message=msg))
            continue
        keys = sorted({(r.budget, block_of(r.name)) for r in main},
                      key=lambda k: (k[1], budget_sort_key(k[0])))
        for i, (budget, block) in enumerate(keys):
            rs = [r for r in group if r.budget == budget and block_of(r.name) == block]
            label = family if block == "basic" else f"{family} ({block})"
            results.append(_best_of_records(
                "best K", label, budget, rs, lambda r: r.branches or 1, lambda k: f"K={k}",
                seed=seed, stream=(3, f_i, i), n_boot=n_boot, level=level))
    return results


def wrn_analysis(
    records: list[TrialRecord], *, seed: int = 0, n_boot: int = N_BOOT, level: float = LEVEL
) -> list[BestResult]:
    """Best WRN depth × width per budget; plain basic ResNets join as the deep-and-thin option."""
    present = [r for r in records if r.family == "wrn"]
    if not present:
        return []
    main = [r for r in present if r.usable]
    if not main:
        return [BestResult("WRN width/depth", "wrn", "all", "insufficient", message=_no_data("wrn", present))]
    deep = [r for r in records if r.family == "resnet" and r.usable and block_of(r.name) == "basic"]
    results = []
    for i, budget in enumerate(sorted({r.budget for r in main}, key=budget_sort_key)):
        rs = [r for r in main + deep if r.budget == budget]
        results.append(_best_of_records(
            "WRN width/depth", "wrn", budget, rs, lambda r: r.name,
            lambda n: n, seed=seed, stream=(4, i), n_boot=n_boot, level=level))
    return results


def _best_of_records(question, family, budget, rs, key_fn, label_fn, *, seed, stream, n_boot, level):
    values = _values_by_name(rs)
    options: dict[Any, list[str]] = defaultdict(list)
    for name in values:
        options[key_fn(next(r for r in rs if r.name == name))].append(name)
    options = dict(sorted(options.items(), key=lambda kv: str(kv[0]) if isinstance(kv[0], str) else kv[0]))
    if len(options) < 2:
        only = ", ".join(label_fn(k) for k in options)
        return BestResult(question, family, budget, "insufficient",
                          message=f"only one option measured at full fidelity ({only}): nothing to compare")
    best, opts = best_of(options, values, labels={k: label_fn(k) for k in options},
                         seed=seed, stream=stream, n_boot=n_boot, level=level)
    return BestResult(question, family, budget, "ok", best, opts)


# ----------------------------------------------------------------------------------- EDFs
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


# ----------------------------------------------------------------------------------- Pareto
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


# ----------------------------------------------------------------------------------- path length
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
            ci = interval(_boot_spearman(x, y, n_boot, _rng(seed, 6, i)), level)
        out.append(PathLengthResult(budget, [c.name for c in cs], [c.family for c in cs], x.tolist(),
                                    y.tolist(), [c.std for c in cs], rho, ci))
    return out


def _boot_spearman(x: np.ndarray, y: np.ndarray, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """Spearman ρ of resampled pairs, vectorised; degenerate resamples (a constant side) are NaN."""
    idx = rng.integers(0, len(x), size=(n_boot, len(x)))
    rx = stats.rankdata(x[idx], axis=1)
    ry = stats.rankdata(y[idx], axis=1)
    rx -= rx.mean(axis=1, keepdims=True)
    ry -= ry.mean(axis=1, keepdims=True)
    den = np.sqrt((rx**2).sum(axis=1) * (ry**2).sum(axis=1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, (rx * ry).sum(axis=1) / den, np.nan)


# ----------------------------------------------------------------------------------- fidelity
@dataclass
class RungCorrelation:
    """How well the error at one ASHA rung ranks the final error of full-fidelity trials."""

    epoch: int
    n: int
    spearman: float
    spearman_ci: tuple[float, float]
    kendall: float
    kendall_p: float
    warn: bool
    reason: str


@dataclass
class FidelityCheck:
    """Rank agreement between ASHA's rungs and the final error, for one family or "all"."""

    family: str
    status: str  # ok | warn | insufficient
    rungs: list[RungCorrelation] = field(default_factory=list)
    message: str = ""


def rung_epochs(records: list[TrialRecord]) -> list[int]:
    """ASHA's rungs as the study shows them: the epochs where pruned trials stopped.

    Without pruned trials, powers of two below the maximum epoch stand in for them.
    """
    max_ep = max((r.max_epochs or max(r.intermediate, default=0) for r in records), default=0)
    stops = {r.epochs or max(r.intermediate, default=0) for r in records if r.state == "PRUNED"}
    rungs = sorted(e for e in stops if 0 < e < max_ep)
    if rungs or max_ep < 2:
        return rungs
    return [2**i for i in range(int(math.log2(max_ep)) + 1) if 2**i < max_ep]


def fidelity_check(
    records: list[TrialRecord], *, rungs: list[int] | None = None, min_trials: int = 5,
    threshold: float = 0.5, seed: int = 0, n_boot: int = N_BOOT, level: float = LEVEL,
) -> list[FidelityCheck]:
    """Spearman and Kendall correlation of each rung's error with the final error, per family.

    "all" (first, when there are several families) pools them, as ASHA itself ranks them together. A rung warns when ρ <
    `threshold` or its interval reaches 0; rungs that fewer than `min_trials` full-fidelity trials
    reached are skipped. The trials are the survivors of ASHA, so the range is restricted and ρ is,
    if anything, pessimistic about the rungs.
    """
    rungs = rung_epochs(records) if rungs is None else sorted(rungs)
    usable = [r for r in records if r.usable]
    fams = sorted({r.family for r in usable})
    out = []
    for i, fam in enumerate(["all", *fams] if len(fams) > 1 else fams):
        rs = [r for r in usable if fam == "all" or r.family == fam]
        checks = []
        for epoch in rungs:
            pair = [(r.intermediate[epoch], r.value) for r in rs if epoch in r.intermediate]
            if len(pair) < min_trials:
                continue
            x, y = (np.array(v, dtype=float) for v in zip(*pair, strict=True))
            if np.ptp(x) == 0 or np.ptp(y) == 0:
                checks.append(RungCorrelation(epoch, len(x), math.nan, (math.nan, math.nan), math.nan,
                                              math.nan, True, "constant errors: no ranking information"))
                continue
            rho = float(stats.spearmanr(x, y).statistic)
            kt = stats.kendalltau(x, y)
            ci = interval(_boot_spearman(x, y, n_boot, _rng(seed, 5, i, epoch)), level)
            reasons = []
            if rho < threshold:
                reasons.append(f"Spearman {rho:.2f} < {threshold}")
            if not ci[0] > 0:
                reasons.append(f"interval [{ci[0]:.2f}, {ci[1]:.2f}] reaches 0")
            checks.append(RungCorrelation(epoch, len(x), rho, ci, float(kt.statistic), float(kt.pvalue),
                                          bool(reasons), "; ".join(reasons)))
        if not checks:
            msg = (f"no rung reached by ≥ {min_trials} full-fidelity trials" if rs
                   else f"insufficient data: no full-fidelity COMPLETE {fam} trial")
            out.append(FidelityCheck(fam, "insufficient", [], msg))
            continue
        warned = [c for c in checks if c.warn]
        msg = ("; ".join(f"epoch {c.epoch}: {c.reason}" for c in warned) if warned
               else f"every rung ranks the final error with Spearman ≥ {threshold}")
        out.append(FidelityCheck(fam, "warn" if warned else "ok", checks, msg))
    return out


# ----------------------------------------------------------------------------------- everything
@dataclass
class StudyAnalysis:
    """All answers for one study, computed once; plots and the report only read this."""

    states: dict[str, int]
    n_full_fidelity: int
    candidates: list[CandidateSummary]
    n0: list[N0Result]
    best_k: list[BestResult]
    wrn: list[BestResult]
    edf: list[EDF]
    pareto: list[ParetoFront]
    path_length: list[PathLengthResult]
    fidelity: list[FidelityCheck]
    seed: int
    n_boot: int
    level: float
    precisions: dict[str, int] = field(default_factory=dict)  # among the trials that feed answers

    @property
    def mixed_precision(self) -> bool:
        """Answers built from trials trained in different precisions (e.g. a cluster of mixed CPUs)."""
        return len(self.precisions) > 1


def analyze(
    records: list[TrialRecord], *, seed: int = 0, n_boot: int = N_BOOT, level: float = LEVEL,
    rungs: list[int] | None = None,
) -> StudyAnalysis:
    """Every question a study answers, from its records (deterministic for a given `seed`)."""
    kw = {"seed": seed, "n_boot": n_boot, "level": level}
    return StudyAnalysis(
        states=dict(Counter(r.state for r in records)),
        n_full_fidelity=sum(r.usable for r in records),
        candidates=summarize(records),
        n0=n0_analysis(records, **kw),
        best_k=best_k(records, **kw),
        wrn=wrn_analysis(records, **kw),
        edf=edfs(records),
        pareto=[pareto(records, axis) for axis in ("params", "macs", "latency_b1_ms")],
        path_length=path_length_analysis(records, **kw),
        fidelity=fidelity_check(records, rungs=rungs, **kw),
        seed=seed,
        n_boot=n_boot,
        level=level,
        precisions=dict(Counter(r.precision or "unrecorded" for r in records if r.usable)),
    )
