"""Executing k parallel residual functions: a Python loop, or one grouped convolution per layer.

Both strategies read the same parameters (each function owns its layers, so the `state_dict` does
not depend on the strategy); the grouped one concatenates the k weights at run time and walks the
functions' layers in lock-step. They agree up to floating-point reassociation.

Which is faster depends on device and shape (on a 2-core CPU grouped convolution was measured
slower than the loop for some shapes), so `auto` measures both once per (device, shape) and caches
the choice in memory and in `$ARCHSEARCH_CACHE/branch_strategy.json`.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from archsearch.nn.norm import batch_statistics_only
from archsearch.nn.parallel import transfer

STRATEGIES = ("loop", "grouped", "auto")
STRATEGY_CANDIDATES = ("loop", "grouped")  # what `auto` chooses between
PROBE_VERSION = 2  # in the cache key: choices timed by the older probe (eval BN, no weight gradients,
#                     not the entry point's own combine step) are re-timed
_CHOICES: dict[str, str] = {}


def cache_dir() -> Path:
    return Path(os.environ.get("ARCHSEARCH_CACHE", Path.home() / ".cache" / "archsearch"))


def _cache_file() -> Path:
    return cache_dir() / "branch_strategy.json"


def _load_choices() -> None:
    if _CHOICES:
        return
    try:
        _CHOICES.update(json.loads(_cache_file().read_text()))
    except (OSError, ValueError):
        pass


def _reload_choices() -> None:
    try:
        _CHOICES.update(json.loads(_cache_file().read_text()))
    except (OSError, ValueError):
        pass


@contextlib.contextmanager
def _cache_lock() -> Iterator[None]:
    """An exclusive lock on the cache across processes (best effort where flock is unavailable)."""
    try:
        _cache_file().parent.mkdir(parents=True, exist_ok=True)
        handle = open(_cache_file().with_suffix(".lock"), "w")  # noqa: SIM115
    except OSError:
        yield
        return
    with handle:
        try:
            import fcntl

            fcntl.flock(handle, fcntl.LOCK_EX)
        except (ImportError, OSError):
            pass
        yield


def _save_choice(key: str, choice: str) -> None:
    _CHOICES[key] = choice
    try:
        path = _cache_file()
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(_CHOICES, indent=1, sort_keys=True))
        os.replace(tmp, path)
    except OSError:
        pass


def _memory_format(x: torch.Tensor) -> torch.memory_format:
    """The layout to time a strategy in: the one training uses (NHWC and NCHW favour different kernels)."""
    if x.dim() == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last):
        return torch.channels_last
    return torch.contiguous_format


def _layout(x: torch.Tensor) -> str:
    return "nhwc" if _memory_format(x) is torch.channels_last else "nchw"


def _device_label(x: torch.Tensor) -> str:
    if x.is_cuda:
        return "cuda:" + torch.cuda.get_device_name(x.device)
    return f"{x.device.type}:{torch.get_num_threads()}threads"


class BranchSet(nn.Module):
    """k residual functions of identical structure (an `nn.ModuleList` named `branches`)."""

    def __init__(self, functions: list[nn.Sequential], strategy: str = "auto") -> None:
        super().__init__()
        if strategy not in STRATEGIES:
            raise ValueError(f"branch strategy must be one of {STRATEGIES}, not {strategy!r}")
        self.branches = nn.ModuleList(functions)
        self.strategy = strategy
        self.used: dict[tuple[str, tuple[int, ...]], str] = {}  # (entry, input shape) -> strategy that ran
        # Test-time lesions (`archsearch.nn.lesion`): deleted functions give zeros, detached ones pass no gradient.
        self.deleted: frozenset[int] = frozenset()
        self.detached: frozenset[int] = frozenset()
        self.devices: list[torch.device] | None = None  # model parallelism (`archsearch.nn.parallel.place`)
        self.placement: list[int] = []

    def __len__(self) -> int:
        return len(self.branches)

    def live(self) -> int:
        """Functions not deleted by a lesion."""
        return len(self.branches) - len(self.deleted)

    def spread(self, devices: list[torch.device]) -> None:
        """Function i on `devices[i mod n]`; inputs go there and outputs come back to `devices[0]`."""
        self.devices = list(devices)
        self.placement = [i % len(devices) for i in range(len(self.branches))]
        for f, entry in zip(self.branches, self.placement, strict=True):
            f.to(devices[entry])

    def _call(self, i: int, x: torch.Tensor) -> torch.Tensor:
        """f_i(x) on its device, with its lesion applied; the per-function path every strategy but `grouped` takes."""
        f = self.branches[i]
        if self.devices is not None:
            entry = self.placement[i]
            out = transfer(f(transfer(x, self.devices[entry], entry)), self.devices[0], 0)
        else:
            out = f(x)
        if i in self.deleted:
            return torch.zeros_like(out)
        return out.detach() if i in self.detached else out

    # ---------------------------------------------------------------- public entry points
    def sum_shared(self, x: torch.Tensor) -> torch.Tensor:
        """sum_i f_i(x): every function reads the same input."""
        if len(self.branches) == 1:
            return self._call(0, x)
        return self._run("sum_shared", x, self._choose("sum_shared", x))

    def each_shared(self, x: torch.Tensor) -> list[torch.Tensor]:
        """[f_i(x)] for one shared input (the first merge-and-run unit)."""
        if len(self.branches) == 1:
            return [self._call(0, x)]
        return self._run("each_shared", x, self._choose("each_shared", x))

    def each(self, xs: list[torch.Tensor]) -> list[torch.Tensor]:
        """[f_i(x_i)]: function i reads stream i (merge-and-run)."""
        if len(self.branches) == 1:
            return [self._call(0, xs[0])]
        return self._run("each", xs, self._choose("each", xs[0]))

    def _run(self, entry: str, x: Any, strategy: str) -> Any:
        """One entry point under one strategy (what `auto` times is exactly what runs)."""
        if strategy == "grouped":
            if entry == "each":
                out = grouped_forward(self.branches, torch.cat(x, dim=1), stacked=True)
            else:
                out = grouped_forward(self.branches, x, stacked=False)
            out = self._unstack(out)
            return out.sum(1) if entry == "sum_shared" else list(out.unbind(1))
        k = len(self.branches)
        if entry == "each":
            return [self._call(i, xi) for i, xi in zip(range(k), x, strict=True)]
        if entry == "each_shared":
            return [self._call(i, x) for i in range(k)]
        out = self._call(0, x)
        for i in range(1, k):
            out = out + self._call(i, x)
        return out

    # ---------------------------------------------------------------- strategy choice
    def _unstack(self, y: torch.Tensor) -> torch.Tensor:
        n, kc, h, w = y.shape
        return y.view(n, len(self.branches), kc // len(self.branches), h, w)

    def _choose(self, entry: str, x: torch.Tensor) -> str:
        choice = self._resolve(entry, x)
        self.used[(entry, tuple(x.shape))] = choice
        return choice

    def _resolve(self, entry: str, x: torch.Tensor) -> str:
        if self.deleted or self.detached or self.devices is not None:
            return "loop"  # lesions and placement act per function; `grouped` fuses the functions
        if self.strategy != "auto":
            return self.strategy
        if torch.jit.is_tracing() or torch.compiler.is_compiling():
            return _CHOICES.get(self._key(x, entry), "loop")
        key = self._key(x, entry)
        _load_choices()
        if key not in _CHOICES:
            with _cache_lock():  # concurrent trials meeting a new shape: one measures, all agree
                _reload_choices()
                if key not in _CHOICES:
                    _save_choice(key, self._measure(x, entry))
        return _CHOICES[key]

    def _key(self, x: torch.Tensor, entry: str) -> str:
        first_conv = next(m for m in self.branches[0] if isinstance(m, nn.Conv2d))
        return "|".join(map(str, (f"probe{PROBE_VERSION}", _device_label(x), torch.__version__, len(self.branches),
                                  entry, tuple(x.shape), first_conv.out_channels, first_conv.stride[0],
                                  len(self.branches[0]), x.dtype, _layout(x),
                                  torch.is_autocast_enabled(x.device.type))))

    def _measure(self, x: torch.Tensor, entry: str, repeats: int = 3) -> str:
        """Time a training step's share of both strategies on this input shape.

        As training runs them: batch-statistics BN (its running statistics restored afterwards; in
        eval mode the two strategies time within noise of each other and the probe chose at random),
        forward plus the gradients of the input and of every weight, taken with `autograd.grad` so no
        parameter's `.grad` is touched. Dropout stays off (no random numbers drawn). One warm-up
        each, then the strategies alternate, so a passing load slows both alike; the faster best
        time wins.
        """
        with torch.inference_mode(False), torch.enable_grad():  # first call may come from evaluation
            return self._measure_with_grad(x, entry, repeats)

    def _measure_with_grad(self, x: torch.Tensor, entry: str, repeats: int) -> str:
        fmt = _memory_format(x)
        probes = [torch.zeros(x.shape, dtype=x.dtype, device=x.device).contiguous(memory_format=fmt).requires_grad_()
                  for _ in range(len(self.branches) if entry == "each" else 1)]
        weights = [p for p in self.branches.parameters() if p.requires_grad]

        def run(name: str) -> None:
            out = self._run(entry, probes if entry == "each" else probes[0], name)
            loss = out.sum() if isinstance(out, torch.Tensor) else sum(o.sum() for o in out)
            torch.autograd.grad(loss, [*probes, *weights])

        def timed(name: str) -> float:
            if x.is_cuda:
                torch.cuda.synchronize(x.device)
            start = time.perf_counter()
            run(name)
            if x.is_cuda:
                torch.cuda.synchronize(x.device)
            return time.perf_counter() - start

        timings: dict[str, float] = {}
        with batch_statistics_only(self) as bns:
            saved = [{key: b.clone() for key, b in bn.named_buffers(recurse=False)} for bn in bns]
            try:
                for name in STRATEGY_CANDIDATES:
                    run(name)
                for _ in range(repeats):
                    for name in STRATEGY_CANDIDATES:
                        timings[name] = min(timings.get(name, float("inf")), timed(name))
            finally:
                with torch.no_grad():
                    for bn, buffers in zip(bns, saved, strict=True):
                        for key, b in bn.named_buffers(recurse=False):
                            b.copy_(buffers[key])
        return min(timings, key=timings.__getitem__)


def grouped_forward(functions: nn.ModuleList, x: torch.Tensor, stacked: bool) -> torch.Tensor:
    """Run k identical-structure functions as one network of grouped convolutions.

    `x` is either one input shared by all functions (`stacked=False`) or the k inputs
    concatenated along channels. Returns the k outputs concatenated along channels.
    """
    k = len(functions)
    h = x
    for layers in zip(*functions, strict=True):
        first = layers[0]
        if isinstance(first, nn.Conv2d):
            weight = torch.cat([layer.weight for layer in layers], dim=0)
            h = F.conv2d(h, weight, None, first.stride, first.padding, first.dilation,
                         groups=k if stacked else 1)
            stacked = True
        elif isinstance(first, nn.BatchNorm2d):
            if not stacked:
                h = h.repeat(1, k, 1, 1)
                stacked = True
            h = _stacked_batch_norm(layers, h)
        elif isinstance(first, nn.ReLU):
            h = F.relu(h)
        elif isinstance(first, nn.Dropout):
            h = F.dropout(h, first.p, first.training)
        else:
            raise TypeError(f"grouped execution does not know layer {type(first).__name__}")
    return h


def _stacked_batch_norm(layers: tuple[nn.Module, ...], h: torch.Tensor) -> torch.Tensor:
    """BatchNorm over k stacked functions; running statistics are written back to each layer."""
    first = layers[0]
    weight = torch.cat([layer.weight for layer in layers])
    bias = torch.cat([layer.bias for layer in layers])
    update = first.training and first.track_running_stats
    if not first.training or update:
        running_mean = torch.cat([layer.running_mean for layer in layers])
        running_var = torch.cat([layer.running_var for layer in layers])
    else:
        running_mean = running_var = None
    # momentum None is nn.BatchNorm's cumulative average: factor 1 / (batches seen, this one included)
    momentum = first.momentum if first.momentum is not None else 1.0 / (int(first.num_batches_tracked) + 1)
    out = F.batch_norm(h, running_mean, running_var, weight, bias, first.training, momentum, first.eps)
    if update:
        with torch.no_grad():
            for layer, rm, rv in zip(layers, running_mean.chunk(len(layers)), running_var.chunk(len(layers)),
                                     strict=True):
                layer.running_mean.copy_(rm)
                layer.running_var.copy_(rv)
                layer.num_batches_tracked.add_(1)
    return out


def strategies_used(net: nn.Module) -> str:
    """What ran in every BranchSet of `net` so far: "loop×12 grouped×4 #1a2b3c4d" ('' without any).

    The strategies agree only up to reassociation, and training amplifies that, so two runs of one
    (architecture, seed) are bit-identical only if this matches; the digest covers every (module,
    entry point, input shape, strategy) so a trial's record says whether a rerun may differ.
    """
    items = sorted((name, entry, shape, choice) for name, m in net.named_modules() if isinstance(m, BranchSet)
                   for (entry, shape), choice in m.used.items())
    if not items:
        return ""
    counts: dict[str, int] = {}
    for *_, choice in items:
        counts[choice] = counts.get(choice, 0) + 1
    digest = hashlib.sha256(repr(items).encode()).hexdigest()[:8]
    return " ".join(f"{c}×{n}" for c, n in sorted(counts.items())) + f" #{digest}"
