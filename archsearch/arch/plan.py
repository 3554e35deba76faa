"""The layer plan: spec -> stages -> units -> convolutions with shapes (torch-free).

The builder (`archsearch.nn`), the fast counter (`archsearch.arch.cost`) and the exporter
(`archsearch.export.source`) all lay a network out from this one plan, so the three cannot drift:
where a stride sits, which channels a convolution reads and writes, which unit starts a stage or
ends the network, and which derivative terms a warp operator adds.
"""

from __future__ import annotations

from typing import NamedTuple

from archsearch.arch.spec import ArchSpec

INPUT_RES = 32  # CIFAR/SVHN images


class ConvSlot(NamedTuple):
    """One convolution of a residual function, by role: it reads "in" or "width" channels and writes
    "width" or "expanded" (4 x width, the bottleneck's last 1x1); `strided` carries the unit's stride."""

    kernel: int
    reads: str
    writes: str
    strided: bool


class Conv(NamedTuple):
    """A convolution with its channels resolved: (kernel, in, out, stride)."""

    kernel: int
    c_in: int
    c_out: int
    stride: int


class Unit(NamedTuple):
    """One residual unit: its stage, channels in, inner width, channels out, stride, input resolution,
    whether it opens its stage and whether it is the network's last unit."""

    stage: int
    c_in: int
    width: int
    c_out: int
    stride: int
    res: int
    first: bool
    last: bool


class WarpStage(NamedTuple):
    """One WarpNet stage: width, resolution, units and the warp operators (units / K) they form."""

    stage: int
    width: int
    res: int
    units: int
    operators: int


def function_layout(kernels: tuple[int, ...], bottleneck: bool) -> list[ConvSlot]:
    """The convolutions of one residual function; the stride sits on the first conv (bottleneck: on
    the 3x3, whose 1x1 expansion gives 4x the width)."""
    if bottleneck:
        return [ConvSlot(1, "in", "width", False), ConvSlot(3, "width", "width", True),
                ConvSlot(1, "width", "expanded", False)]
    return [ConvSlot(k, "in" if i == 0 else "width", "width", i == 0) for i, k in enumerate(kernels)]


def function_convs(c_in: int, width: int, stride: int, kernels: tuple[int, ...], bottleneck: bool) -> list[Conv]:
    """`function_layout` with channels and strides as numbers."""
    channels = {"in": c_in, "width": width, "expanded": 4 * width}
    return [Conv(slot.kernel, channels[slot.reads], channels[slot.writes], stride if slot.strided else 1)
            for slot in function_layout(kernels, bottleneck)]


def stem_width(spec: ArchSpec) -> int:
    """Channels out of the stem: 16 (pre-activation), the first stage's width (post) or the warp stem."""
    if spec.unit == "pre":
        return 16
    return spec.stem if spec.unit == "warp" else spec.widths[0]


def unit_runs(spec: ArchSpec) -> list[tuple[Unit, int]]:
    """(unit, how many identical copies in a row): each stage's first unit, then the rest of it.

    A stage costs O(1) this way; `units` expands the runs (and marks the last unit)."""
    runs: list[tuple[Unit, int]] = []
    c_in, res = stem_width(spec), INPUT_RES
    for stage, (n, width) in enumerate(zip(spec.units, spec.widths, strict=True)):
        stride = 2 if stage else 1
        c_out = width * spec.expansion
        runs.append((Unit(stage, c_in, width, c_out, stride, res, True, False), 1))
        res //= stride
        if n > 1:
            runs.append((Unit(stage, c_out, width, c_out, 1, res, False, False), n - 1))
        c_in = c_out
    return runs


def units(spec: ArchSpec) -> list[Unit]:
    """Every residual unit of a (non-warp) network in order."""
    out = [unit for unit, count in unit_runs(spec) for _ in range(count)]
    out[-1] = out[-1]._replace(last=True)
    return out


def warp_stages(spec: ArchSpec) -> list[WarpStage]:
    """The stages of a WarpNet (a transition halves the resolution before every stage but the first)."""
    return [WarpStage(stage, width, INPUT_RES >> stage, n, n // spec.warp_k)
            for stage, (n, width) in enumerate(zip(spec.units, spec.widths, strict=True))]


def derivative_terms(k: int, variant: int) -> list[tuple[int, int | None]]:
    """(j, i) pairs of a warp operator's derivative terms F'_j . F_i (i None = F'_j . x), 0-based."""
    if variant == 2:
        return [(j, i) for j in range(1, k) for i in range(j)]
    return [(j, None) for j in range(1, k)]
