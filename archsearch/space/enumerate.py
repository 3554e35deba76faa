"""Enumerating a space: every grid point of every family and each candidate, fitted onto its budget.

`SpaceBuilder.build` checks the families and candidates (`validate`), walks the axis grid, fits each
point's free axes (`fitting`), records what cannot meet its budget, and hands the feasible points to
the sampling tree (`tree`).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from archsearch.arch.cost import path_stats
from archsearch.arch.families import family as family_info
from archsearch.arch.fit import Fit, Target, exact
from archsearch.arch.spec import ArchSpec, parse_name
from archsearch.errors import ConfigError, SpecError
from archsearch.space.fitting import convs_per_function, default_fit, family_depth, fit_spec, targets_of
from archsearch.space.results import Candidate, Infeasible, SearchSpace
from archsearch.space.schema import Budget, CandidateEntry, FitConfig, SpaceConfig, group_labels
from archsearch.space.tree import decision_tree
from archsearch.space.validate import DEFAULTS, check_candidate, check_family, config_error

MAX_GRID = 20000
CANDIDATES = "candidates"


def _fmt(value: int) -> str:
    return f"{value:,}"


class SpaceBuilder:
    """Builds one `SearchSpace` from a validated config (collects points, paths and infeasible ones)."""

    def __init__(self, config: SpaceConfig, source: str) -> None:
        self.config = config
        self.source = source
        self.points: list[Candidate] = []
        self.paths: list[list[tuple[str, Any]]] = []
        self.infeasible: list[Infeasible] = []
        self.axes: dict[str, dict[str, list[Any]]] = {}
        self.fit_axes: dict[str, list[Any]] = {}
        self.ranges: dict[str, tuple[int, int, int]] = {}
        self.placed: set[tuple[str, str]] = set()  # (budget label, families.<key>) with a feasible point

    def error(self, key: str, reason: str) -> ConfigError:
        return config_error(self.source, key, reason)

    # -------------------------------------------------------------- nominal specs
    def _nominal(self, name: str, v: dict[str, Any]) -> ArchSpec:
        """The spec of a grid point at its nominal widths, spelled as a name of its family."""
        fam = family_info(name)
        kernels = str(v["kernels"])
        tokens = [name, str(fam.depth(3 * v["units"], convs_per_function(v["function"], kernels)))]
        if fam.positional_widening:
            tokens.append(str(v["w" if fam.widening == "wrn" else "kw"]))
        if fam.branch_token:
            tokens.append(f"{fam.branch_token}{v[fam.branch_token]}")
        if fam.unit == "warp":
            tokens += [f"v{v['variant']}"] + (["nobn"] if v["nobn"] else [])
            tokens += [f"c{v['stem']}"] if v["stem"] != 16 else []
        if fam.widening == "suffix":
            tokens += [f"w{v['w']}"] if v["w"] != 1 else []
            tokens += ["bottleneck"] if v["function"] == "bottleneck" else []
        if kernels != "33":
            tokens.append(f"b{kernels}")
        if v["shortcut"] != "default" and fam.unit != "warp":
            tokens.append(v["shortcut"])
        if v["dropout"]:
            tokens.append(f"drop{v['dropout']}")
        return parse_name("-".join(tokens), num_classes=self.config.num_classes)

    # -------------------------------------------------------------- fitting
    def _targets(self, budget: Budget) -> list[Target]:
        return targets_of(budget)

    def _evaluate(self, spec: ArchSpec, family: str, fit: FitConfig | None, budget: Budget,
                  ranges: dict[str, list[int]], where: str, what: str) -> Fit | None:
        """The on-budget fit of a point, or None (recorded as infeasible)."""
        targets = self._targets(budget)
        try:
            result = exact(spec) if budget.method == "filter" or fit is None else fit_spec(spec, fit, budget, ranges)
        except (ValueError, SpecError) as exc:
            self.infeasible.append(Infeasible(where, what, budget, None, str(exc)))
            return None
        if all(t.within(result.counts) for t in targets):
            return result
        self.infeasible.append(Infeasible(where, what, budget, result))
        return None

    # -------------------------------------------------------------- enumeration
    def build(self) -> SearchSpace:
        cfg = self.config
        families: dict[str, tuple[dict[str, list[Any]], FitConfig]] = {}
        for name, fam in cfg.families.items():
            families[name] = check_family(self.source, name, fam, self.ranges)
        labels = [b.label for b in cfg.budgets]
        for i, entry in enumerate(cfg.candidates):
            check_candidate(self.source, cfg.num_classes, i, entry, labels)
        size = sum(len(cfg.budgets) * _product(len(v) for v in vals.values()) for vals, _ in families.values())
        if size > MAX_GRID:
            raise self.error("families", f"{size} grid points exceed the limit of {MAX_GRID}; narrow the axes")

        multi_budget = len(cfg.budgets) > 1
        groups = list(families) + ([CANDIDATES] if cfg.candidates else [])
        for budget in cfg.budgets:
            for fam_name, (values, fit) in families.items():
                base = fam_name.split(":")[0]
                fitted_axes = set(fit.flat()) if budget.method == "fit" else set()
                sampled = {a: vs for a, vs in values.items() if a not in fitted_axes or a == "w"}
                sampled = {a: vs for a, vs in sampled.items() if not (a == "depth" and "depth" in fitted_axes)}
                self.axes[fam_name] = {a: vs for a, vs in sampled.items()}
                self.fit_axes[fam_name] = list(fit.axes) if budget.method == "fit" else []
                ranges = self._fit_ranges(fam_name, values, fitted_axes)
                for combo in _combinations(sampled):
                    v = dict(DEFAULTS)
                    v.update(combo)
                    v["units"] = self._start_units(base, v, ranges)
                    what = ", ".join(f"{a}={combo[a]}" for a in sampled if len(sampled[a]) > 1) or fam_name
                    where = f"families.{fam_name}"
                    try:
                        spec = self._nominal(base, v)
                    except SpecError as exc:
                        raise self.error(where, f"{what}: {exc}") from None
                    result = self._evaluate(spec, base, fit, budget, ranges, where, what)
                    if result is None:
                        continue
                    self.placed.add((budget.label, where))
                    path: list[tuple[str, Any]] = []
                    if multi_budget:
                        path.append(("budget", budget.label))
                    if len(groups) > 1:
                        path.append(("family", fam_name))
                    path += [(f"{fam_name}.{a}", combo[a]) for a in sampled if len(sampled[a]) > 1]
                    self._add(result, base, budget, True, path, "axes", spec, fit if budget.method == "fit"
                              else None, dict(combo), ranges, group_labels(cfg.families[fam_name].group))
            for i, entry in enumerate(cfg.candidates):
                if (entry.budget or labels[0]) != budget.label:
                    continue
                self._add_candidate(i, entry, budget, multi_budget, len(groups) > 1)
        if not cfg.budgets:
            for i, entry in enumerate(cfg.candidates):
                self._add_candidate(i, entry, None, False, False)
        self._raise_infeasible()
        if not self.points:
            raise self.error("budgets", "no candidate of the space meets its budget")
        root, points = decision_tree(self.points, self.paths, self.ranges)
        return SearchSpace(cfg, self.source, points, self.infeasible, self.axes, self.fit_axes, root)

    def _fit_ranges(self, family: str, values: dict[str, list[Any]], fitted: set[str]) -> dict[str, list[int]]:
        ranges: dict[str, list[int]] = {}
        if "depth" in fitted and "depth" in values:
            convs = convs_per_function(values.get("function", ["basic"])[0], str(values.get("kernels", ["33"])[0]))
            base = family.split(":")[0]
            ranges["depth"] = [u for d in values["depth"] if (u := family_info(base).units_per_stage(int(d), convs))]
        for axis in ("k", "K", "stem"):
            if axis in fitted and axis in values and getattr(self.config.families[family], axis) is not None:
                ranges[axis] = [int(x) for x in values[axis]]
        return ranges

    @staticmethod
    def _start_units(name: str, v: dict[str, Any], ranges: dict[str, list[int]]) -> int:
        if "depth" in v and v["depth"] is not None and "depth" not in ranges:
            convs = convs_per_function(v["function"], str(v["kernels"]))
            units = family_info(name).units_per_stage(int(v["depth"]), convs)
            if units is not None:
                return units
        start = ranges.get("depth") or [1]
        base = v["K"] if family_info(name).unit == "warp" else 1
        return next((u for u in start if u % base == 0), base)

    def _add_candidate(self, i: int, entry: CandidateEntry, budget: Budget | None, multi_budget: bool,
                       multi_group: bool) -> None:
        spec = parse_name(entry.name, num_classes=self.config.num_classes)
        family = entry.family or entry.name.split("-")[0].lower()
        fit: FitConfig | None = None
        if entry.fit:
            fit = entry.fit if isinstance(entry.fit, FitConfig) else default_fit(spec.family)
        ident = entry.id or (entry.name + ("@fit" if fit else ""))
        if budget is None:
            result: Fit | None = exact(spec)
        elif fit is None:
            result = exact(spec)  # listed as is: recorded with its own (possibly off-budget) counts
        else:
            result = self._evaluate(spec, spec.family, fit, budget.model_copy(update={"method": "fit"}), {},
                                    f"candidates.{i}", entry.name)
            if result is None:
                return
        assert result is not None
        targets = self._targets(budget) if budget else []
        path: list[tuple[str, Any]] = []
        if multi_budget and budget is not None:
            path.append(("budget", budget.label))
        if multi_group:
            path.append(("family", CANDIDATES))
        path.append(("candidate", ident))
        on_budget = all(t.within(result.counts) for t in targets)  # vacuously true without a budget
        self._add(result, family, budget, on_budget, path, "candidate", spec, fit, {"name": entry.name},
                  groups=group_labels(entry.group))

    def _add(self, result: Fit, family: str, budget: Budget | None, on_budget: bool, path: list[tuple[str, Any]],
             source: str, nominal: ArchSpec, fit: FitConfig | None, axes: dict[str, Any],
             ranges: dict[str, list[int]] | None = None, groups: tuple[str, ...] = ()) -> None:
        spec = result.spec
        if any(p == path for p in self.paths):
            raise self.error("candidates", f"two points share the choices {dict(path)} (give candidates an id)")
        fitted: dict[str, Any] = {}
        if fit is not None:
            for axis in fit.flat():
                if axis == "depth":
                    fitted["depth"] = family_depth(family, spec)
                elif axis in ("k", "K"):
                    fitted[axis] = spec.branches
                elif axis == "stem":
                    fitted["stem"] = spec.stem
                else:
                    fitted[axis] = list(spec.widths)
        _, mean, _ = path_stats(spec)
        self.paths.append(path)
        self.points.append(Candidate(spec=spec, family=family, depth=family_depth(family, spec),
                                     budget=budget.label if budget else "", params=result.params, macs=result.macs,
                                     on_budget=on_budget, path_length_mean=mean, fitted=fitted,
                                     trial_params={}, source=source, axes=axes, nominal=nominal, fit=fit,
                                     fit_ranges=dict(ranges or {}), groups=groups))

    def _raise_infeasible(self) -> None:
        """Off-budget combinations are errors, unless skipped (`infeasible: skip`, or a filter budget).

        Even then, a family left with no point on a budget, or a fitted candidate that cannot be
        fitted, is an error.
        """
        for bad in self.infeasible:
            family = bad.where.startswith("families.")
            lonely = family and (bad.budget.label, bad.where) not in self.placed
            strict = family and self.config.infeasible == "error" and bad.budget.method == "fit"
            if lonely or strict or not family:
                raise self._infeasible_error(bad, hint=strict)

    def _infeasible_error(self, bad: Infeasible, hint: bool) -> ConfigError:
        targets = self._targets(bad.budget)
        if len(targets) == 2 and bad.closest is not None and targets[0].within(bad.closest.counts):
            reason = (f"params {_fmt(targets[0].value)} and macs {_fmt(targets[1].value)} contradict: "
                      f"{bad.what} on the params budget has macs {_fmt(bad.closest.macs)}")
            return self.error(f"budgets.{self.config.budgets.index(bad.budget)}", reason)
        reason = _infeasible_reason(bad, targets, bad.what)
        return self.error(bad.where, reason + ("; set infeasible: skip to drop such combinations" if hint else ""))


def _infeasible_reason(bad: Infeasible, targets: list[Target], what: str) -> str:
    budget = " and ".join(f"{t.metric} {_fmt(t.value)} ±{t.tolerance:.1%}" for t in targets)
    if bad.closest is None:
        return f"{what}: cannot meet budget {bad.budget.label} ({budget}): {bad.reason}"
    c = bad.closest
    return (f"{what}: cannot meet budget {bad.budget.label} ({budget}); closest achievable is {c.spec.name} with "
            f"params {_fmt(c.params)}, macs {_fmt(c.macs)}")


def _product(xs: Iterable[int]) -> int:
    out = 1
    for x in xs:
        out *= x
    return out


def _combinations(axes: dict[str, list[Any]]) -> list[dict[str, Any]]:
    combos: list[dict[str, Any]] = [{}]
    for axis, values in axes.items():
        combos = [c | {axis: v} for c in combos for v in values]
    return combos
