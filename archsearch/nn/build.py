"""ArchSpec -> nn.Module: one generic builder for every family.

The network is always stem -> body (a sequence of units, transitions and warp operators) -> head;
only the unit constructor and the stem/head style depend on the spec's unit kind.
"""

from __future__ import annotations

import math
import os
from typing import Any

import torch
from torch import nn

from archsearch.arch.cost import params_macs
from archsearch.arch.plan import Unit, stem_width, units, warp_stages
from archsearch.arch.spec import ArchSpec, as_spec
from archsearch.errors import SpecError
from archsearch.nn.blocks import MergeRunUnit, Poly, PostSumUnit, PreActUnit, poly_shift, warp_function
from archsearch.nn.warp import WarpOperator, WarpTransition

UNIT_CLASSES: dict[tuple[str, str], type[nn.Module]] = {
    ("pre", "sum"): PreActUnit, ("post", "sum"): PostSumUnit, ("post", "merge"): MergeRunUnit,
}
"""The unit module of each (unit kind, combine) pair; a family with a new unit registers its class here."""


class ResidualNetwork(nn.Module):
    """stem -> body -> head; `spec` is kept so checkpoints and exports know what they hold."""

    def __init__(self, spec: ArchSpec, stem: nn.Module, body: nn.Sequential, head: nn.Module) -> None:
        super().__init__()
        self.spec = spec
        self.stem, self.body, self.head = stem, body, head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(self.stem(x)))

    def path_polynomial(self) -> Poly:
        """Number of input->output paths by length (weighted layers passed), exact."""
        streams: list[Poly] = [[0, 1]]  # the stem conv
        for module in self.body:
            streams = module.paths(streams)
        (p,) = streams
        return poly_shift(p, 1)  # the classifier


class PreActHead(nn.Sequential):
    def __init__(self, channels: int, num_classes: int) -> None:
        super().__init__(nn.BatchNorm2d(channels), nn.ReLU(inplace=False), nn.AdaptiveAvgPool2d(1),
                         nn.Flatten(), nn.Linear(channels, num_classes))


class PostHead(nn.Sequential):
    def __init__(self, channels: int, num_classes: int) -> None:
        super().__init__(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(channels, num_classes))


class WarpStem(nn.Module):
    """conv3x3 3->c, BN, ReLU, then kw concatenated copies (no parameters)."""

    def __init__(self, stem: int, copies: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, stem, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(stem)
        self.copies = copies

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn(self.conv(x)))
        return torch.cat([x] * self.copies, dim=1) if self.copies > 1 else x


def build(spec_or_name: ArchSpec | str | dict[str, Any], num_classes: int | None = None,
          strategy: str = "auto") -> ResidualNetwork:
    """Build the network of a spec or any accepted name; `num_classes` wins over the spec's."""
    spec = as_spec(spec_or_name, num_classes)
    check_buildable(spec)
    model = _build_warp(spec, strategy) if spec.unit == "warp" else _build_units(spec, strategy)
    init_weights(model)
    return model


MAX_FUNCTIONS = 20_000
"""Residual functions (units x branches) a network may have: resnet-1202, the deepest in the papers,
has 600; a name with far more would spend minutes building Python modules and then hang in a trace."""


def check_buildable(spec: ArchSpec) -> None:
    """Refuse, with the reason, a network too deep to build or whose weights alone exceed half of RAM,
    instead of hanging or dying in the allocator (the exact count needs no torch: `fastcount`)."""
    functions = spec.total_units * spec.branches
    if functions > MAX_FUNCTIONS:
        raise SpecError(f"{spec.name!r}: {functions:,} residual functions, more than archsearch builds "
                        f"({MAX_FUNCTIONS:,}; resnet-1202 has 600)")
    params = params_macs(spec)[0]
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    if 4 * params > memory / 2:
        raise SpecError(f"{spec.name!r}: {params:,} parameters need {4 * params / 2**30:,.1f} GiB as fp32 "
                        f"weights alone, more than half of this machine's {memory / 2**30:,.1f} GiB")


def init_weights(model: nn.Module) -> None:
    """He (Kaiming normal, fan_out) convolutions, BN gamma = 1 / beta = 0, as in the papers."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            bound = 1 / math.sqrt(m.in_features)
            nn.init.uniform_(m.weight, -bound, bound)
            nn.init.zeros_(m.bias)


def _unit_module(spec: ArchSpec, unit: Unit, strategy: str) -> nn.Module:
    """One residual unit as laid out by the plan; the class comes from `UNIT_CLASSES`."""
    bottleneck = spec.function == "bottleneck"
    cls = UNIT_CLASSES[(spec.unit, spec.combine)]
    if spec.unit == "pre":
        return cls(unit.c_in, unit.width, unit.stride, spec.branches, unit.first, spec.shortcut, spec.kernels,
                   bottleneck, spec.dropout, strategy)
    common = (unit.c_in, unit.width, unit.stride, spec.branches, spec.shortcut, spec.kernels, bottleneck,
              spec.dropout, strategy)
    return cls(*common, last=unit.last) if spec.combine == "merge" else cls(*common)


def _build_units(spec: ArchSpec, strategy: str) -> ResidualNetwork:
    """Stem, units, head, created in this order (module creation draws from the RNG)."""
    c1 = stem_width(spec)
    pre = spec.unit == "pre"
    stem: nn.Module = nn.Conv2d(3, c1, 3, padding=1, bias=False)
    if not pre:
        stem = nn.Sequential(stem, nn.BatchNorm2d(c1), nn.ReLU(inplace=False))
    body = nn.Sequential(*[_unit_module(spec, unit, strategy) for unit in units(spec)])
    head = (PreActHead if pre else PostHead)(spec.out_widths[2], spec.num_classes)
    return ResidualNetwork(spec, stem, body, head)


def _build_warp(spec: ArchSpec, strategy: str) -> ResidualNetwork:
    del strategy  # warp functions are parallel by construction (one JVP each)
    stem = WarpStem(spec.stem, spec.widths[0] // spec.stem)
    body: list[nn.Module] = []
    for stage in warp_stages(spec):
        if stage.stage > 0:
            body.append(WarpTransition())
        for _ in range(stage.operators):
            functions = [warp_function(stage.width, stage.width, 1, spec.kernels, False, spec.dropout)
                         for _ in range(spec.warp_k)]
            body.append(WarpOperator(functions, spec.warp_variant, spec.warp_bn))
    return ResidualNetwork(spec, stem, nn.Sequential(*body), PreActHead(spec.widths[2], spec.num_classes))
