"""The written-out derivative terms: forward-mode AD's values, tangents and BN statistics, and true gradients.

Forward-mode AD's *gradients* through a train-mode BN tangent are wrong (its backward treats the batch
statistics as constants; gradcheck fails on it), so gradients are checked against gradcheck and against
the tangent rule spelled out in plain differentiable operations.
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from archsearch.nn import warp_jvp
from archsearch.nn.blocks import warp_function
from archsearch.nn.warp import WarpOperator, forward_ad_value_and_jvps


def _function(width: int = 6, dropout: float = 0.0) -> nn.Sequential:
    torch.manual_seed(0)
    f = warp_function(width, width, 1, (3, 3), False, dropout).double()
    g = torch.Generator().manual_seed(1)
    for m in f.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.weight.data.copy_(torch.rand(m.num_features, generator=g, dtype=torch.float64) + 0.5)
            m.bias.data.copy_(torch.randn(m.num_features, generator=g, dtype=torch.float64) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g, dtype=torch.float64) + 0.5)
    return f


def _both(f: nn.Sequential, x: torch.Tensor, vectors: list[torch.Tensor], seed: int = 3) -> list[tuple]:
    """(value, jvps, input/vector/parameter gradients of a fixed loss, BN buffers) for both formulations."""
    results = []
    for fn in (forward_ad_value_and_jvps, warp_jvp.value_and_jvps):
        g = copy.deepcopy(f)
        xs = [t.clone().requires_grad_(True) for t in [x, *vectors]]
        torch.manual_seed(seed)
        value, jvps = fn(g, xs[0], xs[1:])
        weights = torch.Generator().manual_seed(5)
        loss = sum((t * torch.randn(t.shape, generator=weights, dtype=t.dtype)).sum() for t in [value, *jvps])
        grads = torch.autograd.grad(loss, [*xs, *g.parameters()])
        results.append((value, jvps, grads, [b.clone() for b in g.buffers()]))
    return results


@pytest.mark.parametrize("mode", ["train", "eval"])
@pytest.mark.parametrize("tangents", [1, 2])
def test_written_out_jvps_equal_forward_mode_ad(mode: str, tangents: int) -> None:
    f = _function().train(mode == "train")
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(4, 6, 5, 5, generator=gen, dtype=torch.float64)
    vectors = [torch.randn(4, 6, 5, 5, generator=gen, dtype=torch.float64) for _ in range(tangents)]
    assert warp_jvp.supports(f)
    (v0, j0, _, b0), (v1, j1, _, b1) = _both(f, x, vectors)
    torch.testing.assert_close(v1, v0)
    assert len(j1) == len(j0) == tangents
    for a, b in zip(j1, j0, strict=True):
        torch.testing.assert_close(a, b)
    for a, b in zip(b1, b0, strict=True):  # running statistics updated once, step counted once
        torch.testing.assert_close(a, b)
    if mode == "train":
        assert not torch.equal(b1[0], _function()[0].running_mean)


def _plain_value_and_jvps(f: nn.Sequential, x: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, list]:
    """The train-mode tangent rule in plain autograd operations (slow, obviously differentiable)."""
    for layer in f:
        if isinstance(layer, nn.BatchNorm2d):
            var, mean = torch.var_mean(x, dim=(0, 2, 3), unbiased=False, keepdim=True)
            invstd, gamma = torch.rsqrt(var + layer.eps), layer.weight.view(1, -1, 1, 1)
            xhat = (x - mean) * invstd
            v = (v - v.mean((0, 2, 3), keepdim=True) - xhat * (v * xhat).mean((0, 2, 3), keepdim=True)) * gamma * invstd
            x = xhat * gamma + layer.bias.view(1, -1, 1, 1)
        elif isinstance(layer, nn.ReLU):
            v, x = v * (x > 0), torch.relu(x)
        else:
            v, x = layer._conv_forward(v, layer.weight, None), layer(x)
    return x, [v]


def test_written_out_jvps_have_true_gradients() -> None:
    f = _function(width=3).train()
    gen = torch.Generator().manual_seed(2)
    x, v = (torch.randn(3, 3, 4, 4, generator=gen, dtype=torch.float64, requires_grad=True) for _ in range(2))

    w2 = torch.randn(3, 3, 4, 4, generator=gen, dtype=torch.float64, requires_grad=True)

    def outputs(a: torch.Tensor, *vectors: torch.Tensor) -> tuple[torch.Tensor, ...]:
        value, jvps = warp_jvp.value_and_jvps(f, a, list(vectors))
        return (value, *jvps)

    assert torch.autograd.gradcheck(outputs, (x, v))
    assert torch.autograd.gradcheck(outputs, (x, v, w2))  # two tangents in one batch
    grads = []
    for fn in (warp_jvp.value_and_jvps, _plain_value_and_jvps):
        value, (jvp,) = fn(f, x, [v] if fn is warp_jvp.value_and_jvps else v)
        w = torch.Generator().manual_seed(5)
        loss = (value * torch.randn(value.shape, generator=w, dtype=value.dtype)).sum() + (
            jvp * torch.randn(jvp.shape, generator=w, dtype=jvp.dtype)).sum()
        grads.append(torch.autograd.grad(loss, [x, v, *f.parameters()]))
    for a, b in zip(*grads, strict=True):
        torch.testing.assert_close(a, b)


def test_dropout_mask_is_shared_by_value_and_tangent() -> None:
    f = _function(dropout=0.5).train()
    gen = torch.Generator().manual_seed(2)
    x, v = (torch.randn(4, 6, 5, 5, generator=gen, dtype=torch.float64) for _ in range(2))
    (v0, j0, _, _), (v1, j1, _, _) = _both(f, x, [v])
    torch.testing.assert_close(v1, v0)
    torch.testing.assert_close(j1[0], j0[0])


def test_other_layers_fall_back_to_forward_mode_ad() -> None:
    f = _function()
    f[3] = nn.Tanh()
    assert not warp_jvp.supports(f)
    op = WarpOperator([f, copy.deepcopy(f)], 1, True).eval()
    x = torch.randn(2, 6, 5, 5, dtype=torch.float64)
    with torch.no_grad():
        want = x + f(x) + f(x) + torch.func.jvp(f, (x,), (x,))[1]
        torch.testing.assert_close(op(x), want)
