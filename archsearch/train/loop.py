"""One trial: fit a network on a dataset, report after every epoch, checkpoint, resume exactly.

A plain Python function (no Ray, no Optuna): the caller passes `report(epoch, metrics)` and decides
what a `TrainingFailure` means. All randomness (init, data order, augmentation, dropout) comes from
seeded generators whose states are checkpointed, so a resumed run replays the uninterrupted one
bit for bit on CPU.

`train` sets up a `_Run` (`_prepare`), resumes it from a checkpoint (`_resume`), runs its epochs (`_run_epoch`:
`_train_steps`, then `_validate`), checkpoints and reports after each, and returns `_result`.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from tqdm import tqdm

from archsearch.arch.spec import as_spec
from archsearch.errors import ConfigError
from archsearch.nn.branches import strategies_used
from archsearch.nn.build import build
from archsearch.nn.parallel import place
from archsearch.train.augment import Normalizer, crop_flip, plan_epoch
from archsearch.train.checkpoint import (
    CHECKPOINT,
    check_resume,
    checkpoint_state,
    load_checkpoint,
    restore,
    save_checkpoint,
)
from archsearch.train.compiling import compile_module, compile_record, narrow_strided_pointwise, resolve_compile
from archsearch.train.compiling import warm_up as warm_up_compiled
from archsearch.train.config import TrainConfig, lr_factor, make_config
from archsearch.train.data import ImageData, load_dataset, split_indices
from archsearch.train.evaluate import evaluate, latency_of, precise_bn_images, recalibrate_bn
from archsearch.train.layout import resolve_layout
from archsearch.train.precision import autocast, precision_name, resolve_device, resolve_precision, sync_device


class TrainingFailure(RuntimeError):
    """A trial that cannot go on; `reason` is a short tag for trial records."""

    reason = "failure"


class NonFiniteLossError(TrainingFailure):
    """The training loss became NaN or infinite (diverged: learning rate too high, bad init...)."""

    reason = "non_finite_loss"


class TrialOutOfMemoryError(TrainingFailure):
    """The device ran out of memory for this network and batch size."""

    reason = "out_of_memory"


def train(
    spec_or_name: Any,
    config: TrainConfig | dict[str, Any] | None = None,
    *,
    data: ImageData | str | os.PathLike | None = None,
    report: Callable[[int, dict[str, Any]], None] | None = None,
    checkpoint_dir: str | os.PathLike | None = None,
    device: str | torch.device | None = None,
    evaluate_test: bool = False,
    progress: bool = False,
) -> dict[str, Any]:
    """Train an architecture (name, spec, dict or built `nn.Module`); return the final metrics.

    Validation error (percent) on the split carved from train is what searches optimise; the test
    split is evaluated only with `evaluate_test=True`. With `checkpoint_dir`, a checkpoint is written
    after every epoch and an existing one is resumed from.
    """
    config = make_config(config)
    device = resolve_device(config.model_parallel[0] if config.model_parallel else device)
    if not isinstance(data, ImageData):
        data = load_dataset(data if data is not None else config.dataset, progress=progress)
    threads = torch.get_num_threads()
    if config.threads:
        torch.set_num_threads(config.threads)
    oom = None
    try:
        return _fit(spec_or_name, config, data, report, checkpoint_dir, device, evaluate_test, progress)
    except torch.OutOfMemoryError as exc:
        oom = str(exc).splitlines()[0] if str(exc) else "out of memory"
    except RuntimeError as exc:
        if "can't allocate memory" not in str(exc):  # the CPU allocator's wording
            raise
        oom = str(exc).splitlines()[0]
    finally:
        torch.set_num_threads(threads)  # the process's setting is the caller's, not this trial's
    # Outside the except block the failed step's tensors are released before the caller sees this.
    if device.type == "cuda":
        torch.cuda.empty_cache()
    raise TrialOutOfMemoryError(f"{device}: {oom} (batch size {config.batch_size})")


@dataclass
class _Run:
    """One training run's working state: the network, its data on the device, the optimiser, the history."""

    name: str
    net: nn.Module
    model: nn.Module  # `net`, or its compiled wrapper: what the training steps call
    device: torch.device
    amp: torch.dtype | None
    channels_last: bool
    layout_reason: str
    train_x: Tensor
    train_y: Tensor
    val_x: Tensor
    val_y: Tensor
    normalize: Normalizer
    steps_per_epoch: int
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    criterion: nn.Module
    data_gen: torch.Generator  # data order and augmentation
    history: list[dict[str, Any]] = field(default_factory=list)
    start_epoch: int = 0
    compiled: bool = False
    compile_reason: str = ""
    compile_seconds: float | None = None

    @property
    def precision(self) -> str:
        return precision_name(self.amp)


@dataclass
class _EpochTotals:
    """What one epoch's training steps add up to (the sums stay on the device until the epoch ends)."""

    loss_sum: Tensor
    wrong: Tensor
    data_s: float
    step_s: float
    lr: float


def _fit(
    spec_or_name: Any,
    config: TrainConfig,
    data: ImageData,
    report: Callable[[int, dict[str, Any]], None] | None,
    checkpoint_dir: str | os.PathLike | None,
    device: torch.device,
    evaluate_test: bool,
    progress: bool,
) -> dict[str, Any]:
    run = _prepare(spec_or_name, config, data, device)
    ckpt_path = Path(checkpoint_dir) / CHECKPOINT if checkpoint_dir is not None else None
    if ckpt_path is not None and ckpt_path.exists():
        _resume(run, ckpt_path, config, data.name)
    run.model.train()
    _compile(run, config)
    for epoch in range(run.start_epoch + 1, config.epochs + 1):
        metrics = _run_epoch(run, config, epoch, progress)
        if ckpt_path is not None:
            save_checkpoint(ckpt_path, checkpoint_state(
                name=run.name, data=data.name, epoch=epoch, config=config, net=run.net, optimizer=run.optimizer,
                scaler=run.scaler, data_gen=run.data_gen, device=device, history=run.history))
        if report is not None:
            report(epoch, dict(metrics))
    return _result(run, config, data, evaluate_test, by_name=not isinstance(spec_or_name, nn.Module))


def _build(spec_or_name: Any, num_classes: int, strategy: str) -> tuple[nn.Module, str]:
    if isinstance(spec_or_name, nn.Module):
        return spec_or_name, type(spec_or_name).__name__
    spec = as_spec(spec_or_name, num_classes)
    return build(spec, num_classes=num_classes, strategy=strategy), spec.name


def _prepare(spec_or_name: Any, config: TrainConfig, data: ImageData, device: torch.device) -> _Run:
    """Build the network (seeded), carve the split, move it to the device, set up the optimiser."""
    torch.manual_seed(config.seed)  # the builder's He init draws from the global generator
    net, name = _build(spec_or_name, data.num_classes, config.branch_strategy)
    amp, _ = resolve_precision(config, device)
    channels_last, layout_reason = resolve_layout(
        config.channels_last, device, None if isinstance(spec_or_name, nn.Module) else name,
        tuple(data.train_x.shape[1:]), config.batch_size, data.num_classes)
    net = net.to(device, memory_format=torch.channels_last if channels_last else torch.preserve_format)
    if config.model_parallel:
        place(net, config.model_parallel)

    train_idx, val_idx = split_indices(len(data.train_x), config.val_size, seed=config.split_seed,
                                       subset=config.subset)
    train_x, train_y = data.train_x[train_idx].to(device), data.train_y[train_idx].to(device)
    val_x, val_y = data.train_x[val_idx].to(device), data.train_y[val_idx].to(device)
    if len(train_x) < config.batch_size:
        raise ConfigError(f"{len(train_x)} training images are fewer than batch_size={config.batch_size}")
    normalize = Normalizer(data.mean, data.std, device, channels_last)
    steps_per_epoch = len(train_x) // config.batch_size

    optimizer = torch.optim.SGD(net.parameters(), lr=config.lr, momentum=config.momentum,
                                nesterov=config.nesterov and config.momentum > 0,
                                weight_decay=config.weight_decay)
    scaler = torch.amp.GradScaler(device.type, enabled=amp == torch.float16)
    criterion = nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)
    data_gen = torch.Generator().manual_seed(config.seed)
    return _Run(name, net, net, device, amp, channels_last, layout_reason, train_x, train_y, val_x, val_y, normalize,
                steps_per_epoch, optimizer, scaler, criterion, data_gen)


def _resume(run: _Run, ckpt_path: Path, config: TrainConfig, data_name: str) -> None:
    """Continue from the checkpoint: weights, optimiser, generators and history as they were after its epoch."""
    ckpt = load_checkpoint(ckpt_path)
    check_resume(ckpt, config, run.name, data_name, ckpt_path)
    run.history, run.start_epoch = restore(ckpt, net=run.net, optimizer=run.optimizer, scaler=run.scaler,
                                           data_gen=run.data_gen, device=run.device)


def _compile(run: _Run, config: TrainConfig) -> None:
    """Compile the step where `compile` says so (`archsearch.train.compiling`), falling back to eager on error."""
    steps = (config.epochs - run.start_epoch) * run.steps_per_epoch
    try:
        family = as_spec(run.name, None).family
    except Exception:  # noqa: BLE001 - a module passed in has no family
        family = None
    narrow = narrow_strided_pointwise(run.net) if run.device.type == "cpu" else None
    run.compiled, run.compile_reason = resolve_compile(config.compile, run.device, run.amp, steps, family, narrow)
    if not run.compiled:
        return
    model = compile_module(run.net)
    x = run.normalize(run.train_x[: config.batch_size])
    y = run.train_y[: config.batch_size]
    ok, run.compile_seconds, error = warm_up_compiled(run.net, model, lambda m: run.criterion(m(x), y))
    if ok:
        run.model = model
    else:
        run.compiled, run.compile_reason = False, f"compile failed, eager: {error}"


def _run_epoch(run: _Run, config: TrainConfig, epoch: int, progress: bool) -> dict[str, Any]:
    """Train one epoch, validate, and append its metrics (what `report` receives) to the history."""
    t_epoch = time.perf_counter()
    bar = _progress_bar(progress, run.steps_per_epoch, epoch, config.epochs)
    totals = _train_steps(run, config, epoch, bar)
    sync_device(run.device)
    fit_s = time.perf_counter() - t_epoch
    seen = run.steps_per_epoch * config.batch_size
    val_loss, val_error = _validate(run, config, epoch)
    epoch_s = time.perf_counter() - t_epoch
    metrics = {
        "epoch": epoch,
        "train_loss": totals.loss_sum.item() / seen,
        "train_error": 100.0 * totals.wrong.item() / seen,
        "val_loss": val_loss,
        "val_error": val_error,
        "lr": totals.lr,
        "epoch_seconds": epoch_s,
        "fit_seconds": fit_s,
        "data_seconds": totals.data_s,
        "step_seconds": totals.step_s,
        "images_per_s": seen / fit_s,
        "precision": run.precision,
        "branch_strategies": strategies_used(run.net),
        "channels_last": run.channels_last,
        "channels_last_reason": run.layout_reason,
        "threads": torch.get_num_threads(),
        **compile_record(run.compiled, run.compile_reason, run.compile_seconds),
    }
    run.history.append(metrics)
    if bar is not None:
        bar.set_postfix(loss=f"{metrics['train_loss']:.3f}",
                        val_err="-" if val_error is None else f"{val_error:.2f}%")
        bar.close()
    return metrics


def _train_steps(run: _Run, config: TrainConfig, epoch: int, bar: Any) -> _EpochTotals:
    """One pass over the epoch's plan: augment each batch on the device, step, sum loss and errors."""
    device = run.device
    plan = plan_epoch(len(run.train_x), run.data_gen, augment=config.augment)
    order, dy, dx, flip = (t.to(device, non_blocking=True) for t in (plan.order, plan.dy, plan.dx, plan.flip))
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    wrong = torch.zeros((), dtype=torch.int64, device=device)
    data_s = step_s = 0.0
    check_now = device.type == "cpu"  # elsewhere check one step late, so the device never idles
    pending: tuple[Tensor, int] | None = None
    lr = config.lr
    for i, sl in enumerate(_batches(len(run.train_x), config.batch_size)):
        t0 = time.perf_counter()
        idx = order[sl]
        x = run.normalize(crop_flip(run.train_x, idx, dy[sl], dx[sl], flip[sl], padding=config.padding))
        y = run.train_y[idx]
        t1 = time.perf_counter()
        lr = config.lr * lr_factor(config, (epoch - 1) * run.steps_per_epoch + i, run.steps_per_epoch)
        for group in run.optimizer.param_groups:
            group["lr"] = lr
        with autocast(device, run.amp):
            out = run.model(x)
            loss = run.criterion(out, y)
        run.optimizer.zero_grad(set_to_none=True)
        run.scaler.scale(loss).backward()
        run.scaler.step(run.optimizer)
        run.scaler.update()
        t2 = time.perf_counter()
        data_s += t1 - t0
        step_s += t2 - t1
        loss = loss.detach()
        if check_now:
            _check_finite(loss, epoch, i + 1)
        else:
            if pending is not None:
                _check_finite(pending[0], epoch, pending[1])
            pending = (loss, i + 1)
        loss_sum += loss.double() * len(y)
        wrong += (out.detach().argmax(1) != y).sum()
        if bar is not None:
            bar.update(1)
    if pending is not None:
        _check_finite(pending[0], epoch, pending[1])
    return _EpochTotals(loss_sum, wrong, data_s, step_s, lr)


def _validate(run: _Run, config: TrainConfig, epoch: int) -> tuple[float | None, float | None]:
    """(loss, error) on the validation split, after precise BN when asked; (None, None) without one."""
    if config.precise_bn and len(run.val_x):
        sample = precise_bn_images(run.train_x, config.precise_bn, seed=config.seed, epoch=epoch,
                                   augment=config.augment, padding=config.padding)
        recalibrate_bn(run.net, sample, run.normalize, batch_size=config.batch_size, amp=run.amp)
    if not len(run.val_x):
        return None, None
    # eager: a compiled model would compile again for eval mode and the evaluation batch
    return evaluate(run.net, run.val_x, run.val_y, run.normalize, batch_size=config.eval_batch_size, amp=run.amp)


def _result(run: _Run, config: TrainConfig, data: ImageData, evaluate_test: bool, *, by_name: bool) -> dict[str, Any]:
    """The final metrics: last epoch, best validation error, timing, and test error / latency when asked."""
    history = run.history
    last = history[-1] if history else {}
    vals = [h["val_error"] for h in history if h.get("val_error") is not None]
    result: dict[str, Any] = {
        "name": run.name,
        "params": sum(p.numel() for p in run.net.parameters()),
        "epochs": len(history),
        "val_error": last.get("val_error"),
        "val_loss": last.get("val_loss"),
        "best_val_error": min(vals) if vals else None,
        "train_loss": last.get("train_loss"),
        "train_seconds": sum(h["epoch_seconds"] for h in history),
        "images_per_s": last.get("images_per_s"),
        # the training loop's speed alone (steps, no validation) and a whole epoch's, averaged over this run's
        # epochs, so a run compares with any other loop (`archsearch train --json`)
        "train_images_per_s": _mean(h["images_per_s"] for h in history[run.start_epoch:] or history),
        "epoch_seconds": _mean(h["epoch_seconds"] for h in history[run.start_epoch:] or history),
        "train_images": len(run.train_x),
        "val_images": len(run.val_x),
        "device": str(run.device),
        "precision": run.precision,
        "channels_last": run.channels_last,
        "channels_last_reason": run.layout_reason,
        "threads": torch.get_num_threads(),
        **compile_record(run.compiled, run.compile_reason, run.compile_seconds),
        "resumed_from_epoch": run.start_epoch,
        "history": history,
    }
    if evaluate_test:
        if not len(data.test_y):
            raise ConfigError(f"{data.source}: has no test split to evaluate")
        test_x, test_y = data.test_x.to(run.device), data.test_y.to(run.device)
        result["test_loss"], result["test_error"] = evaluate(
            run.net, test_x, test_y, run.normalize, batch_size=config.eval_batch_size, amp=run.amp
        )
    if config.latency:
        result.update(latency_of(run.name, run.net, run.device, tuple(data.train_x.shape[1:]), run.amp,
                                 run.channels_last, by_name=by_name))
    return result


def _mean(values: Any) -> float | None:
    values = [float(v) for v in values if v is not None]
    return sum(values) / len(values) if values else None


def _batches(n: int, batch_size: int) -> Iterator[slice]:
    for i in range(n // batch_size):  # drop the ragged tail: one shape for every step
        yield slice(i * batch_size, (i + 1) * batch_size)


def _check_finite(loss: Tensor, epoch: int, step: int) -> None:
    if not torch.isfinite(loss):
        raise NonFiniteLossError(f"loss is {loss.item()} at epoch {epoch}, step {step}")


def _progress_bar(enabled: bool, total: int, epoch: int, epochs: int) -> Any:
    if not enabled:
        return None
    return tqdm(total=total, desc=f"epoch {epoch}/{epochs}", unit="step", leave=True, dynamic_ncols=True)
