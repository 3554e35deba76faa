"""The WarpNet warp operator: K residual units replaced by their first-order Taylor expansion.

All K functions are evaluated at the same input x (so they could run on K devices):
  v2: x + sum_i F_i + sum_{i<j} F'_j . F_i     (K = 2: x + F1 + F2 + F2'F1)
  v1: x + sum_i F_i + sum_{j>=2} F'_j . x      (K = 2: x + F1 + F2 + F2'x)
F'_j . v is the Jacobian-vector product of F_j at x along v, computed exactly: written out layer by
layer with every tangent of F_j in one batch (`archsearch.nn.warp_jvp`, the fast path, also compiled by
dynamo), or with forward-mode AD (`forward_ad_value_and_jvps`) for functions with other layers
(`torch.func.jvp` fails on train-mode BatchNorm). With `exact_bn=False`
(the paper's "-nobn" runs) the derivative terms skip F's BN layers: the JVP is propagated through
the convolutions and the primal ReLU masks only.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
import torch.autograd.forward_ad as fwAD
import torch.nn.functional as F
from torch import nn

from archsearch.arch.plan import derivative_terms
from archsearch.nn import warp_jvp
from archsearch.nn.blocks import Poly, poly_add, poly_shift
from archsearch.nn.parallel import transfer


@contextlib.contextmanager
def frozen_bn_statistics(module: nn.Module) -> Iterator[None]:
    """Extra passes through a function (one per tangent) must not update BN running stats twice."""
    saved = []
    for m in module.modules():
        if isinstance(m, nn.BatchNorm2d):
            saved.append((m, m.momentum, m.num_batches_tracked.clone() if m.num_batches_tracked is not None
                          else None))
            m.momentum = 0.0
    try:
        yield
    finally:
        for m, momentum, tracked in saved:
            m.momentum = momentum
            if tracked is not None:
                m.num_batches_tracked.copy_(tracked)


class WarpOperator(nn.Module):
    """K consecutive WarpNet units (x + F(x)) replaced by the warp operator; K = 1 is one unit."""

    def __init__(self, functions: list[nn.Sequential], variant: int, exact_bn: bool) -> None:
        super().__init__()
        self.functions = nn.ModuleList(functions)
        self.variant = variant
        self.exact_bn = exact_bn
        self.convs = sum(isinstance(m, nn.Conv2d) for m in functions[0])
        # Test-time lesions (`archsearch.nn.lesion`): deleted functions j (F_j = 0, so every term with
        # F_j or F'_j vanishes) and deleted derivative terms (j, i).
        self.deleted_functions: frozenset[int] = frozenset()
        self.deleted_terms: frozenset[tuple[int, int | None]] = frozenset()
        self.devices: list[torch.device] | None = None  # model parallelism (`archsearch.nn.parallel.place`)
        self.placement: list[int] = []

    def spread(self, devices: list[torch.device]) -> None:
        """F_j and its derivative terms on `devices[j mod n]`; the sum is formed on `devices[0]`."""
        self.devices = list(devices)
        self.placement = [j % len(devices) for j in range(len(self.functions))]
        for f, entry in zip(self.functions, self.placement, strict=True):
            f.to(devices[entry])

    def live_terms(self) -> list[tuple[int, int | None]]:
        """The derivative terms (j, i) this operator computes, lesions applied."""
        dead = self.deleted_functions
        return [(j, i) for j, i in derivative_terms(len(self.functions), self.variant)
                if j not in dead and i not in dead and (j, i) not in self.deleted_terms]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.is_inference_mode_enabled() and len(self.functions) > 1:
            # Forward-mode AD yields no tangents under inference mode (evaluation, serving): leave it
            # for plain no-grad mode on a normal copy of the input; the output is used as usual.
            with torch.inference_mode(False), torch.no_grad():
                return self.forward(x.clone())
        tangents_of: dict[int, list[int | None]] = {}
        for j, i in self.live_terms():
            tangents_of.setdefault(j, []).append(i)
        values: dict[int, torch.Tensor] = {}
        derivs: list[torch.Tensor] = []
        for j, f in enumerate(self.functions):
            if j in self.deleted_functions:
                continue
            vectors = [x if i is None else values[i] for i in tangents_of.get(j, [])]
            value, jvps = self._on_device(j, f, x, vectors)
            values[j] = value
            derivs.extend(jvps)
        out = x
        for t in [*values.values(), *derivs]:
            out = out + t
        return out

    def _on_device(self, j: int, f: nn.Sequential, x: torch.Tensor,
                   vectors: list[torch.Tensor]) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """F_j(x) and its JVPs, computed on F_j's device when placed, returned on the first device."""
        if self.devices is None:
            return self._value_and_jvps(f, x, vectors)
        entry, home = self.placement[j], self.devices[0]
        there = self.devices[entry]
        value, jvps = self._value_and_jvps(f, transfer(x, there, entry), [transfer(v, there, entry) for v in vectors])
        return transfer(value, home, 0), [transfer(t, home, 0) for t in jvps]

    def _value_and_jvps(self, f: nn.Sequential, x: torch.Tensor,
                        vectors: list[torch.Tensor]) -> tuple[torch.Tensor, list[torch.Tensor]]:
        if not vectors:
            return f(x), []
        if torch.is_autocast_enabled(x.device.type):
            # Forward-mode AD does not compose with autocast (dual tensors skip its casts), so the
            # Taylor terms are computed in fp32 even in a bf16/fp16 step.
            with torch.autocast(x.device.type, enabled=False):
                return self._value_and_jvps(f, x.float(), [v.float() for v in vectors])
        if not self.exact_bn:
            return linearised_without_bn(f, x, vectors)
        if warp_jvp.supports(f):
            return warp_jvp.value_and_jvps(f, x, vectors)
        return forward_ad_value_and_jvps(f, x, vectors)

    def paths(self, streams: list[Poly]) -> list[Poly]:
        (p,) = streams
        terms = [p] + [poly_shift(p, self.convs)] * (len(self.functions) - len(self.deleted_functions))
        for _, i in self.live_terms():
            terms.append(poly_shift(p, self.convs if i is None else 2 * self.convs))
        return [poly_add(*terms)]


def forward_ad_value_and_jvps(f: nn.Sequential, x: torch.Tensor,
                              vectors: list[torch.Tensor]) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """F(x) and F'(x)·v per vector with forward-mode AD: one pass per tangent, BN statistics updated once."""
    jvps = []
    value = None
    for n, v in enumerate(vectors):
        context = frozen_bn_statistics(f) if n > 0 else contextlib.nullcontext()
        with context, fwAD.dual_level():
            out = f(fwAD.make_dual(x, v))
            primal, tangent = fwAD.unpack_dual(out)
        if value is None:
            value = primal
        jvps.append(tangent)
    return value, jvps


def linearised_without_bn(f: nn.Sequential, x: torch.Tensor,
                          vectors: list[torch.Tensor]) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """F(x) and, per vector v, the JVP of F with its BN layers dropped (ReLU masks from the primal)."""
    h = x
    ts = list(vectors)
    for layer in f:
        if isinstance(layer, nn.Conv2d):
            h = layer(h)
            ts = [F.conv2d(t, layer.weight, None, layer.stride, layer.padding, layer.dilation, layer.groups)
                  for t in ts]
        elif isinstance(layer, nn.ReLU):
            mask = (h > 0).to(h.dtype)
            h = F.relu(h)
            ts = [t * mask for t in ts]
        elif isinstance(layer, nn.Dropout):
            if layer.training and layer.p > 0:  # the tangent shares the primal's dropout mask
                keep = F.dropout(torch.ones_like(h), layer.p, True)
                h = h * keep
                ts = [t * keep for t in ts]
        else:  # BatchNorm: the primal keeps it, the derivative term skips it
            h = layer(h)
    return h, ts


class WarpTransition(nn.Module):
    """Between WarpNet stages: 2x2 average pooling and two concatenated copies (no parameters)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.avg_pool2d(x, 2)
        return torch.cat([x, x], dim=1)

    def paths(self, streams: list[Poly]) -> list[Poly]:
        return streams
