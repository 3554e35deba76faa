"""The warp operator's derivative terms F'(x)·v written out layer by layer, all tangents in one batch.

Forward-mode AD (`torch.autograd.forward_ad`) computes the same numbers, but it runs F once per
tangent (the primal again each time), evaluates train-mode BN's tangent rule as a long chain of
unfused element-wise operations, and dynamo cannot compile it. Here F's primal runs once, every
tangent of one function shares each convolution call (stacked on the batch axis), and BN's tangent
is the closed form of its Jacobian:

    train mode:  BN'(h)·t = gamma · invstd · (t - mean(t) - xhat · mean(t · xhat)),  xhat = (h - mean) · invstd
    eval mode:   BN'(h)·t = gamma · invstd_running · t

with the means per channel over (N, H, W) of each tangent: the train-mode map is BN's own backward
formula (fused kernels both ways). The primal BN updates the running statistics as `nn.BatchNorm2d`
does, once per step. Functions made of
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


def _bn(bn: nn.BatchNorm2d, h: torch.Tensor, t: torch.Tensor, count: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(BN(h), BN'(h)·t) with `count` tangents stacked on t's batch axis.

    Train-mode BN's Jacobian is symmetric, so its tangent map is its own backward: the fused
    `native_batch_norm_backward` kernel, whose autograd (BN's double backward) carries the dependence of
    the batch statistics on h into the training gradients.
    """
    if not (bn.training or bn.running_mean is None):  # eval: an affine map, its tangent the linear part
        scale = bn.weight * torch.rsqrt(bn.running_var + bn.eps) if bn.weight is not None else \
            torch.rsqrt(bn.running_var + bn.eps)
        return bn(h), t * scale.view(1, -1, 1, 1)
    out, mean, invstd = torch.native_batch_norm(h, bn.weight, bn.bias, bn.running_mean, bn.running_var, True,
                                                _momentum(bn), bn.eps)
    tangents = [torch.ops.aten.native_batch_norm_backward(
        v, h, bn.weight, bn.running_mean, bn.running_var, mean, invstd, True, bn.eps, [True, False, False])[0]
        for v in (t.chunk(count) if count > 1 else [t])]
    return out, tangents[0] if count == 1 else torch.cat(tangents)


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
