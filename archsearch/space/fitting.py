"""Fitting a space's points onto their budgets: the free axes in order, solved by `archsearch.arch.fit`."""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

from archsearch.arch.families import family as family_info
from archsearch.arch.fit import Fit, Target, exact, fit_branches, fit_depth, fit_joint, fit_stem, fit_widths
from archsearch.arch.spec import ArchSpec
from archsearch.space.schema import Budget, FitConfig

DEFAULT_UNITS = tuple(range(1, 65))  # depth search range when a fitted depth has no axis


def targets_of(budget: Budget) -> list[Target]:
    """The budget's targets: params first (the fitted metric) when given, then MACs."""
    out = []
    if budget.params is not None:
        out.append(Target("params", budget.params, budget.tolerance))
    if budget.macs is not None:
        tol = budget.macs_tolerance if budget.macs_tolerance is not None else budget.tolerance
        out.append(Target("macs", budget.macs, tol))
    return out

def _axis_candidates(spec: ArchSpec, axis: str, fit: FitConfig, ranges: dict[str, list[int]]) -> list[int]:
    """Feasible values of a discrete fitted axis: units per stage, k/K or the WarpNet stem width."""
    if axis == "depth":
        units = ranges.get("depth") or list(DEFAULT_UNITS)
        return [u for u in units if spec.unit != "warp" or u % spec.warp_k == 0]
    if axis in ("k", "K"):
        return ranges.get(axis) or list(range(1, 65))
    d = fit.divisor
    first = max(d, math.ceil(fit.scale[0] * spec.stem / d) * d)
    return ranges.get("stem") or list(range(first, int(fit.scale[1] * spec.stem) + 1, d))


def _set_axis(spec: ArchSpec, axis: str, value: int) -> ArchSpec:
    if axis == "depth":
        return replace(spec, units=(value, value, value))
    if axis in ("k", "K"):
        return replace(spec, branches=value)
    kw = spec.widths[0] // spec.stem
    return replace(spec, stem=value, widths=(value * kw, 2 * value * kw, 4 * value * kw))


def _nominal_value(spec: ArchSpec, axis: str) -> int:
    return {"depth": spec.units[0], "k": spec.branches, "K": spec.branches}.get(axis, spec.stem)


def fit_spec(spec: ArchSpec, fit: FitConfig | list[Any], budget: Budget,
             ranges: dict[str, list[int]] | None = None) -> Fit:
    """Solve the free axes of `spec` in `fit` order onto the budget's first target (see fit.py).

    Each listed axis is solved exactly given the current values of the others (so an earlier axis is
    chosen closest with the later ones at their nominal values); a pair [outer, inner] is solved
    jointly (`fit.fit_joint`). `ranges` restricts the feasible values of a fitted depth (units per
    stage), k/K or stem. Returns the closest point found; the caller checks the tolerance.
    """
    if isinstance(fit, list):
        fit = FitConfig(axes=fit)
    ranges = ranges or {}
    target = targets_of(budget)[0]
    current = exact(spec)
    for group in fit.axes:
        s = current.spec
        if isinstance(group, list):
            outer, inner = group
            current = fit_joint(_axis_candidates(s, outer, fit, ranges), _axis_candidates(s, inner, fit, ranges),
                                lambda o, i, s=s, outer=outer, inner=inner: _set_axis(_set_axis(s, outer, o), inner, i),
                                target, _nominal_value(s, inner))
        elif group == "depth":
            current = fit_depth(s, target, _axis_candidates(s, "depth", fit, ranges))
        elif group in ("k", "K"):
            current = fit_branches(s, target, _axis_candidates(s, group, fit, ranges))
        elif group == "stem":
            current = fit_stem(s, target, _axis_candidates(s, "stem", fit, ranges))
        else:
            current = fit_widths(s, target, divisor=fit.divisor, scale=fit.scale, uniform=group == "width")
    return current


def convs_per_function(function: str, kernels: str) -> int:
    return 3 if function == "bottleneck" else len(kernels)


def family_depth(name: str, spec: ArchSpec) -> int:
    """A spec's depth in the naming convention of family `name`."""
    return family_info(name).depth(spec.total_units, spec.convs_per_function)


def default_fit(name: str) -> FitConfig:
    return FitConfig(axes=[list(g) if isinstance(g, tuple) else g for g in family_info(name).default_fit])
