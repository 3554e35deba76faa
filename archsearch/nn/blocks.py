"""Residual functions and units: one constructor signature, one registry.

A residual *function* is an `nn.Sequential` of BN / ReLU / Dropout / Conv layers, so the batched
(grouped-convolution) strategy can walk k functions in lock-step without knowing the family.
A *unit* combines its functions with a shortcut: pre-activation sum (ResNet, WRN, Multi-ResNet),
post-activation sum (postresnet, DVANet) or merge-and-run (DMRNet). WarpNet units are in `warp.py`.
Every module also maps path-length polynomials (`paths`), so path statistics come from the built
structure rather than a per-family formula (and count only the surviving paths under a lesion).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from archsearch.arch.plan import function_convs
from archsearch.nn.branches import BranchSet

Poly = list[int]  # path counts indexed by path length


def poly_shift(p: Poly, by: int) -> Poly:
    return [0] * by + list(p)


def poly_add(*ps: Poly) -> Poly:
    out = [0] * max(len(p) for p in ps)
    for p in ps:
        for i, c in enumerate(p):
            out[i] += c
    return out


def poly_scale(p: Poly, factor: int) -> Poly:
    return [c * factor for c in p]


def conv(in_c: int, out_c: int, kernel: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_c, out_c, kernel, stride=stride, padding=kernel // 2, bias=False)


# ------------------------------------------------------------------ residual functions
def preact_function(in_c: int, out_c: int, stride: int, kernels: tuple[int, ...], bottleneck: bool,
                    dropout: float, owns_preact: bool) -> nn.Sequential:
    """BN-ReLU-conv (-BN-ReLU-[dropout]-conv)*: the pre-activation function (WRN's B(...)).

    `owns_preact=False` in the first unit of a stage, whose leading BN-ReLU is shared by the
    shortcut and all k functions. Bottleneck: 1x1 (in->c), 3x3 (c->c, stride), 1x1 (c->4c).
    """
    layers: list[nn.Module] = []
    for i, (k, ci, co, s) in enumerate(function_convs(in_c, out_c, stride, kernels, bottleneck)):
        if i > 0 or owns_preact:
            layers += [nn.BatchNorm2d(ci), nn.ReLU(inplace=False)]
            if i > 0 and dropout:
                layers.append(nn.Dropout(dropout))
        layers.append(conv(ci, co, k, s))
    return nn.Sequential(*layers)


def post_function(in_c: int, out_c: int, stride: int, kernels: tuple[int, ...], bottleneck: bool,
                  dropout: float, owns_preact: bool = True) -> nn.Sequential:
    """conv-BN(-ReLU-[dropout]-conv-BN)*: the post-activation branch H of the fusion family."""
    del owns_preact
    layers: list[nn.Module] = []
    for i, (k, ci, co, s) in enumerate(function_convs(in_c, out_c, stride, kernels, bottleneck)):
        if i > 0:
            layers.append(nn.ReLU(inplace=False))
            if dropout:
                layers.append(nn.Dropout(dropout))
        layers += [conv(ci, co, k, s), nn.BatchNorm2d(co)]
    return nn.Sequential(*layers)


def warp_function(in_c: int, out_c: int, stride: int, kernels: tuple[int, ...], bottleneck: bool,
                  dropout: float, owns_preact: bool = True) -> nn.Sequential:
    """BN-conv-BN(-ReLU-conv-BN)*: WarpNet's residual function F (shape-preserving)."""
    del stride, bottleneck, owns_preact
    layers: list[nn.Module] = [nn.BatchNorm2d(in_c)]
    for i, (k, ci, co, _) in enumerate(function_convs(in_c, out_c, 1, kernels, False)):
        if i > 0:
            layers.append(nn.ReLU(inplace=False))
            if dropout:
                layers.append(nn.Dropout(dropout))
        layers += [conv(ci, co, k), nn.BatchNorm2d(co)]
    return nn.Sequential(*layers)


FUNCTIONS: dict[str, Callable[..., nn.Sequential]] = {
    "pre": preact_function,
    "post": post_function,
    "warp": warp_function,
}


# ------------------------------------------------------------------ shortcuts
class PadShortcut(nn.Module):
    """Option A: stride-2 subsampling and zero-padded channels, no parameters."""

    def __init__(self, in_c: int, out_c: int, stride: int) -> None:
        super().__init__()
        self.extra, self.stride = out_c - in_c, stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride > 1:
            x = x[:, :, :: self.stride, :: self.stride]
        if self.extra:
            x = F.pad(x, (0, 0, 0, 0, 0, self.extra))
        return x


def make_shortcut(kind: str, in_c: int, out_c: int, stride: int, with_bn: bool) -> nn.Module:
    if in_c == out_c and stride == 1:
        return nn.Identity()
    if kind == "pad":
        if out_c < in_c:
            raise ValueError("option-A shortcuts cannot reduce channels; use a projection")
        return PadShortcut(in_c, out_c, stride)
    layers: list[nn.Module] = [nn.Conv2d(in_c, out_c, 1, stride=stride, bias=False)]
    if with_bn:
        layers.append(nn.BatchNorm2d(out_c))
    return nn.Sequential(*layers) if with_bn else layers[0]


# ------------------------------------------------------------------ units
class PreActUnit(nn.Module):
    """y = Z(a) + sum_i f_i(a); a = BN-ReLU(x) in a stage's first unit (shared), else a = x."""

    def __init__(self, in_c: int, out_c: int, stride: int, k: int, first: bool, shortcut: str,
                 kernels: tuple[int, ...], bottleneck: bool, dropout: float, strategy: str) -> None:
        super().__init__()
        expanded = out_c * (4 if bottleneck else 1)
        self.preact = nn.Sequential(nn.BatchNorm2d(in_c), nn.ReLU(inplace=False)) if first else None
        self.shortcut = make_shortcut(shortcut, in_c, expanded, stride, with_bn=False)
        self.functions = BranchSet([preact_function(in_c, out_c, stride, kernels, bottleneck, dropout,
                                                    owns_preact=not first) for _ in range(k)], strategy)
        self.convs = 3 if bottleneck else len(kernels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.preact(x) if self.preact is not None else x
        return self.shortcut(a) + self.functions.sum_shared(a)

    def paths(self, streams: list[Poly]) -> list[Poly]:
        (p,) = streams
        return [poly_add(p, poly_scale(poly_shift(p, self.convs), self.functions.live()))]


class PostSumUnit(nn.Module):
    """y = ReLU(Z(x) + sum_i H_i(x)): postresnet (K = 1) and DVANet / DFN-IL (K branches)."""

    def __init__(self, in_c: int, out_c: int, stride: int, k: int, shortcut: str,
                 kernels: tuple[int, ...], bottleneck: bool, dropout: float, strategy: str) -> None:
        super().__init__()
        expanded = out_c * (4 if bottleneck else 1)
        self.shortcut = make_shortcut(shortcut, in_c, expanded, stride, with_bn=True)
        self.functions = BranchSet([post_function(in_c, out_c, stride, kernels, bottleneck, dropout)
                                    for _ in range(k)], strategy)
        self.convs = 3 if bottleneck else len(kernels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.shortcut(x) + self.functions.sum_shared(x))

    def paths(self, streams: list[Poly]) -> list[Poly]:
        (p,) = streams
        return [poly_add(p, poly_scale(poly_shift(p, self.convs), self.functions.live()))]


class MergeRunUnit(nn.Module):
    """Merge-and-run on K streams: f = mean_j Z_j(x_j); y_i = ReLU(f + H_i(x_i)).

    Each stream owns its Z. A unit fed one tensor (the stem output) starts all K streams from it;
    the network's last unit returns the single stream ReLU(f + sum_i H_i(x_i)).
    """

    def __init__(self, in_c: int, out_c: int, stride: int, k: int, shortcut: str,
                 kernels: tuple[int, ...], bottleneck: bool, dropout: float, strategy: str,
                 last: bool) -> None:
        super().__init__()
        expanded = out_c * (4 if bottleneck else 1)
        self.shortcuts = nn.ModuleList(make_shortcut(shortcut, in_c, expanded, stride, with_bn=True)
                                       for _ in range(k))
        self.functions = BranchSet([post_function(in_c, out_c, stride, kernels, bottleneck, dropout)
                                    for _ in range(k)], strategy)
        self.last = last
        self.convs = 3 if bottleneck else len(kernels)

    def forward(self, x: torch.Tensor | list[torch.Tensor]) -> torch.Tensor | list[torch.Tensor]:
        k = len(self.functions)
        streams = [x] * k if isinstance(x, torch.Tensor) else list(x)
        merged = sum(z(s) for z, s in zip(self.shortcuts, streams, strict=True)) / k
        if isinstance(x, torch.Tensor):
            outs = self.functions.each_shared(x)
        else:
            outs = self.functions.each(streams)
        if self.last:
            return F.relu(merged + sum(outs))
        return [F.relu(merged + h) for h in outs]

    def paths(self, streams: list[Poly]) -> list[Poly]:
        k = len(self.functions)
        if len(streams) == 1:
            streams = streams * k
        merged = poly_add(*streams)
        gone = self.functions.deleted  # a deleted H_i passes no path (test-time lesions)
        branches = [[0] if i in gone else poly_shift(p, self.convs) for i, p in enumerate(streams)]
        if self.last:
            return [poly_add(merged, *branches)]
        return [poly_add(merged, b) for b in branches]
