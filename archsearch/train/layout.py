"""Which memory layout a network trains in on a CPU: channels_last only where it is safe *and* measured faster.

oneDNN's channels_last (NHWC) kernels are faster for many CPU convolutions, but some crash the process: the
AVX2 backward of a strided 1×1 convolution with fewer than ~8 input channels corrupts the heap with one thread
and hangs with two (PyTorch 2.14.1) — and narrow fitted networks at small budgets have exactly these projection
shortcuts. A crash cannot be caught in-process, so the probe runs in a child process: a few forward + backward
steps of the network in each layout, at the trial's batch size and thread count. A child that dies or outlives
its time limit marks channels_last unsafe; otherwise the faster layout wins (NCHW on a tie). The verdict is
cached in `$ARCHSEARCH_CACHE/memory_layout.json` per (network, input, batch, threads, torch, CPU), as the branch
strategy is, so the seeds of one candidate probe once.
"""

from __future__ import annotations

import json
import os
import platform
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch

from archsearch.cache import cache_dir

PROBE_VERSION = 1
MIN_SPEEDUP = 1.05  # channels_last must beat NCHW by 5 % to be worth a layout nobody else checked
PROBE_TIMEOUT_S = 180.0


def cpu_label() -> str:
    """The CPU model and any oneDNN ISA cap: what decides which kernels (and which bugs) run."""
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    isa = os.environ.get("ONEDNN_MAX_CPU_ISA") or os.environ.get("DNNL_MAX_CPU_ISA")
    return model + (f" (oneDNN ISA {isa})" if isa else "")


def probe_key(name: str, input_shape: tuple[int, ...], batch_size: int, threads: int, num_classes: int) -> str:
    shape = "x".join(map(str, input_shape))
    return (f"v{PROBE_VERSION}|{name}|{shape}|c{num_classes}|b{batch_size}|t{threads}|torch{torch.__version__}|"
            f"{cpu_label()}")


def _cache_file() -> Path:
    return cache_dir() / "memory_layout.json"


def _load() -> dict[str, Any]:
    try:
        return json.loads(_cache_file().read_text())
    except (OSError, ValueError):
        return {}


def _save(key: str, verdict: dict[str, Any]) -> None:
    """Best effort: a read-only cache costs a re-probe next time, never a failed trial."""
    try:
        path = _cache_file()
        path.parent.mkdir(parents=True, exist_ok=True)
        data = _load()
        data[key] = verdict
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(data, indent=1, sort_keys=True))
        os.replace(tmp, path)
    except OSError:
        pass


def probe(name: str, input_shape: tuple[int, ...], batch_size: int, threads: int, num_classes: int,
          timeout: float = PROBE_TIMEOUT_S) -> dict[str, Any]:
    """Run the child probe; {"channels_last": bool, "reason": str, "nchw_s": …, "nhwc_s": …}."""
    args = [sys.executable, "-m", "archsearch.train.layout_probe", name, ",".join(map(str, input_shape)),
            str(batch_size), str(threads), str(num_classes)]
    start = time.perf_counter()
    try:
        proc = subprocess.run(args, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"channels_last": False, "reason": f"channels_last probe hung (> {timeout:.0f} s): NCHW"}
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    timings = json.loads(lines[-1]) if lines else None
    if proc.returncode != 0 or timings is None:
        tail = (proc.stderr.strip().splitlines() or [""])[-1][:200]
        code = proc.returncode
        how = f"signal {signal.Signals(-code).name}" if code < 0 and -code in signal.valid_signals() else f"exit {code}"
        return {"channels_last": False,
                "reason": f"channels_last crashed the probe ({how}{': ' + tail if tail else ''}): NCHW"}
    if timings.get("nhwc_s") is None:  # NCHW ran, channels_last raised an error
        return {"channels_last": False, "reason": f"channels_last failed: {timings.get('error')}: NCHW", **timings}
    speedup = timings["nchw_s"] / timings["nhwc_s"]
    use = speedup >= MIN_SPEEDUP
    why = f"channels_last {speedup:.2f}x NCHW in the probe" + ("" if use else ": NCHW")
    return {"channels_last": use, "reason": why, "speedup": round(speedup, 3),
            "probe_s": round(time.perf_counter() - start, 2), **timings}


def resolve_layout(setting: bool | str | None, device: torch.device, name: str | None,
                   input_shape: tuple[int, ...], batch_size: int, num_classes: int) -> tuple[bool, str]:
    """(use channels_last, why) for `train.channels_last` (true | false | auto | null) on `device`."""
    if isinstance(setting, bool):
        return setting, f"train.channels_last: {str(setting).lower()}"
    if device.type == "cuda":
        return True, "CUDA: channels_last (cuDNN's fast layout)"
    if setting != "auto":
        return False, "CPU default: NCHW (train.channels_last: auto probes channels_last)"
    if name is None:
        return False, "a network given as a module cannot be probed by name: NCHW"
    return choose_channels_last(name, input_shape, batch_size, torch.get_num_threads(), num_classes)


def choose_channels_last(name: str, input_shape: tuple[int, ...], batch_size: int, threads: int,
                         num_classes: int) -> tuple[bool, str]:
    """(use channels_last, why) for a CPU trial, probing once per key and caching the verdict."""
    key = probe_key(name, input_shape, batch_size, threads, num_classes)
    cached = _load().get(key)
    if cached is not None:
        return bool(cached["channels_last"]), str(cached["reason"]) + " (cached)"
    verdict = probe(name, input_shape, batch_size, threads, num_classes)
    _save(key, verdict)
    return bool(verdict["channels_last"]), str(verdict["reason"])
