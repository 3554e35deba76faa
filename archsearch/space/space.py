"""Search spaces: YAML -> every on-budget candidate, and Optuna define-by-run sampling over them.

A space (schema in `archsearch.space.schema`) names families with their axes, explicit candidates
and one or more budgets. Loading enumerates the full grid once and fits each point's free axes
exactly onto its budget (`archsearch.arch.fit`, counts from `archsearch.arch.cost`), so sampling only
ever yields candidates on the budget: nothing is sampled blindly and rejected.

Sampling is a walk down the decision tree budget -> family -> axes (or -> candidate). Each decision
is one `trial.suggest_*` with a readable name (`budget`, `family`, `multiresnet.depth`,
`multiresnet.k`, `candidate`). When the feasible choices of a decision depend on earlier ones
(possible with `infeasible: skip` or a `filter` budget) the name carries the earlier choices, e.g.
`multiresnet.k|depth=110`, because Optuna needs one distribution per parameter name.
`grid_params` gives, for every grid point, the dict that `study.enqueue_trial` needs for `sample` to
reproduce it (Optuna's GridSampler cannot express conditional axes).
"""

from __future__ import annotations

import hashlib
import json
import math
import random
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from archsearch.arch.cost import path_stats
from archsearch.arch.families import family as family_info
from archsearch.arch.families import family_names, is_family
from archsearch.arch.fit import (
    Fit,
    Target,
    exact,
    fit_branches,
    fit_depth,
    fit_joint,
    fit_stem,
    fit_widths,
)
from archsearch.arch.spec import ArchSpec, parse_name
from archsearch.errors import ConfigError, SpecError
from archsearch.space.schema import (
    AXIS_ORDER,
    Budget,
    CandidateEntry,
    Family,
    FitConfig,
    Range,
    SpaceConfig,
)

MAX_GRID = 20000
DEFAULT_UNITS = tuple(range(1, 65))  # depth search range when a fitted depth has no axis
DEFAULTS: dict[str, Any] = {"function": "basic", "k": 1, "K": 2, "w": 1, "kw": 1, "stem": 16, "kernels": "33",
                            "variant": 1, "nobn": False, "shortcut": "default", "dropout": 0.0}
CANDIDATES = "candidates"


# ------------------------------------------------------------------ results
@dataclass(frozen=True)
class Candidate:
    """One point of a space: its spec, exact counts and the suggest-parameters that select it."""

    spec: ArchSpec
    family: str
    depth: int
    budget: str
    params: int
    macs: int
    on_budget: bool
    path_length_mean: float
    fitted: dict[str, Any] = field(default_factory=dict)
    trial_params: dict[str, Any] = field(default_factory=dict)
    source: str = "axes"
    axes: dict[str, Any] = field(default_factory=dict)
    nominal: ArchSpec | None = None  # the spec before fitting (its axes at nominal widths/depth)
    fit: FitConfig | None = None  # how it was fitted (None: taken as is)
    fit_ranges: dict[str, list[int]] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def branches(self) -> int:
        return self.spec.k

    @property
    def width(self) -> int:
        return self.spec.widths[0]

    def user_attrs(self) -> dict[str, Any]:
        """The Optuna user attributes of docs/contracts.md that a sampled trial stores."""
        return {"name": self.name, "spec": self.spec.to_json(), "family": self.family, "depth": self.depth,
                "branches": self.branches, "width": self.width, "params": self.params, "macs": self.macs,
                "budget": self.budget, "path_length_mean": self.path_length_mean, "fitted": dict(self.fitted),
                "on_budget": self.on_budget}

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "family": self.family, "depth": self.depth, "branches": self.branches,
                "width": self.width, "params": self.params, "macs": self.macs, "budget": self.budget,
                "on_budget": self.on_budget, "path_length_mean": self.path_length_mean,
                "fitted": dict(self.fitted), "trial_params": dict(self.trial_params), "source": self.source,
                "spec": self.spec.to_dict()}


@dataclass
class Infeasible:
    """An axis combination no fit puts on its budget, with the closest count achievable."""

    where: str
    what: str
    budget: Budget
    closest: Fit | None
    reason: str = ""


@dataclass
class _Node:
    base: str = ""
    choices: dict[Any, Any] = field(default_factory=dict)  # value -> _Node | int (point index)
    prefix: tuple[tuple[str, Any], ...] = ()
    param: str | None = None
    int_range: tuple[int, int, int] | None = None


@dataclass
class SearchSpace:
    """A loaded, validated and fully enumerated search space."""

    config: SpaceConfig
    path: str
    points: list[Candidate]
    infeasible: list[Infeasible]
    axes: dict[str, dict[str, list[Any]]]  # family -> axis -> values (sampled axes only)
    fit_axes: dict[str, list[Any]]
    root: _Node = field(default_factory=_Node)

    @property
    def name(self) -> str:
        return self.config.name or Path(self.path).stem

    @property
    def fingerprint(self) -> str:
        return space_fingerprint(self)

    def budget(self, label: str) -> Budget:
        return next(b for b in self.config.budgets if b.label == label)


# ------------------------------------------------------------------ public API
def load_space(path: str | Path) -> SearchSpace:
    """Read, validate and enumerate a space file; any problem is a one-line ConfigError FILE: KEY: reason."""
    from archsearch.yamlfile import load_yaml

    return space_from_dict(load_yaml(path), source=str(path))


def space_from_dict(raw: Any, source: str = "<space>") -> SearchSpace:
    """Validate a parsed space (as `load_space` does for a file)."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: top level: expected a mapping of keys (budgets, families, candidates)")
    try:
        config = SpaceConfig.model_validate(raw)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = ".".join(str(p) for p in err["loc"] if not str(p).startswith(("function-", "union[", "list[")))
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
        raise ConfigError(f"{source}: {loc or 'top level'}: {msg}") from None
    return _Builder(config, source).build()


def grid(space: SearchSpace) -> list[Candidate]:
    """Every feasible point of the space (the exhaustive baseline), in a stable order."""
    return list(space.points)


def grid_params(space: SearchSpace) -> list[dict[str, Any]]:
    """Per grid point, the params that make `sample` reproduce it when passed to `study.enqueue_trial`."""
    return [dict(c.trial_params) for c in space.points]


def sample_candidate(trial: Any, space: SearchSpace) -> Candidate:
    """Walk the decision tree with `trial.suggest_*` and return the chosen candidate (no attrs set)."""
    node: Any = space.root
    while isinstance(node, _Node):
        values = list(node.choices)
        if node.param is None:
            value = values[0]
        elif node.int_range is not None:
            low, high, step = node.int_range
            value = trial.suggest_int(node.param, low, high, step=step)
        else:
            value = trial.suggest_categorical(node.param, values)
        if value not in node.choices:
            raise ConfigError(f"{space.path}: {node.param}: value {value!r} is not one of {values}")
        node = node.choices[value]
    return space.points[node]


def sample(trial: Any, space: SearchSpace) -> ArchSpec:
    """Sample an on-budget spec through `trial.suggest_*` and store its record as user attributes."""
    candidate = sample_candidate(trial, space)
    for key, value in candidate.user_attrs().items():
        trial.set_user_attr(key, value)
    return candidate.spec


def space_fingerprint(space: SearchSpace | SpaceConfig) -> str:
    """Stable hash of what the space means (validated config, not comments or key order)."""
    config = space.config if isinstance(space, SearchSpace) else space
    meaning = config.model_dump(mode="json", exclude={"description"})  # the description is cosmetic
    text = json.dumps({"v": 1, "space": meaning}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class RandomTrial:
    """A minimal seeded stand-in for `optuna.Trial` (uniform choices), for the CLI and tests."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.params: dict[str, Any] = {}
        self.user_attrs: dict[str, Any] = {}

    def suggest_categorical(self, name: str, choices: list[Any]) -> Any:
        self.params[name] = self.rng.choice(list(choices))
        return self.params[name]

    def suggest_int(self, name: str, low: int, high: int, step: int = 1) -> int:
        self.params[name] = self.rng.randrange(low, high + 1, step)
        return self.params[name]

    def set_user_attr(self, key: str, value: Any) -> None:
        self.user_attrs[key] = value


def random_samples(space: SearchSpace, n: int, seed: int = 0) -> list[Candidate]:
    """n candidates drawn as a uniform random sampler would draw them (same seed, same draws)."""
    rng = random.Random(seed)
    return [sample_candidate(RandomTrial(rng), space) for _ in range(n)]


# ------------------------------------------------------------------ fitting
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


# ------------------------------------------------------------------ depth conventions
def convs_per_function(function: str, kernels: str) -> int:
    return 3 if function == "bottleneck" else len(kernels)


def family_depth(name: str, spec: ArchSpec) -> int:
    """A spec's depth in the naming convention of family `name`."""
    return family_info(name).depth(spec.total_units, spec.convs_per_function)


def default_fit(name: str) -> FitConfig:
    return FitConfig(axes=[list(g) if isinstance(g, tuple) else g for g in family_info(name).default_fit])


# ------------------------------------------------------------------ the builder
def _axis_values(value: Any) -> tuple[list[Any], tuple[int, int, int] | None]:
    if isinstance(value, Range):
        return value.values(), (value.low, value.high, value.step)
    if isinstance(value, list):
        return list(value), None
    return [value], None


def _fmt(value: int) -> str:
    return f"{value:,}"


class _Builder:
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
        return ConfigError(f"{self.source}: {key}: {reason}")

    # -------------------------------------------------------------- validation of axes
    def _check_family(self, group: str, fam: Family) -> tuple[dict[str, list[Any]], FitConfig]:
        key = f"families.{group}"
        name = group.split(":")[0]
        if not is_family(name):
            raise self.error(key, f"unknown family {name!r}; known: {', '.join(family_names())} "
                                  f"(optionally tagged, as in warpnet:sequential)")
        fam_def = family_info(name)
        allowed = fam_def.axes
        for axis in fam.given_axes():
            if axis not in allowed:
                raise self.error(f"{key}.{axis}", f"axis does not apply to {name} (its axes: {', '.join(allowed)})")
        fit = fam.fit or default_fit(name)
        for axis in fit.flat():
            if axis not in fam_def.fit_axes:
                free = ", ".join(fam_def.fit_axes)
                raise self.error(f"{key}.fit", f"cannot fit {axis!r} for {name} (free axes: {free})")
        for group in fit.axes:
            if isinstance(group, list) and not set(group) <= {"depth", "k", "K", "stem"}:
                raise self.error(f"{key}.fit", f"a joint pair fits discrete axes (depth, k, K, stem), not {group}")
        if len(set(fit.flat())) != len(fit.flat()):
            raise self.error(f"{key}.fit", "an axis is listed twice")
        if {"width", "widths"} <= set(fit.flat()):
            raise self.error(f"{key}.fit", "fit either width (uniform) or widths (per stage), not both")
        values: dict[str, list[Any]] = {}
        for axis in AXIS_ORDER:
            if axis not in allowed:
                continue
            given = getattr(fam, axis)
            if given is None:
                if axis == "depth" and "depth" not in fit.flat():
                    raise self.error(f"{key}.depth", "required (or list depth under fit)")
                if axis == "k" and "k" not in fit.flat():
                    raise self.error(f"{key}.k", f"required for {name} (k functions per unit)")
                if axis == "kw":
                    raise self.error(f"{key}.kw", f"required for {name} (widening factor)")
                if axis == "depth":
                    continue
                vals, rng = [DEFAULTS[axis]], None
            else:
                vals, rng = _axis_values(given)
            if not vals:
                raise self.error(f"{key}.{axis}", "empty list of choices")
            if len(set(map(repr, vals))) != len(vals):
                raise self.error(f"{key}.{axis}", f"repeated choices in {vals}")
            for v in vals:
                problem = self._check_value(name, axis, v)
                if problem:
                    raise self.error(f"{key}.{axis}", problem)
            values[axis] = vals
            if rng is not None:
                self.ranges[f"{name}.{axis}"] = rng
        # depth values must follow the family's convention for every function/kernels choice
        for function in values.get("function", ["basic"]):
            for kernels in values.get("kernels", ["33"]):
                convs = convs_per_function(function, str(kernels))
                for d in values.get("depth", []):
                    if fam_def.units_per_stage(int(d), convs) is None:
                        rule = fam_def.rule_text(convs, "N" if fam_def.depth_per_unit else "n")
                        raise self.error(f"{key}.depth", f"{d} is not a {name} depth ({rule}, n >= 1)")
        return values, fit

    @staticmethod
    def _check_value(family: str, axis: str, v: Any) -> str:
        def is_int(x: Any) -> bool:
            return isinstance(x, int) and not isinstance(x, bool)

        if axis in ("depth", "k", "K", "w", "kw", "stem"):
            return "" if is_int(v) and v >= 1 else f"{v!r} must be an integer >= 1"
        if axis == "function":
            if v not in ("basic", "bottleneck"):
                return f"{v!r} must be basic or bottleneck"
            return "" if family != "wrn" else "wrn functions are basic"
        if axis == "kernels":
            text = str(v)
            ok = text.isdigit() and all(c in "135" for c in text)
            return "" if ok else f"{v!r} must be kernel sizes from 1, 3, 5 such as '33' or '131'"
        if axis == "variant":
            return "" if v in (1, 2) and is_int(v) else f"{v!r} must be 1 or 2"
        if axis == "nobn":
            return "" if isinstance(v, bool) else f"{v!r} must be true or false"
        if axis == "shortcut":
            return "" if v in ("pad", "proj", "default") else f"{v!r} must be pad, proj or default"
        if axis == "dropout":
            ok = isinstance(v, int | float) and not isinstance(v, bool) and 0 <= v < 1
            return "" if ok else f"{v!r} must be a rate in [0, 1)"
        return ""

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
            families[name] = self._check_family(name, fam)
        labels = [b.label for b in cfg.budgets]
        for i, entry in enumerate(cfg.candidates):
            self._check_candidate(i, entry, labels)
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
                              else None, dict(combo), ranges)
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
        space = SearchSpace(cfg, self.source, self.points, self.infeasible, self.axes, self.fit_axes)
        space.root = self._tree()
        return space

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

    def _check_candidate(self, i: int, entry: CandidateEntry, labels: list[str]) -> None:
        key = f"candidates.{i}"
        try:
            spec = parse_name(entry.name, num_classes=self.config.num_classes)
        except SpecError as exc:
            raise self.error(f"{key}.name", str(exc).split("; valid forms")[0]) from None
        if entry.budget is not None and entry.budget not in labels:
            raise self.error(f"{key}.budget", f"unknown budget {entry.budget!r}; budgets: {labels}")
        if entry.budget is None and len(labels) > 1:
            raise self.error(f"{key}.budget", f"required: which budget group ({', '.join(labels)})")
        if entry.fit and not labels:
            raise self.error(f"{key}.fit", "fitting needs a budget")
        family = entry.family or entry.name.split("-")[0].lower()
        if isinstance(entry.fit, FitConfig):
            for axis in entry.fit.flat():
                if axis not in family_info(spec.family).fit_axes:
                    raise self.error(f"{key}.fit", f"cannot fit {axis!r} for {spec.family}")
        del family

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
        self._add(result, family, budget, on_budget, path, "candidate", spec, fit, {"name": entry.name})

    def _add(self, result: Fit, family: str, budget: Budget | None, on_budget: bool, path: list[tuple[str, Any]],
             source: str, nominal: ArchSpec, fit: FitConfig | None, axes: dict[str, Any],
             ranges: dict[str, list[int]] | None = None) -> None:
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
                                     fit_ranges=dict(ranges or {})))

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

    def _tree(self) -> _Node:
        root = _Node()
        for index, (point, path) in enumerate(zip(self.points, self.paths, strict=True)):
            node = root
            for depth_i, (base, value) in enumerate(path):
                node.base = base
                node.prefix = tuple(path[:depth_i])
                if depth_i == len(path) - 1:
                    node.choices[value] = index
                else:
                    node = node.choices.setdefault(value, _Node())
            if not path:
                root.choices[None] = index
            del point
        # parameter names: plain where every node of that base offers the same choices
        by_base: dict[str, list[_Node]] = {}
        stack = [root]
        while stack:
            node = stack.pop()
            if len(node.choices) > 1:
                by_base.setdefault(node.base, []).append(node)
            stack.extend(c for c in node.choices.values() if isinstance(c, _Node))
        for base, nodes in by_base.items():
            sets = {tuple(map(repr, n.choices)) for n in nodes}
            plain = len(sets) == 1
            for n in nodes:
                if plain:
                    n.param = base
                    rng = self.ranges.get(base)
                    if rng is not None and list(n.choices) == list(range(rng[0], rng[1] + 1, rng[2])):
                        n.int_range = rng
                else:
                    n.param = base + "|" + ",".join(f"{k.split('.')[-1]}={v}" for k, v in n.prefix if k != "family")
        # record each point's trial params
        for index, path in enumerate(self.paths):
            node: Any = root
            params: dict[str, Any] = {}
            for _, value in path:
                if node.param is not None:
                    params[node.param] = value
                node = node.choices[value]
            point = self.points[index]
            self.points[index] = replace(point, trial_params=params)
        return root


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
