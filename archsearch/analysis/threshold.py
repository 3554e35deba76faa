"""n₀: the depth past which a multi-branch network beats the plain one at the same budget.

Δ(d) = error(multi at depth d) − error(plain reference), with t-widened seed-bootstrap intervals
(`archsearch.analysis.stats`); n₀ is where Δ crosses from positive to ≤ 0.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np

from archsearch.analysis.candidates import block_of, budget_sort_key, no_data_message, values_by_name
from archsearch.analysis.contrasts import crossing_depth
from archsearch.analysis.stats import LEVEL, N_BOOT, bootstrap_means, interval, seeded_rng, widened
from archsearch.study.records import TrialRecord


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
        return [N0Result("all", "basic", "insufficient", message=no_data_message("Multi-ResNet/ResNet", present))]
    values: dict[tuple[str, str], np.ndarray] = {
        (b, n): v for b in sorted({r.budget for r in usable})
        for n, v in values_by_name([r for r in usable if r.budget == b]).items()}
    rng = seeded_rng(seed, 1)
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
