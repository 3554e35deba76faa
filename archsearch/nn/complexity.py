"""Complexity of a spec: params, fvcore MACs, and exact path-length statistics.

fvcore is the reference count (one fused multiply-add = one "flop", so its total is MACs, in eval
mode on one 1x3x32x32 image). fvcore cannot trace forward-mode AD, so a WarpNet is counted as its
sequential twin (`-K1`, the same weights) plus one more pass through F's convs and BNs (convs only
under `-nobn`) for every derivative term of every warp operator.
"""

from __future__ import annotations

import logging
import math
import warnings
from dataclasses import replace
from functools import lru_cache
from typing import Any

import torch
from torch import nn

from archsearch.arch.plan import derivative_terms
from archsearch.arch.spec import ArchSpec, as_spec
from archsearch.nn.build import ResidualNetwork, build
from archsearch.nn.warp import WarpOperator

INPUT_SHAPE = (1, 3, 32, 32)
COUNT_KEYS = ("name", "params", "macs", "depth", "units", "paths", "path_length_mean", "path_length_std")


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def path_statistics(model: ResidualNetwork) -> tuple[int, float, float]:
    """(number of paths, mean length, std) over all input->output paths, uniformly weighted."""
    poly = model.path_polynomial()
    total = sum(poly)
    mean = sum(length * c for length, c in enumerate(poly)) / total
    var = sum(c * (length - mean) ** 2 for length, c in enumerate(poly)) / total
    return total, mean, math.sqrt(var)


def _fvcore_analysis(model: nn.Module) -> Any:
    from fvcore.nn import FlopCountAnalysis  # lazy: fvcore (and iopath) load only when a count needs a trace

    logging.getLogger("fvcore").setLevel(logging.ERROR)
    model = model.eval()
    analysis = FlopCountAnalysis(model, torch.zeros(*INPUT_SHAPE))
    analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
    return analysis


def fvcore_macs(model: nn.Module) -> int:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return int(_fvcore_analysis(model).total())


def warp_macs(spec: ArchSpec) -> int:
    """fvcore MACs of the sequential twin + one F pass per derivative term (see module doc)."""
    sequential = build(replace(spec, warp_k=1, warp_variant=1, warp_bn=True), strategy="loop")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        analysis = _fvcore_analysis(sequential)
        by_module = analysis.by_module()
    total = int(analysis.total())
    terms_per_operator = len(derivative_terms(spec.warp_k, spec.warp_variant))
    # sequential body: [transitions and] one WarpOperator per unit; group them K at a time
    units = [(name, m) for name, m in sequential.body.named_children() if isinstance(m, WarpOperator)]
    for start in range(0, len(units), spec.warp_k):
        name, op = units[start]  # every unit of one operator has the same shape
        f = op.functions[0]
        per_pass = 0
        for child_name, child in f.named_children():
            if isinstance(child, nn.BatchNorm2d) and not spec.warp_bn:
                continue
            per_pass += by_module.get(f"body.{name}.functions.0.{child_name}", 0)
        total += terms_per_operator * per_pass
    return total


@lru_cache(maxsize=4096)
def _count_cached(spec: ArchSpec) -> dict[str, Any]:
    model = build(spec, strategy="loop")
    paths, mean, std = path_statistics(model)
    if spec.unit == "warp" and spec.warp_k > 1:
        macs = warp_macs(spec)
    else:
        macs = fvcore_macs(model)
    return {"name": spec.name, "params": count_params(model), "macs": macs, "depth": spec.depth,
            "units": list(spec.units), "paths": paths, "path_length_mean": mean, "path_length_std": std}


def count(spec_or_name: ArchSpec | str | dict[str, Any], num_classes: int | None = 10) -> dict[str, Any]:
    """params, macs (fvcore), depth, units per stage, paths, path-length mean/std of a network."""
    spec = as_spec(spec_or_name, num_classes)
    return dict(_count_cached(spec))
