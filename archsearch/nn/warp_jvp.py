"""The warp operator's derivative terms F'(x)·v written out layer by layer, all tangents in one batch.

Forward-mode AD (`torch.autograd.forward_ad`) computes the same numbers, but it runs F once per
tangent (the primal again each time), evaluates train-mode BN's tangent rule as a long chain of
unfused element-wise operations, and dynamo cannot compile it. Here F's primal runs once, every
tangent of one function shares each convolution call (stacked on the batch axis), and BN's tangent
is the closed form of its Jacobian:

    train mode:  BN'(h)·t = gamma · invstd · (t - mean(t) - xhat · mean(t · xhat)),  xhat = (h - mean) · invstd
    eval mode:   BN'(h)·t = gamma · invstd_running · t

with the means per channel over (N, H, W) of each tangent, and a hand-derived backward for the pair
(`_BatchNormWithTangents`). The primal BN updates the running statistics as `nn.BatchNorm2d` does, once
per step. Functions made of
other layers are left to forward-mode AD (`supports`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

LINEARISED_LAYERS = (nn.Conv2d, nn.BatchNorm2d, nn.ReLU, nn.Dropout)


def supports(f: nn.Sequential) -> bool:
    """True when every layer of F has a written-out tangent rule here."""
    return all(type(layer) in LINEARISED_LAYERS for layer in f)


def _momentum(bn: nn.BatchNorm2d) -> float:
    """The exponential-average factor `nn.BatchNorm2d.forward` uses this step (and its step count)."""
    if not (bn.training and bn.track_running_stats and bn.num_batches_tracked is not None):
        return 0.0 if bn.momentum is None else bn.momentum
    bn.num_batches_tracked.add_(1)
    return 1.0 / float(bn.num_batches_tracked) if bn.momentum is None else bn.momentum


def _bn_backward(g: torch.Tensor, h: torch.Tensor, weight: torch.Tensor | None, mean: torch.Tensor,
                 invstd: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Train-mode BN's fused backward: (weight·invstd·(g - mean(g) - xhat·mean(g·xhat)), sum(g·xhat), sum(g))."""
    return torch.ops.aten.native_batch_norm_backward(g, h, weight, None, None, mean, invstd, True, 0.0,
                                                     [True, True, True])


class _BatchNormWithTangents(torch.autograd.Function):
    """(BN(h), BN'(h)·t) in train mode, from BN's fused kernels, with a hand-derived backward.

    BN's train-mode Jacobian is symmetric, so the tangent map is the backward kernel. Per channel, over
    M = N·H·W elements and each tangent t, with s = gamma·invstd, a = mean(t), b = mean(t·xhat):
    dt = s·(t - a - xhat·b). For upstream gradients w (of BN(h)) and u (of dt), with c = sum(u·xhat) and
    K = sum(u·t) - M·a·mean(u):
        grad t     = s·(u - mean(u) - xhat·c/M)                     (the backward kernel again)
        grad gamma = sum(w·xhat) + invstd·sum_t(K - b·c),   grad beta = sum(w)
        grad h     = BNback(w; gamma) + sum_t [BNback(g; 1) - gamma·invstd²·xhat·(K - b·c)/M],
                     g = -s·(t·c/M + b·u)
    Autograd's own route (BN's generic double backward) costs several times more (gradcheck: tests/nn).
    """

    @staticmethod
    def forward(ctx, h, t, weight, bias, running_mean, running_var, momentum, eps, count):  # noqa: ANN001, ANN205
        out, mean, invstd = torch.native_batch_norm(h, weight, bias, running_mean, running_var, True, momentum, eps)
        m = h.numel() // h.shape[1]
        dts, sums = [], []
        for v in t.chunk(count) if count > 1 else [t]:
            dt, sum_vx, sum_v = _bn_backward(v, h, weight, mean, invstd)
            dts.append(dt)
            sums.append((sum_v / m, sum_vx / m))  # (a, b) per channel
        ctx.save_for_backward(h, t, weight, mean, invstd, *(x for ab in sums for x in ab))
        ctx.count, ctx.has_weight, ctx.has_bias = count, weight is not None, bias is not None
        return out, dts[0] if count == 1 else torch.cat(dts)

    @staticmethod
    def backward(ctx, w, u):  # noqa: ANN001, ANN205
        h, t, weight, mean, invstd, *ab = ctx.saved_tensors
        c_dim, m = h.shape[1], h.numel() // h.shape[1]
        gamma = weight if weight is not None else torch.ones_like(invstd)
        w = torch.zeros_like(h) if w is None else w
        u = torch.zeros_like(t) if u is None else u
        grad_h, grad_gamma, grad_beta = _bn_backward(w, h, weight, mean, invstd)
        grad_ts = []
        view = (1, c_dim, 1, 1)
        xhat_coef = torch.zeros_like(invstd)
        for n, (v, g_u) in enumerate(zip(t.chunk(ctx.count), u.chunk(ctx.count), strict=True)):
            a, b = ab[2 * n], ab[2 * n + 1]
            grad_t, c, sum_u = _bn_backward(g_u, h, weight, mean, invstd)
            grad_ts.append(grad_t)
            k_minus_bc = (g_u * v).sum(dim=(0, 2, 3)) - a * sum_u - b * c
            s = gamma * invstd
            g = torch.addcmul(v * (-s * c / m).view(view), g_u, (-s * b).view(view))
            grad_h = grad_h + _bn_backward(g, h, None, mean, invstd)[0]
            grad_gamma = grad_gamma + invstd * k_minus_bc
            xhat_coef = xhat_coef - gamma * invstd * invstd * k_minus_bc / m
        # grad_h += xhat_coef · xhat, xhat = (h - mean)·invstd
        grad_h = torch.addcmul(grad_h, h, (xhat_coef * invstd).view(view)) - (xhat_coef * invstd * mean).view(view)
        return (grad_h, grad_ts[0] if ctx.count == 1 else torch.cat(grad_ts), grad_gamma if ctx.has_weight else None,
                grad_beta if ctx.has_bias else None, None, None, None, None, None)


def _bn(bn: nn.BatchNorm2d, h: torch.Tensor, t: torch.Tensor, count: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(BN(h), BN'(h)·t) with `count` tangents stacked on t's batch axis."""
    if not (bn.training or bn.running_mean is None):  # eval: an affine map, its tangent the linear part
        scale = torch.rsqrt(bn.running_var + bn.eps)
        scale = scale * bn.weight if bn.weight is not None else scale
        return bn(h), t * scale.view(1, -1, 1, 1)
    return _BatchNormWithTangents.apply(h, t, bn.weight, bn.bias, bn.running_mean, bn.running_var, _momentum(bn),
                                        bn.eps, count)


def value_and_jvps(f: nn.Sequential, x: torch.Tensor,
                   vectors: list[torch.Tensor]) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """F(x) and F'(x)·v for every v in `vectors`, exactly (train- or eval-mode BN); F must be `supports`ed."""
    count = len(vectors)
    h = x
    t = vectors[0] if count == 1 else torch.cat(vectors)
    for layer in f:
        if isinstance(layer, nn.Conv2d):
            h = layer(h)
            t = F.conv2d(t, layer.weight, None, layer.stride, layer.padding, layer.dilation, layer.groups)
        elif isinstance(layer, nn.BatchNorm2d):
            h, t = _bn(layer, h, t, count)
        elif isinstance(layer, nn.ReLU):
            mask = h > 0
            h = F.relu(h)
            t = t * mask.repeat(count, 1, 1, 1) if count > 1 else t * mask
        elif isinstance(layer, nn.Dropout) and layer.training and layer.p > 0:
            keep = F.dropout(torch.ones_like(h), layer.p, True)  # one mask: the tangent shares the primal's
            h = h * keep
            t = t * (keep.repeat(count, 1, 1, 1) if count > 1 else keep)
    return h, list(t.chunk(count)) if count > 1 else [t]
