"""Whether a trial's training step runs through `torch.compile`, and a failed compile's safe fall back to eager.

In fp32 on a CPU, inductor fuses BN + ReLU + the residual adds (and the WarpNet tangent's element-wise
work) into generated C++ loops around oneDNN's convolutions. benchmarks/train.py measured the steady
state against eager fp32 NCHW; the price is a one-off compile at the start of every trial, so `auto`
compiles only a trial long enough to pay it back (`COMPILE_MIN_STEPS`), in fp32 on CPU only (bf16
autocast compiled on a CPU without AMX ran at 0.09× the naive loop; CUDA is not measured here).
The compile happens in `warm_up`, on one batch, before the first epoch: its cost is timed apart from the
epochs, the network's weights, BN statistics and the random generators are restored afterwards (so a
compiled run trains the same steps as an eager one), and any error there leaves the trial in eager
mode with the reason recorded.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

# A compiled step saves ~35 % of a step of a 0.3M-parameter network on CPU (benchmarks/train.py), and the
# compile costs 40-90 s there: about 300 steps (one epoch of 45,000 images at batch 128) to break even,
# so `auto` waits for four times that.
COMPILE_MIN_STEPS = 1200
# Compiled (with INDUCTOR_OPTIONS) / eager fp32 NCHW step, batch 128, one thread, one network per process
# (2-core AMD EPYC, AVX-512, no AMX): resnet from benchmarks/train.py (whole trainer epochs, 1.38x), the others
# from benchmarks/models.py --compile (multiresnet-8-k4 1.09x, warpnet-19-1-K3 and -25-1 1.11x). `auto` compiles
# only these families. Measured eager-or-slower: dvanet 1.05x (within noise), dmrnet 0.87x; wrn, postresnet not run.
COMPILED_FAMILIES = {"resnet": 1.38, "multiresnet": 1.09, "warpnet": 1.11}
# One trial's compile of resnet-20 (benchmarks/train.py): 60 s cold on an idle 2-core CPU (up to 195 s under load),
# 1-11 s once inductor's cache holds the candidate (its later seeds). `--dry-run` adds these to compiled trials.
COLD_COMPILE_S = 60.0
WARM_COMPILE_S = 5.0


def compiled_speedup(family: str | None) -> float:
    """The measured compiled / eager step-speed ratio of a family (1 where it was not measured)."""
    return COMPILED_FAMILIES.get(family or "", 1.0)


# inductor lays every convolution out channels_last on a CPU with oneDNN (GraphLowering.decide_layout_opt), and
# oneDNN's AVX2 backward of a strided 1x1 convolution with fewer than ~8 input channels in that layout corrupts
# the heap (archsearch.train.layout): `auto` keeps networks with such a convolution (twice the margin) eager.
NARROW_CHANNELS = 16

# inductor's store-or-recompute choice: by default a pointwise result read by fewer than 4 consumers is inlined
# into each of them, so a pre-activation residual stream (x + F1 + F2 + ...) is re-summed from all its terms in
# every BN reduction, normalisation and saved-for-backward buffer that reads it, a memory-bound kernel per term.
# Materialising every such result once (threshold 1) measured, against the default options in the same process
# (2 threads, batch 128, 2-core AMD EPYC): resnet-20 1.15x, resnet-56 1.07x, multiresnet-8-k4 1.08x, dmrnet-14
# 1.05x, wrn-16-2 1.04x, warpnet-19-1-K3 0.99x, warpnet-25-1 1.01x; so it is kept for every family.
INDUCTOR_OPTIONS: dict[str, Any] = {"realize_reads_threshold": 1}


def compile_module(net: nn.Module) -> nn.Module:
    """`net` behind torch.compile as the trainer runs it: static shapes (one step shape, never a generic kernel)
    and `INDUCTOR_OPTIONS`."""
    return torch.compile(net, dynamic=False, options=dict(INDUCTOR_OPTIONS))


def narrow_strided_pointwise(net: nn.Module) -> str | None:
    """The first strided 1x1 convolution with fewer than `NARROW_CHANNELS` input channels, described, or None."""
    for name, m in net.named_modules():
        if isinstance(m, nn.Conv2d) and m.kernel_size == (1, 1) and max(m.stride) > 1 \
                and m.in_channels // m.groups < NARROW_CHANNELS:  # a grouped convolution: per group
            groups = f", {m.groups} groups" if m.groups > 1 else ""
            return f"{name} ({m.in_channels}->{m.out_channels}, 1x1 stride {max(m.stride)}{groups})"
    return None


def resolve_compile(setting: bool | str, device: torch.device, amp: torch.dtype | None,
                    total_steps: int, family: str | None = None, narrow: str | None = None) -> tuple[bool, str]:
    """(compile?, why) for the config's `compile` on `device`, in `amp`, for a trial of `total_steps` of a
    network of `family` (None: a module passed in, not a named family) whose `narrow_strided_pointwise` is
    `narrow`."""
    if setting is True:
        return True, "compile: on (config)"
    if setting is False:
        return False, "compile: off (config)"
    if device.type != "cpu":
        return False, f"auto: eager on {device.type} (compile measured on CPU only)"
    if amp is not None:
        return False, "auto: eager under autocast (compiled bf16 without AMX measured 0.09x)"
    if family not in COMPILED_FAMILIES:
        return False, f"auto: eager, compiling {family or 'this network'} was not measured to pay on CPU"
    if narrow is not None:
        return False, (f"auto: eager, {narrow} would run channels_last compiled (a layout whose AVX2 kernel "
                       "crashes narrow strided 1x1 convolutions)")
    if total_steps < COMPILE_MIN_STEPS:
        return False, f"auto: eager, {total_steps} steps < {COMPILE_MIN_STEPS} to pay back the compile"
    return True, (f"auto: compiled, fp32 CPU, {total_steps} steps >= {COMPILE_MIN_STEPS}, {family} measured "
                  f"{COMPILED_FAMILIES[family]}x eager")


def warm_up(net: nn.Module, model: nn.Module, step: Callable[[nn.Module], Tensor]) -> tuple[bool, float, str]:
    """Compile `model` (the compiled `net`) by running `step(model)` once; leave `net` as it was.

    Returns (compiled, seconds, error): on any error the caller trains `net` eagerly and records why.
    """
    state = copy.deepcopy(net.state_dict())
    rng = torch.get_rng_state()
    start = time.perf_counter()
    error = ""
    try:
        step(model).backward()
    except Exception as exc:  # noqa: BLE001 - any compiler failure means: train eagerly
        lines = str(exc).strip().splitlines()
        error = f"{type(exc).__name__}: {lines[0] if lines else ''}"[:300]
    seconds = time.perf_counter() - start
    net.load_state_dict(state)
    torch.set_rng_state(rng)
    for p in net.parameters():
        p.grad = None
    return not error, seconds, error


def compile_record(compiled: bool, reason: str, seconds: float | None) -> dict[str, Any]:
    """The fields a trial records about compilation, as it records its precision."""
    options = ", ".join(f"{k}={v}" for k, v in INDUCTOR_OPTIONS.items())
    return {"compiled": compiled, "compile_reason": f"{reason}; inductor {options}" if compiled else reason,
            "compile_seconds": None if seconds is None else round(seconds, 2),
            "compile_options": dict(INDUCTOR_OPTIONS) if compiled else None}
