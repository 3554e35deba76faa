"""Exact params, fvcore MACs and path statistics of a spec without building it (no torch).

A sampler fits widths/depth by calling a count hundreds of times per candidate, and one fvcore trace
of a 1.7M network takes about a second, so this module walks the spec's layers analytically, one
stage at a time (the units of a stage after the first are identical, so a stage costs O(1)).
It replicates `archsearch.nn.complexity.count` exactly under the installed fvcore's rules
(`fvcore.nn.jit_handles`, eval mode, one 1x3x32x32 image):

- convolution: prod(weight shape) x output pixels (bias-free); linear: in x out;
- batch norm (eval, affine): 2 per *input* element; adaptive average pool: 1 per input element;
- adds, ReLU, padding, subsampling, concatenation, division and avg_pool2d (no fvcore handle): 0;
- WarpNet with K > 1: the sequential twin plus one more pass through F's convs and BNs (convs only
  under `-nobn`) per derivative term of every warp operator (`budget.warp_macs`).

`tests/arch/test_cost.py` proves the equality against fvcore on the reference names and on random
specs of every shipped search space.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

from archsearch.arch.plan import INPUT_RES, Unit, derivative_terms, function_convs, stem_width, unit_runs, warp_stages
from archsearch.arch.spec import ArchSpec, as_spec


class Cost(NamedTuple):
    """Parameters and fvcore MACs of a piece of network (a tuple: cheap to add up)."""

    params: int = 0
    macs: int = 0

    def __add__(self, other: Cost) -> Cost:  # type: ignore[override]
        return Cost(self[0] + other[0], self[1] + other[1])

    def __mul__(self, factor: int) -> Cost:  # type: ignore[override]
        return Cost(self[0] * factor, self[1] * factor)


ZERO = Cost()


def _conv(ci: int, co: int, kernel: int, out_res: int) -> Cost:
    weights = ci * co * kernel * kernel
    return Cost(weights, weights * out_res * out_res)


def _bn(channels: int, res: int) -> Cost:
    return Cost(2 * channels, 2 * channels * res * res)


def _preact_function(ci: int, co: int, stride: int, res: int, kernels: tuple[int, ...], bottleneck: bool,
                     owns_preact: bool) -> Cost:
    total = ZERO
    for i, (k, c_in, c_out, s) in enumerate(function_convs(ci, co, stride, kernels, bottleneck)):
        if i > 0 or owns_preact:
            total += _bn(c_in, res)
        res //= s
        total += _conv(c_in, c_out, k, res)
    return total


def _post_function(ci: int, co: int, stride: int, res: int, kernels: tuple[int, ...], bottleneck: bool) -> Cost:
    total = ZERO
    for k, c_in, c_out, s in function_convs(ci, co, stride, kernels, bottleneck):
        res //= s
        total += _conv(c_in, c_out, k, res) + _bn(c_out, res)
    return total


def _shortcut(kind: str, ci: int, co: int, stride: int, out_res: int, with_bn: bool) -> Cost:
    if (ci == co and stride == 1) or kind == "pad":
        return ZERO
    cost = _conv(ci, co, 1, out_res)
    return cost + _bn(co, out_res) if with_bn else cost


def _preact_unit(s: ArchSpec, u: Unit) -> Cost:
    bottleneck = s.function == "bottleneck"
    cost = _bn(u.c_in, u.res) if u.first else ZERO
    cost += _shortcut(s.shortcut, u.c_in, u.c_out, u.stride, u.res // u.stride, with_bn=False)
    return cost + _preact_function(u.c_in, u.width, u.stride, u.res, s.kernels, bottleneck, not u.first) * s.branches


def _post_unit(s: ArchSpec, u: Unit) -> Cost:
    shortcuts = s.branches if s.combine == "merge" else 1
    cost = _shortcut(s.shortcut, u.c_in, u.c_out, u.stride, u.res // u.stride, with_bn=True) * shortcuts
    return cost + _post_function(u.c_in, u.width, u.stride, u.res, s.kernels, s.function == "bottleneck") * s.branches


def _head(channels: int, classes: int, with_bn: bool) -> Cost:
    pool = Cost(0, channels * 8 * 8)
    linear = Cost(channels * classes + classes, channels * classes)
    return (_bn(channels, 8) if with_bn else ZERO) + pool + linear


def _warp_function(width: int, res: int, kernels: tuple[int, ...], with_bn: bool) -> Cost:
    cost = _bn(width, res) if with_bn else ZERO
    for conv in function_convs(width, width, 1, kernels, False):
        cost += _conv(conv.c_in, conv.c_out, conv.kernel, res) + (_bn(width, res) if with_bn else ZERO)
    return cost


UNIT_COSTS = {"pre": _preact_unit, "post": _post_unit}
"""Cost of one unit by unit kind (a new unit kind registers its own)."""


def cost(spec_or_name: ArchSpec | str | dict[str, Any]) -> Cost:
    """Exact params and fvcore MACs of a spec (see the module doc for the rules)."""
    s = as_spec(spec_or_name)
    if s.unit == "warp":
        total = _conv(3, s.stem, 3, INPUT_RES) + _bn(s.stem, INPUT_RES)
        terms = len(derivative_terms(s.warp_k, s.warp_variant))
        for stage in warp_stages(s):
            total += _warp_function(stage.width, stage.res, s.kernels, True) * stage.units
            extra = _warp_function(stage.width, stage.res, s.kernels, s.warp_bn)
            total += Cost(0, extra.macs * terms * stage.operators)
        return total + _head(s.widths[2], s.num_classes, with_bn=True)
    pre = s.unit == "pre"
    unit_cost = UNIT_COSTS[s.unit]
    stem_c = stem_width(s)
    total = _conv(3, stem_c, 3, INPUT_RES) + (ZERO if pre else _bn(stem_c, INPUT_RES))
    for unit, copies in unit_runs(s):
        total += unit_cost(s, unit) * copies
    return total + _head(s.out_widths[2], s.num_classes, with_bn=pre)


def params_macs(spec_or_name: ArchSpec | str | dict[str, Any]) -> tuple[int, int]:
    c = cost(spec_or_name)
    return c.params, c.macs


# ------------------------------------------------------------------ path statistics
def _unit_factors(s: ArchSpec) -> list[tuple[dict[int, int], int]]:
    """(path-length polynomial of one unit, how many such units) for every unit of the body.

    Every unit multiplies the path polynomial by a fixed factor (merge-and-run streams stay
    identical by symmetry: p <- K p + x^B p; the last unit sums the K streams: K p + K x^B p), so
    the length distribution over paths is a sum of independent per-unit distributions.
    """
    b = s.convs_per_function
    total = s.total_units
    if s.unit == "warp":
        poly = {0: 1}
        poly[b] = poly.get(b, 0) + s.warp_k
        # derivative terms (`plan.derivative_terms`): v1 F'_j x passes B layers, v2 F'_j F_i passes 2B
        length = 2 * b if s.warp_variant == 2 else b
        poly[length] = poly.get(length, 0) + len(derivative_terms(s.warp_k, s.warp_variant))
        return [(poly, total // s.warp_k)]
    k = s.branches
    if s.combine == "merge":
        return [({0: k, b: 1}, total - 1), ({0: k, b: k}, 1)]
    return [({0: 1, b: k}, total)]


def path_stats(spec_or_name: ArchSpec | str | dict[str, Any]) -> tuple[int, float, float]:
    """(number of paths, mean length, std) over all input->output paths, as `budget.count` gives."""
    s = as_spec(spec_or_name)
    paths, mean, var = 1, 2.0, 0.0  # stem conv + classifier
    for poly, times in _unit_factors(s):
        if times <= 0:
            continue
        n = sum(poly.values())
        m = sum(length * c for length, c in poly.items()) / n
        v = sum(c * (length - m) ** 2 for length, c in poly.items()) / n
        paths *= n**times
        mean += m * times
        var += v * times
    return paths, mean, math.sqrt(var)


def count(spec_or_name: ArchSpec | str | dict[str, Any], num_classes: int | None = None) -> dict[str, Any]:
    """`archsearch.nn.complexity.count` computed analytically: same keys, same values."""
    s = as_spec(spec_or_name, num_classes)
    c = cost(s)
    paths, mean, std = path_stats(s)
    return {"name": s.name, "params": c.params, "macs": c.macs, "depth": s.depth, "units": list(s.units),
            "paths": paths, "path_length_mean": mean, "path_length_std": std}
