"""WarpNet: the warp operator is a first-order Taylor expansion of K sequential units."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from archsearch.nn.blocks import warp_function
from archsearch.nn.build import build
from archsearch.nn.complexity import count, fvcore_macs
from archsearch.nn.warp import WarpOperator


def make_operator(k: int, variant: int, exact_bn: bool = True, width: int = 8, seed: int = 0) -> WarpOperator:
    torch.manual_seed(seed)
    op = WarpOperator([warp_function(width, width, 1, (3, 3), False, 0.0) for _ in range(k)], variant, exact_bn)
    g = torch.Generator().manual_seed(seed)
    for m in op.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(m.num_features, generator=g) * 0.1)
    return op.double().eval()


def scale_residuals(op: WarpOperator, eps: float) -> None:
    """F ends with a BN: scaling its gamma and beta by eps scales F by eps exactly."""
    for f in op.functions:
        last_bn = f[-1]
        last_bn.weight.data.mul_(eps)
        last_bn.bias.data.mul_(eps)


def sequential(op: WarpOperator, x: torch.Tensor) -> torch.Tensor:
    for f in op.functions:
        x = x + f(x)
    return x


def smooth(op: WarpOperator) -> WarpOperator:
    """ReLU nets are piecewise linear (no curvature between kinks), so the orders of accuracy are
    checked with a smooth activation; the operator itself is activation-agnostic."""
    for f in op.functions:
        for i, layer in enumerate(f):
            if isinstance(layer, nn.ReLU):
                f[i] = nn.Tanh()
    return op


def error_slope(k: int, variant: int) -> float:
    x = torch.randn(2, 8, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    epsilons = [0.2, 0.1, 0.05, 0.025, 0.0125]
    errors = []
    for eps in epsilons:
        op = smooth(make_operator(k, variant))
        scale_residuals(op, eps)
        with torch.no_grad():
            errors.append((op(x) - sequential(op, x)).abs().max().item())
    return float(np.polyfit(np.log(epsilons), np.log(errors), 1)[0])


@pytest.mark.parametrize("k", [2, 3])
def test_warp_orders_of_accuracy(k: int) -> None:
    assert error_slope(k, 2) == pytest.approx(3.0, abs=0.25)  # v2 (F'F): O(eps^3)
    assert error_slope(k, 1) == pytest.approx(1.0, abs=0.25)  # v1 (F'x): O(eps)


def test_warp_equation_with_torch_func_jvp_in_eval_mode() -> None:
    op = make_operator(3, 2)
    x = torch.randn(2, 8, 8, 8, dtype=torch.float64)
    f1, f2, f3 = op.functions
    jvp = lambda f, v: torch.func.jvp(f, (x,), (v,))[1]  # noqa: E731  (works in eval mode only)
    with torch.no_grad():
        a, b, c = f1(x), f2(x), f3(x)
        want = x + a + b + c + jvp(f2, a) + jvp(f3, a) + jvp(f3, b)
        torch.testing.assert_close(op(x), want)
    op1 = make_operator(2, 1)
    g1, g2 = op1.functions
    with torch.no_grad():
        torch.testing.assert_close(op1(x), x + g1(x) + g2(x) + torch.func.jvp(g2, (x,), (x,))[1])


def test_warp_train_mode_jvp_matches_finite_differences_and_keeps_bn_statistics() -> None:
    op = make_operator(3, 2).train()
    x = torch.randn(4, 8, 8, 8, dtype=torch.float64)
    f1, f2, f3 = op.functions
    before = [m.running_mean.clone() for m in op.modules() if isinstance(m, nn.BatchNorm2d)]

    def fd(f: nn.Module, v: torch.Tensor, h: float = 1e-6) -> torch.Tensor:
        saved = [(m, m.momentum) for m in f.modules() if isinstance(m, nn.BatchNorm2d)]
        for m, _ in saved:
            m.momentum = 0.0
        out = (f(x + h * v) - f(x - h * v)) / (2 * h)
        for m, mom in saved:
            m.momentum = mom
        return out

    with torch.no_grad():
        got = op(x)
        after = [m.running_mean.clone() for m in op.modules() if isinstance(m, nn.BatchNorm2d)]
        for f in op.functions:
            for m in f.modules():
                if isinstance(m, nn.BatchNorm2d):
                    m.momentum = 0.0
        a, b, c = f1(x), f2(x), f3(x)
        want = x + a + b + c + fd(f2, a) + fd(f3, a) + fd(f3, b)
    torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-6)
    # each BN's running statistics were updated once (momentum 0.1), not once per tangent
    for b0, b1 in zip(before, after, strict=True):
        assert not torch.equal(b0, b1)
    single = make_operator(3, 2).train()
    with torch.no_grad():
        for f in single.functions:
            f(x)
    reference = [m.running_mean for m in single.modules() if isinstance(m, nn.BatchNorm2d)]
    for r, a1 in zip(reference, after, strict=True):
        torch.testing.assert_close(a1, r)


@pytest.mark.parametrize("name", ["warpnet-13-1", "warpnet-13-1-v2", "warpnet-19-1-K3-v2", "warpnet-13-1-nobn"])
def test_warpnet_trains_in_train_and_eval_mode(name: str) -> None:
    torch.manual_seed(0)
    model = build(name)
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    x, y = torch.randn(8, 3, 32, 32), torch.randint(0, 10, (8,))
    losses = []
    for _ in range(3):
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert all(math.isfinite(v) for v in losses) and losses[-1] < losses[0]
    model.eval()
    x.requires_grad_(True)
    model(x).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()


class HandWrittenWarp(nn.Module):
    """The eval-mode warp operator with its JVPs written out, so fvcore can trace it.

    In eval mode BN is affine, so its tangent map is batch_norm with zero mean and no shift.
    """

    def __init__(self, op: WarpOperator, exact_bn: bool) -> None:
        super().__init__()
        self.op, self.exact_bn = op, exact_bn

    def value_and_masks(self, f: nn.Sequential, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        masks = []
        for layer in f:
            if isinstance(layer, nn.ReLU):
                masks.append(x > 0)
            x = layer(x)
        return x, masks

    def tangent(self, f: nn.Sequential, masks: list[torch.Tensor], v: torch.Tensor) -> torch.Tensor:
        relus = iter(masks)
        for layer in f:
            if isinstance(layer, nn.BatchNorm2d):
                if self.exact_bn:
                    v = F.batch_norm(v, torch.zeros_like(layer.running_mean), layer.running_var, layer.weight,
                                     None, False, 0.0, layer.eps)
            elif isinstance(layer, nn.ReLU):
                v = v * next(relus).to(v.dtype)
            else:
                v = layer(v)
        return v

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        fs = self.op.functions
        passes = [self.value_and_masks(f, x) for f in fs]
        out = x + sum(value for value, _ in passes)
        for j in range(1, len(fs)):
            vectors = [passes[i][0] for i in range(j)] if self.op.variant == 2 else [x]
            for v in vectors:
                out = out + self.tangent(fs[j], passes[j][1], v)
        return out


@pytest.mark.parametrize(("k", "variant", "exact_bn"), [(2, 1, True), (2, 2, True), (3, 1, True), (3, 2, True),
                                                        (2, 2, False), (3, 2, False)])
def test_warp_mac_rule_matches_fvcore_on_a_traceable_operator(k: int, variant: int, exact_bn: bool) -> None:
    op = make_operator(k, variant, exact_bn).float()
    hand = HandWrittenWarp(op, exact_bn).eval()
    x = torch.randn(2, 8, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(hand(x), op(x), rtol=1e-4, atol=1e-5)
    from fvcore.nn import FlopCountAnalysis

    traced = int(FlopCountAnalysis(hand, torch.zeros(1, 8, 8, 8)).unsupported_ops_warnings(False).total())
    sequential_k1 = int(FlopCountAnalysis(op.functions[0], torch.zeros(1, 8, 8, 8))
                        .unsupported_ops_warnings(False).total())
    bn_part = int(FlopCountAnalysis(op.functions[0], torch.zeros(1, 8, 8, 8)).unsupported_ops_warnings(False)
                  .by_operator().get("batch_norm", 0))
    terms = k * (k - 1) // 2 if variant == 2 else k - 1
    per_pass = sequential_k1 if exact_bn else sequential_k1 - bn_part
    # the rule: K sequential F passes + one more pass per derivative term (no BN under -nobn)
    assert traced == k * sequential_k1 + terms * per_pass


def test_warpnet_count_uses_the_rule() -> None:
    base = count("warpnet-13-1-K1")["macs"]
    assert base == fvcore_macs(build("warpnet-13-1-K1"))
    v1, v2 = count("warpnet-13-1")["macs"], count("warpnet-13-1-v2")["macs"]
    assert v1 == v2 > base  # K = 2: one derivative term per operator in both variants
    assert count("warpnet-19-1-K3-v2")["macs"] - count("warpnet-19-1-K1")["macs"] == \
        3 * (count("warpnet-19-1-K3")["macs"] - count("warpnet-19-1-K1")["macs"]) // 2
    assert count("warpnet-13-1-nobn")["macs"] < v1
