"""How fast this machine trains one network: a few timed training steps and evaluation forwards, cached.

`archsearch run --dry-run` multiplies these seconds per image by a study's images, epochs and trials
(`archsearch.orchestrate.estimate`). Steps run on random images of the dataset's shape with the study's
batch size, threads, precision and memory layout — what decides the speed — so no dataset is loaded.
Results are cached under `archsearch.cache.cache_dir()` by network, device, CPU, settings and torch version.
"""

from __future__ import annotations

import json
import os
import platform
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from archsearch.arch.spec import as_spec
from archsearch.cache import cache_dir
from archsearch.nn.build import build
from archsearch.train.config import TrainConfig
from archsearch.train.precision import autocast, precision_name, resolve_precision, sync_device

CACHE_FILE = "calibration.json"
SLOW_STEP_S = 1.0  # an untimed first step longer than this: time one step, not `steps`


def _cache_file() -> Path:
    return cache_dir() / CACHE_FILE


def _device_label(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return platform.processor() or platform.machine()


def calibration_key(name: str, config: TrainConfig, device: torch.device, threads: int) -> str:
    """What decides a step's speed: network, device model, batch, threads, precision, layout, torch."""
    amp, channels_last = resolve_precision(config, device)
    return "|".join([name, device.type, _device_label(device), f"b{config.batch_size}", f"t{threads}",
                     precision_name(amp), "nhwc" if channels_last else "nchw", config.branch_strategy,
                     f"torch{torch.__version__}"])


def _load() -> dict[str, Any]:
    try:
        return json.loads(_cache_file().read_text())
    except (OSError, ValueError):
        return {}


def _save(entries: dict[str, Any]) -> None:
    path = _cache_file()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps({**_load(), **entries}, indent=1, sort_keys=True))
        tmp.replace(path)
    except OSError:  # a read-only cache only costs the next run its calibration
        pass


def time_network(spec_or_name: Any, config: TrainConfig, device: torch.device, *, num_classes: int = 10,
                 image_shape: tuple[int, int, int] = (3, 32, 32), steps: int = 2) -> dict[str, float]:
    """Seconds per image of a training step (SGD, loss, backward) and of an evaluation forward.

    One untimed step first (allocator, oneDNN kernels, the branch strategies' own measurements); when it
    took over `SLOW_STEP_S`, one timed step and one evaluation forward keep the calibration short.
    """
    spec = as_spec(spec_or_name, num_classes)
    torch.manual_seed(0)
    net = build(spec, num_classes=num_classes, strategy=config.branch_strategy)
    amp, channels_last = resolve_precision(config, device)
    fmt = torch.channels_last if channels_last else torch.preserve_format
    net = net.to(device, memory_format=fmt)
    b = config.batch_size
    x = torch.randn(b, *image_shape, device=device).contiguous(memory_format=fmt)
    y = torch.randint(0, num_classes, (b,), device=device)
    opt = torch.optim.SGD(net.parameters(), lr=1e-3, momentum=0.9)
    loss_fn = nn.CrossEntropyLoss()

    def step() -> None:
        with autocast(device, amp):
            loss = loss_fn(net(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    net.train()
    t0 = time.perf_counter()
    step()
    sync_device(device)
    slow = time.perf_counter() - t0 > SLOW_STEP_S  # a big network on a CPU: one timed step says enough
    steps = 1 if slow else steps
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    sync_device(device)
    train_s = (time.perf_counter() - t0) / (steps * b)
    net.eval()
    with torch.no_grad(), autocast(device, amp):
        if not slow:
            net(x)
            sync_device(device)
        t0 = time.perf_counter()
        net(x)
        sync_device(device)
    eval_s = time.perf_counter() - t0
    return {"train_s_per_image": train_s, "eval_s_per_image": eval_s / b}


def calibrate(specs: Sequence[Any], config: TrainConfig, device: torch.device, *, threads: int,
              num_classes: int = 10, progress: Callable[[str], None] | None = None) -> dict[str, dict[str, float]]:
    """{name: seconds per image} for each spec, timed once per machine and settings, then read from the cache."""
    cached = _load()
    out: dict[str, dict[str, float]] = {}
    fresh: dict[str, Any] = {}
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(threads)
        todo = list(specs)
        for i, spec_or_name in enumerate(todo, 1):
            spec = as_spec(spec_or_name, num_classes)
            key = calibration_key(spec.name, config, device, threads)
            if key in cached:
                out[spec.name] = cached[key]
                continue
            if progress is not None:
                progress(f"calibrating {i}/{len(todo)}: {spec.name} on {device.type} "
                         f"(batch {config.batch_size}, {threads} thread(s))")
            out[spec.name] = fresh[key] = time_network(spec, config, device, num_classes=num_classes)
    finally:
        torch.set_num_threads(before)
        if fresh:
            _save(fresh)
    return out
