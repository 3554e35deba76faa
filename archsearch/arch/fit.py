"""Fit free axes of a spec exactly onto a parameter or MAC budget (no sample-and-reject).

Every fitter searches a finite, explicitly defined feasible set and returns the point whose count
is closest to the target; ties go to the smaller count, then to the smaller value, so a brute-force
search over the same set returns the same point (`tests/space/test_space.py` checks that).

Feasible sets:
- depth / branches: the given list of units per stage / k (counts grow monotonically: bisection).
- width (uniform): stage widths (C*r1, C*r2, C*r3) for the nominal shape r (1:2:4 scaled), C a
  multiple of `divisor` with C/C_nominal in `scale`.
- widths (per stage): every rounding of one common scaling of the nominal widths: (x1, x2, x3)
  multiples of `divisor` with |x_i - s*w_i| < divisor for some s in `scale` (each stage rounded
  down or up). One stage-3 channel moves a 1.7M network by ~2 %, so this lands within +-3 %.
- stem (WarpNet): the stem width C (stages C*kw*(1, 2, 4)), a multiple of `divisor`.
Params and MACs are exact quadratics of the widths, so the widths search evaluates a polynomial
identified from ten exact counts (finite differences) instead of re-walking the network.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from itertools import product

from archsearch.arch.cost import cost
from archsearch.arch.spec import ArchSpec

METRICS = ("params", "macs")


@dataclass(frozen=True)
class Target:
    """A budget on one metric: `value` +- `tolerance` (relative)."""

    metric: str
    value: int
    tolerance: float

    def count_of(self, counts: tuple[int, int]) -> int:
        return counts[0] if self.metric == "params" else counts[1]

    def within(self, counts: tuple[int, int]) -> bool:
        return abs(self.count_of(counts) - self.value) <= self.tolerance * self.value

    def key(self, counts: tuple[int, int]) -> tuple[int, int]:
        c = self.count_of(counts)
        return abs(c - self.value), c


@dataclass(frozen=True)
class Fit:
    """The closest feasible spec found, with its exact (params, macs)."""

    spec: ArchSpec
    params: int
    macs: int

    @property
    def counts(self) -> tuple[int, int]:
        return self.params, self.macs


def exact(spec: ArchSpec) -> Fit:
    c = cost(spec)
    return Fit(spec, c.params, c.macs)


def min_stage_widths(spec: ArchSpec) -> tuple[int, int, int]:
    """Smallest widths a builder accepts: option-A shortcuts cannot reduce channels."""
    if spec.unit == "pre" and spec.shortcut == "pad":
        return (-(-16 // spec.expansion), 1, 1)
    return (1, 1, 1)


def buildable_widths(spec: ArchSpec, widths: Sequence[int]) -> bool:
    if min(widths) < 1:
        return False
    if spec.unit == "pre" and spec.shortcut == "pad":
        channels = [16] + [w * spec.expansion for w in widths]
        return all(b >= a for a, b in zip(channels, channels[1:], strict=False))
    if spec.unit == "post" and spec.shortcut == "pad":
        channels = [w * spec.expansion for w in widths]
        return all(b >= a for a, b in zip(channels, channels[1:], strict=False))
    return True


# ------------------------------------------------------------------ 1-D monotone axes
def fit_values(make: Callable[[int], ArchSpec], values: Sequence[int], target: Target) -> Fit:
    """Closest point of a monotone axis (count grows with the value) by bisection."""
    return closest_value(make, values, target)[1]


def closest_value(make: Callable[[int], ArchSpec], values: Sequence[int], target: Target) -> tuple[int, Fit]:
    """(value, fit) of the closest point of a monotone axis; ties go to the smaller count, then value."""
    values = sorted(set(values))
    if not values:
        raise ValueError("no feasible values to fit")
    lo, hi = 0, len(values) - 1
    cache: dict[int, Fit] = {}

    def at(i: int) -> Fit:
        if i not in cache:
            cache[i] = exact(make(values[i]))
        return cache[i]

    # first index whose count reaches the target
    while lo < hi:
        mid = (lo + hi) // 2
        if target.count_of(at(mid).counts) >= target.value:
            hi = mid
        else:
            lo = mid + 1
    options = [i for i in (lo - 1, lo) if 0 <= i < len(values)]
    best = min(options, key=lambda i: (*target.key(at(i).counts), values[i]))
    return values[best], at(best)


def fit_depth(spec: ArchSpec, target: Target, units: Sequence[int]) -> Fit:
    """Units per stage (uniform) closest to the target; WarpNet values must divide by K."""
    return fit_values(lambda n: replace(spec, units=(n, n, n)), units, target)


def fit_branches(spec: ArchSpec, target: Target, values: Sequence[int]) -> Fit:
    return fit_values(lambda k: replace(spec, branches=k), values, target)


# ------------------------------------------------------------------ widths: exact quadratic
class Quadratic:
    """Exact (params, macs) as a quadratic of the three stage widths, from ten exact counts."""

    BASE = (1000, 2000, 4000)  # far from the one special point (a pre-act stage 1 of 16 channels)

    def __init__(self, spec: ArchSpec) -> None:
        self.spec = spec
        x0 = self.BASE

        def f(d: tuple[int, int, int]) -> tuple[int, int]:
            c = cost(replace(spec, widths=tuple(x + di for x, di in zip(x0, d, strict=True))))
            return c.params, c.macs

        unit = [tuple(1 if i == j else 0 for j in range(3)) for i in range(3)]
        f0 = f((0, 0, 0))
        fp = [f(u) for u in unit]
        fm = [f(tuple(-v for v in u)) for u in unit]
        self.coef: list[tuple] = []
        for m in range(2):
            grad = [(fp[i][m] - fm[i][m]) // 2 for i in range(3)]
            hess = [[0] * 3 for _ in range(3)]
            for i in range(3):
                hess[i][i] = (fp[i][m] + fm[i][m] - 2 * f0[m]) // 2
            for i in range(3):
                for j in range(i + 1, 3):
                    both = tuple(unit[i][t] + unit[j][t] for t in range(3))
                    hess[i][j] = f(both)[m] - fp[i][m] - fp[j][m] + f0[m]
            self.coef.append((f0[m], grad, hess))
        self._special = spec.unit == "pre" and spec.shortcut == "proj"

    def __call__(self, widths: Sequence[float]) -> tuple:
        if self._special and all(float(w).is_integer() for w in widths) and widths[0] * self.spec.expansion == 16:
            c = cost(replace(self.spec, widths=tuple(int(w) for w in widths)))
            return c.params, c.macs
        d = [w - x for w, x in zip(widths, self.BASE, strict=True)]
        out = []
        for f0, grad, hess in self.coef:
            v = f0 + grad[0] * d[0] + grad[1] * d[1] + grad[2] * d[2]
            for i in range(3):
                v += hess[i][i] * d[i] * d[i]
                for j in range(i + 1, 3):
                    v += hess[i][j] * d[i] * d[j]
            out.append(v)
        return tuple(out)


def widths_combos(nominal: Sequence[int], s: float, divisor: int) -> list[tuple[int, int, int]]:
    """Every rounding (down or up to a multiple of divisor) of s * nominal."""
    options = []
    for w in nominal:
        x = s * w / divisor
        lo, hi = math.floor(x) * divisor, math.ceil(x) * divisor
        options.append({lo, hi} - {0})
    return [tuple(c) for c in product(*options)]  # type: ignore[misc]


def fit_widths(spec: ArchSpec, target: Target, nominal: Sequence[int] | None = None, divisor: int = 1,
               scale: tuple[float, float] = (0.25, 4.0), uniform: bool = False) -> Fit:
    """Closest per-stage widths (rounded common scaling of `nominal`) or uniform C (see module doc)."""
    nominal = tuple(nominal or spec.widths)
    quad = Quadratic(spec)
    m = 0 if target.metric == "params" else 1

    def value(widths: Sequence[float]) -> float:
        return quad(widths)[m]

    if uniform:
        r = nominal[0]
        cs = range(max(divisor, math.ceil(scale[0] * r / divisor) * divisor), int(scale[1] * r) + 1, divisor)
        shape = [n / r for n in nominal]
        good = [c for c in cs if all((c * x).is_integer() for x in shape)
                and buildable_widths(spec, [int(c * x) for x in shape])]
        if not good:
            raise ValueError("no uniform width fits the shape")
        return fit_values(lambda c: replace(spec, widths=tuple(int(c * x) for x in shape)), good, target)

    s_lo, s_hi = scale
    # continuous solution of value(s * nominal) = target (monotone in s)
    a, b = s_lo, s_hi
    if value([s_lo * w for w in nominal]) >= target.value:
        s_star = s_lo
    elif value([s_hi * w for w in nominal]) <= target.value:
        s_star = s_hi
    else:
        for _ in range(60):
            mid = (a + b) / 2
            if value([mid * w for w in nominal]) < target.value:
                a = mid
            else:
                b = mid
        s_star = (a + b) / 2

    def key(widths: tuple[int, int, int]) -> tuple:
        v = int(value(widths))
        return abs(v - target.value), v, widths

    half = 0.04
    while True:
        left, right = max(s_lo, s_star * (1 - half)), min(s_hi, s_star * (1 + half))
        points = {left, right}
        for w in nominal:
            first, last = math.ceil(left * w / divisor), math.floor(right * w / divisor)
            points.update(m_ * divisor / w for m_ in range(first, last + 1))
        ordered = sorted(p for p in points if left <= p <= right)
        samples = ordered + [(p + q) / 2 for p, q in zip(ordered, ordered[1:], strict=False)]
        best: tuple | None = None
        for s in samples:
            for combo in widths_combos(nominal, s, divisor):
                if not buildable_widths(spec, combo):
                    continue
                k = key(combo)
                if best is None or k < best:
                    best = k
        # optimality: nothing left of `left` / right of `right` can be closer
        done_left = left <= s_lo or (best is not None and value(
            [math.ceil(left * w / divisor) * divisor for w in nominal]) < target.value - best[0])
        done_right = right >= s_hi or (best is not None and value(
            [math.floor(right * w / divisor) * divisor for w in nominal]) > target.value + best[0])
        if done_left and done_right:
            break
        half *= 2
    if best is None:
        raise ValueError("no buildable widths in the scale range")
    return exact(replace(spec, widths=best[2]))


def _in_scale(widths: Sequence[int], nominal: Sequence[int], divisor: int, scale: tuple[float, float]) -> bool:
    """Some s in scale rounds to these widths: the open intervals (x -+ d)/w intersect [lo, hi]."""
    lo = max([scale[0]] + [(x - divisor) / w for x, w in zip(widths, nominal, strict=True)])
    hi = min([scale[1]] + [(x + divisor) / w for x, w in zip(widths, nominal, strict=True)])
    exact_hit = all(x == lo * w for x, w in zip(widths, nominal, strict=True)) or all(
        x == hi * w for x, w in zip(widths, nominal, strict=True))
    return lo < hi or (lo == hi and exact_hit)


def fit_stem(spec: ArchSpec, target: Target, stems: Sequence[int]) -> Fit:
    """WarpNet stem width C (stages C*kw*(1, 2, 4)) closest to the target."""
    kw = spec.widths[0] // spec.stem

    def make(c: int) -> ArchSpec:
        return replace(spec, stem=c, widths=(c * kw, 2 * c * kw, 4 * c * kw))

    return fit_values(make, stems, target)


def fit_joint(outer: Sequence[int], inner: Sequence[int], make: Callable[[int, int], ArchSpec], target: Target,
              nominal_inner: int) -> Fit:
    """Two axes together (e.g. a WarpNet's units per stage U and stem width C).

    Many pairs land inside the tolerance (U and C trade off), so among those the pair whose inner
    value is closest to its nominal wins (ties: closest count, then smaller outer value); when no pair
    lands inside, the closest count wins. Counts grow with the outer value, so inner values are
    visited in order of deviation from nominal, each with the closest outer value by bisection,
    stopping at the first deviation that has a pair inside the tolerance.
    """
    best_inside: tuple | None = None
    best_any: tuple | None = None
    for value in sorted(set(inner), key=lambda v: (abs(v - nominal_inner), v)):
        deviation = abs(value - nominal_inner)
        if best_inside is not None and deviation > best_inside[0]:
            break
        try:
            o, f = closest_value(lambda o, value=value: make(o, value), outer, target)
        except ValueError:
            continue
        any_key = (target.key(f.counts), o, f)
        if best_any is None or any_key[:2] < best_any[:2]:
            best_any = any_key
        if target.within(f.counts):
            key = (deviation, target.key(f.counts), o, f)
            if best_inside is None or key[:3] < best_inside[:3]:
                best_inside = key
    if best_inside is not None:
        return best_inside[3]
    if best_any is None:
        raise ValueError("no feasible point")
    return best_any[2]
