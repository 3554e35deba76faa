"""Checking a space's families and candidates against the registry, one ConfigError per problem."""

from __future__ import annotations

from typing import Any

from archsearch.arch.families import family as family_info
from archsearch.arch.families import family_names, is_family
from archsearch.arch.spec import parse_name
from archsearch.errors import ConfigError, SpecError
from archsearch.space.fitting import convs_per_function, default_fit
from archsearch.space.schema import AXIS_ORDER, CandidateEntry, Family, FitConfig, Range

DEFAULTS: dict[str, Any] = {"function": "basic", "k": 1, "K": 2, "w": 1, "kw": 1, "stem": 16, "kernels": "33",
                            "variant": 1, "nobn": False, "shortcut": "default", "dropout": 0.0}


def config_error(source: str, key: str, reason: str) -> ConfigError:
    return ConfigError(f"{source}: {key}: {reason}")


def axis_values(value: Any) -> tuple[list[Any], tuple[int, int, int] | None]:
    if isinstance(value, Range):
        return value.values(), (value.low, value.high, value.step)
    if isinstance(value, list):
        return list(value), None
    return [value], None


def check_family(source: str, group: str, fam: Family,
                 ranges: dict[str, tuple[int, int, int]]) -> tuple[dict[str, list[Any]], FitConfig]:
    """The axis values and fit of one `families.<group>` entry, checked; integer ranges go into `ranges`."""
    key = f"families.{group}"
    name = group.split(":")[0]
    if not is_family(name):
        raise config_error(source, key, f"unknown family {name!r}; known: {', '.join(family_names())} "
                                        f"(optionally tagged, as in warpnet:sequential)")
    fam_def = family_info(name)
    allowed = fam_def.axes
    for axis in fam.given_axes():
        if axis not in allowed:
            raise config_error(source, f"{key}.{axis}",
                               f"axis does not apply to {name} (its axes: {', '.join(allowed)})")
    fit = fam.fit or default_fit(name)
    for axis in fit.flat():
        if axis not in fam_def.fit_axes:
            free = ", ".join(fam_def.fit_axes)
            raise config_error(source, f"{key}.fit", f"cannot fit {axis!r} for {name} (free axes: {free})")
    for group in fit.axes:
        if isinstance(group, list) and not set(group) <= {"depth", "k", "K", "stem"}:
            raise config_error(source, f"{key}.fit",
                               f"a joint pair fits discrete axes (depth, k, K, stem), not {group}")
    if len(set(fit.flat())) != len(fit.flat()):
        raise config_error(source, f"{key}.fit", "an axis is listed twice")
    if {"width", "widths"} <= set(fit.flat()):
        raise config_error(source, f"{key}.fit", "fit either width (uniform) or widths (per stage), not both")
    values: dict[str, list[Any]] = {}
    for axis in AXIS_ORDER:
        if axis not in allowed:
            continue
        given = getattr(fam, axis)
        if given is None:
            if axis == "depth" and "depth" not in fit.flat():
                raise config_error(source, f"{key}.depth", "required (or list depth under fit)")
            if axis == "k" and "k" not in fit.flat():
                raise config_error(source, f"{key}.k", f"required for {name} (k functions per unit)")
            if axis == "kw":
                raise config_error(source, f"{key}.kw", f"required for {name} (widening factor)")
            if axis == "depth":
                continue
            vals, rng = [DEFAULTS[axis]], None
        else:
            vals, rng = axis_values(given)
        if not vals:
            raise config_error(source, f"{key}.{axis}", "empty list of choices")
        if len(set(map(repr, vals))) != len(vals):
            raise config_error(source, f"{key}.{axis}", f"repeated choices in {vals}")
        for v in vals:
            problem = check_value(name, axis, v)
            if problem:
                raise config_error(source, f"{key}.{axis}", problem)
        values[axis] = vals
        if rng is not None:
            ranges[f"{name}.{axis}"] = rng
    # depth values must follow the family's convention for every function/kernels choice
    for function in values.get("function", ["basic"]):
        for kernels in values.get("kernels", ["33"]):
            convs = convs_per_function(function, str(kernels))
            for d in values.get("depth", []):
                if fam_def.units_per_stage(int(d), convs) is None:
                    rule = fam_def.rule_text(convs, "N" if fam_def.depth_per_unit else "n")
                    raise config_error(source, f"{key}.depth", f"{d} is not a {name} depth ({rule}, n >= 1)")
    return values, fit


def check_value(family: str, axis: str, v: Any) -> str:
    """Why value `v` is not valid for `axis` of `family` ("" when it is)."""
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


def check_candidate(source: str, num_classes: int, i: int, entry: CandidateEntry, labels: list[str]) -> None:
    """A `candidates.<i>` entry names a valid network, a known budget and fittable axes."""
    key = f"candidates.{i}"
    try:
        spec = parse_name(entry.name, num_classes=num_classes)
    except SpecError as exc:
        raise config_error(source, f"{key}.name", str(exc).split("; valid forms")[0]) from None
    if entry.budget is not None and entry.budget not in labels:
        raise config_error(source, f"{key}.budget", f"unknown budget {entry.budget!r}; budgets: {labels}")
    if entry.budget is None and len(labels) > 1:
        raise config_error(source, f"{key}.budget", f"required: which budget group ({', '.join(labels)})")
    if entry.fit and not labels:
        raise config_error(source, f"{key}.fit", "fitting needs a budget")
    family = entry.family or entry.name.split("-")[0].lower()
    if isinstance(entry.fit, FitConfig):
        for axis in entry.fit.flat():
            if axis not in family_info(spec.family).fit_axes:
                raise config_error(source, f"{key}.fit", f"cannot fit {axis!r} for {spec.family}")
    del family
