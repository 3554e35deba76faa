"""Measuring a network: validation error, precise-BN recalibration, inference latency."""

from __future__ import annotations

import statistics
import time

import torch
from torch import Tensor, nn

from archsearch.nn.norm import batch_norm_layers, batch_statistics_only
from archsearch.train.augment import Normalizer, crop_flip, plan_epoch
from archsearch.train.precision import autocast, resolve_device, sync_device


@torch.inference_mode()
def evaluate(
    model: nn.Module,
    images: Tensor,
    labels: Tensor,
    normalize: Normalizer,
    *,
    batch_size: int = 500,
    amp: torch.dtype | None = None,
) -> tuple[float, float]:
    """(mean cross-entropy, error in percent) of `model` on uint8 images, no augmentation."""
    was_training = model.training
    model.eval()
    loss = torch.zeros((), dtype=torch.float64, device=images.device)
    wrong = torch.zeros((), dtype=torch.int64, device=images.device)
    for i in range(0, len(images), batch_size):
        x = normalize(images[i : i + batch_size])
        y = labels[i : i + batch_size]
        with autocast(images.device, amp):
            out = model(x)
        loss += nn.functional.cross_entropy(out.float(), y, reduction="sum").double()
        wrong += (out.argmax(1) != y).sum()
    model.train(was_training)
    n = max(1, len(images))
    return loss.item() / n, 100.0 * wrong.item() / n


def recalibrate_bn(
    model: nn.Module,
    images: Tensor,
    normalize: Normalizer,
    *,
    batch_size: int,
    amp: torch.dtype | None = None,
) -> int:
    """Set every BatchNorm's running statistics to the average of its batch statistics over `images`.

    pycls' "precise BN": running averages trail the weights by ~1/momentum steps, which early in a
    schedule (high learning rate, few steps) puts evaluation on stale statistics and makes a rung's
    error noisy. Only the BN layers run in training mode (dropout stays off, so no random numbers
    are drawn), in whole batches of `batch_size` as in training; nothing else changes. Returns the
    number of layers recalibrated.
    """
    bns = [bn for bn in batch_norm_layers(model) if bn.track_running_stats]
    usable = len(images) // batch_size * batch_size or len(images)
    if not bns or usable < 2:
        return 0
    momenta = [bn.momentum for bn in bns]
    with batch_statistics_only(model):
        for bn in bns:
            bn.reset_running_stats()
            bn.momentum = None  # cumulative average over the batches below
        try:
            with torch.no_grad(), autocast(images.device, amp):
                for i in range(0, usable, min(batch_size, usable)):
                    model(normalize(images[i : i + batch_size]))
        finally:
            for bn, momentum in zip(bns, momenta, strict=True):
                bn.momentum = momentum
    return len(bns)


def precise_bn_images(train_x: Tensor, count: int, *, seed: int, epoch: int, augment: bool = True,
                      padding: str = "zero") -> Tensor:
    """The uint8 images precise BN measures: a random sample of the training set, augmented as in training.

    BN statistics must describe what the network trains on. On a trained resnet-50 (4000 CIFAR-10
    images, 16 epochs, 2000 validation images) the first 1024 images of the class-ordered training
    set gave 54.8 % validation error, 1024 random un-augmented ones 46.6 %, 1024 random augmented
    ones 42.2 %, and the running averages of training 42.1 %. The sample's own generator, seeded by
    (seed, epoch), leaves the training's random stream untouched and replays exactly on resume.
    """
    generator = torch.Generator().manual_seed(1_000_003 * seed + epoch)
    plan = plan_epoch(len(train_x), generator, augment=augment)
    n = min(count, len(train_x))
    index, dy, dx, flip = (t[:n].to(train_x.device) for t in (plan.order, plan.dy, plan.dx, plan.flip))
    return crop_flip(train_x, index, dy, dx, flip, padding=padding)


@torch.inference_mode()
def measure_latency(
    model: nn.Module,
    device: str | torch.device | None = None,
    *,
    batch_sizes: tuple[int, ...] = (1, 128),
    input_shape: tuple[int, int, int] = (3, 32, 32),
    amp: torch.dtype | None = None,
    channels_last: bool = False,
    budget_s: float = 0.5,
) -> dict[str, float]:
    """Median inference latency (ms) per batch size on `device`: `latency_b1_ms`, `latency_b128_ms`.

    Eval mode, no autograd, after two warm-up calls; repeats until `budget_s` per batch size
    (at least 5, at most 50 timings): every finished trial pays it, so it stays well under a second
    for small models while the median of >= 5 timings is stable to a few per cent.
    """
    device = resolve_device(device)
    was_training = model.training
    model.eval()
    out: dict[str, float] = {}
    for b in batch_sizes:
        x = torch.randn(b, *input_shape, device=device)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        times: list[float] = []
        with autocast(device, amp):
            for _ in range(2):
                model(x)
            sync_device(device)
            start = time.perf_counter()
            while len(times) < 5 or (len(times) < 50 and time.perf_counter() - start < budget_s):
                t0 = time.perf_counter()
                model(x)
                sync_device(device)
                times.append(time.perf_counter() - t0)
        out[f"latency_b{b}_ms"] = 1000.0 * statistics.median(times)
    model.train(was_training)
    return out


_LATENCY_SEEN: dict[tuple, dict[str, float]] = {}


def latency_of(name: str, net: nn.Module, device: torch.device, input_shape: tuple[int, ...],
               amp: torch.dtype | None, channels_last: bool, *, by_name: bool) -> dict[str, float]:
    """Latency of a canonical architecture, measured once per process and setting.

    Seeds of one architecture share their latency (it depends on the network, not its weights), and
    a Ray actor trains trial after trial, so re-measuring would cost every finished trial ~0.5 s of
    timing loops for a figure that differs only by timing noise. A built module passed in has no
    canonical name and is always measured.
    """
    key = (name, str(device), amp, channels_last, torch.get_num_threads(), input_shape)
    if by_name and key in _LATENCY_SEEN:
        return dict(_LATENCY_SEEN[key])
    out = measure_latency(net, device, input_shape=input_shape, amp=amp, channels_last=channels_last)
    if by_name:
        _LATENCY_SEEN[key] = dict(out)
    return out
