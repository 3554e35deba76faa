"""One trial: fit a network on a dataset, report after every epoch, checkpoint, resume exactly.

A plain Python function (no Ray, no Optuna): the caller passes `report(epoch, metrics)` and decides
what a `TrainingFailure` means. All randomness (init, data order, augmentation, dropout) comes from
seeded generators whose states are checkpointed, so a resumed run replays the uninterrupted one
bit for bit on CPU.
"""

from __future__ import annotations

import contextlib
import math
import os
import statistics
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from torch import Tensor, nn

from archsearch.errors import ArchsearchError, ConfigError
from archsearch.nn.branches import strategies_used
from archsearch.nn.norm import batch_norm_layers, batch_statistics_only
from archsearch.train.data import ImageData, Normalizer, crop_flip, load_dataset, plan_epoch, split_indices

CHECKPOINT = "checkpoint.pt"
CHECKPOINT_VERSION = 1

# The papers' recipes (docs: architectures.md, "Training recipes"). Milestones are fractions of the
# epoch count, so a reduced-fidelity run (fewer epochs) keeps the schedule's shape.
PRESETS: dict[str, dict[str, Any]] = {
    # He et al. steps (÷10 at 32k and 48k of 64k iterations), restated by Multi-ResNet for 200 epochs.
    "multiresnet": dict(epochs=200, batch_size=128, lr=0.1, momentum=0.9, nesterov=False,
                        weight_decay=1e-4, schedule="step", milestones=[0.5, 0.75], gamma=0.1),
    # Zagoruyko & Komodakis: ×0.2 at 60/120/160 of 200, Nesterov, reflect-padded crops.
    "wrn": dict(epochs=200, batch_size=128, lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-4,
                schedule="step", milestones=[0.3, 0.6, 0.8], gamma=0.2, padding="reflect"),
    # DMRNet / DFN: ÷10 at 1/2, 3/4, 7/8 of 400 epochs, batch 64, Nesterov.
    "dmrnet": dict(epochs=400, batch_size=64, lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-4,
                   schedule="step", milestones=[0.5, 0.75, 0.875], gamma=0.1),
    # WarpNet: 80k iterations at batch 128 ≈ 204 epochs, ×0.1 at epochs 60/120/160.
    "warpnet": dict(epochs=204, batch_size=128, lr=0.1, momentum=0.9, nesterov=False,
                    weight_decay=5e-4, schedule="step", milestones=[60 / 204, 120 / 204, 160 / 204],
                    gamma=0.1),
}
PRESET_DATASET_EPOCHS = {("wrn", "svhn"): 160, ("dmrnet", "svhn"): 40}

# Config keys that do not change what is computed: they may differ between a run and its resume, and
# a study's training fingerprint and an export's training recipe leave them out (with the seed).
RUNTIME_KEYS = frozenset({"threads", "compile", "eval_batch_size", "latency", "branch_strategy"})
# Options added after studies were first stored: at these values they change nothing, so a study's
# training fingerprint leaves them out and studies created before the option existed still resume.
FINGERPRINT_NEUTRAL: dict[str, Any] = {"precise_bn": 0}


class TrainingFailure(RuntimeError):
    """A trial that cannot go on; `reason` is a short tag for trial records."""

    reason = "failure"


class NonFiniteLossError(TrainingFailure):
    """The training loss became NaN or infinite (diverged: learning rate too high, bad init...)."""

    reason = "non_finite_loss"


class TrialOutOfMemoryError(TrainingFailure):
    """The device ran out of memory for this network and batch size."""

    reason = "out_of_memory"


class TrainConfig(BaseModel):
    """Everything that decides a training run; `preset` fills the fields not given explicitly."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    preset: Literal["multiresnet", "wrn", "dmrnet", "warpnet"] | None = None
    dataset: str = "cifar10"
    epochs: int = Field(200, ge=1)
    batch_size: int = Field(128, ge=2)
    lr: float = Field(0.1, gt=0)
    momentum: float = Field(0.9, ge=0, lt=1)
    nesterov: bool = False
    weight_decay: float = Field(1e-4, ge=0)
    schedule: Literal["step", "cosine"] = "step"
    milestones: list[float] = Field(default_factory=lambda: [0.5, 0.75])  # fractions of `epochs`
    gamma: float = Field(0.1, gt=0, le=1)
    warmup_epochs: float = Field(0.0, ge=0)
    label_smoothing: float = Field(0.0, ge=0, lt=1)
    augment: bool = True
    padding: Literal["zero", "reflect"] = "zero"
    subset: int | None = Field(None, ge=1)  # training images used: the fidelity knob
    val_size: int = Field(5000, ge=0)
    split_seed: int = 0  # fixes the validation split and subset across every trial of a study
    seed: int = 0
    amp: Literal["auto", "bf16", "fp16", "off"] = "auto"
    channels_last: bool | None = None
    compile: bool = False
    threads: int | None = Field(None, ge=1)  # CPU threads for this run (restored afterwards)
    eval_batch_size: int = Field(500, ge=1)
    # Before each validation, recompute BN statistics on this many training images, a fresh random and
    # augmented sample per epoch (pycls' precise BN; 0: off): steadier errors at low rungs, where
    # running averages trail the weights.
    precise_bn: int = Field(0, ge=0)
    latency: bool = True  # measure batch-1 / batch-128 inference latency after training
    # How k parallel functions execute (archsearch.nn.branches): `auto` picks the faster per shape from a
    # cached measurement; pin `loop` or `grouped` to reproduce a run bit for bit on another machine.
    branch_strategy: Literal["auto", "loop", "grouped"] = "auto"

    @model_validator(mode="before")
    @classmethod
    def _apply_preset(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("preset") is not None:
            preset = data["preset"]
            if preset not in PRESETS:
                return data  # the Literal check names the choices
            merged = dict(PRESETS[preset])
            extra = PRESET_DATASET_EPOCHS.get((preset, str(data.get("dataset", "cifar10")).lower()))
            if extra:
                merged["epochs"] = extra
            merged.update({k: v for k, v in data.items() if v is not None or k == "preset"})
            return merged
        return data

    @field_validator("amp", mode="before")
    @classmethod
    def _yaml_off(cls, v: Any) -> Any:
        return "off" if v is False else v  # YAML 1.1 reads a bare `off` as false

    @field_validator("milestones")
    @classmethod
    def _check_milestones(cls, v: list[float]) -> list[float]:
        if any(not 0 < m <= 1 for m in v) or v != sorted(v):
            raise ValueError("milestones are increasing fractions of the epochs, each in (0, 1]")
        return v


def make_config(config: TrainConfig | dict[str, Any] | None = None, **overrides: Any) -> TrainConfig:
    """A `TrainConfig` from a config, a dict or nothing, with overrides; bad keys → `ConfigError`."""
    if isinstance(config, TrainConfig):
        data = config.model_dump(exclude_unset=True)
    else:
        data = dict(config or {})
    data.update({k: v for k, v in overrides.items() if v is not None})
    try:
        return TrainConfig.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"]) or "config"
        raise ConfigError(f"train config: {where}: {err['msg']}") from None


def lr_factor(config: TrainConfig, step: int, steps_per_epoch: int) -> float:
    """Learning-rate multiplier at a global step: linear warmup, then step decay or cosine."""
    warm = round(config.warmup_epochs * steps_per_epoch)
    if step < warm:
        return (step + 1) / warm
    if config.schedule == "cosine":
        total = config.epochs * steps_per_epoch
        return 0.5 * (1 + math.cos(math.pi * (step - warm) / max(1, total - warm)))
    epoch = step // steps_per_epoch
    drops = sum(epoch >= max(1, int(m * config.epochs + 0.5)) for m in config.milestones)
    return config.gamma**drops


# ----------------------------------------------------------------------------- device settings


def resolve_device(device: str | torch.device | None) -> torch.device:
    """The given device, else CUDA when present, else CPU; an unusable one is a `ConfigError`."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise ConfigError(f"device {str(device)!r}: not a torch device (cpu, cuda, cuda:1, ...)") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {str(device)!r}: CUDA is not available here")
    return dev


AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}  # `amp` values that autocast; "off" is fp32


def cpu_has_native_bf16() -> bool:
    """True on CPUs with AMX-bf16 tiles, where oneDNN's bf16 convolutions beat fp32 (elsewhere bf16 is
    emulated and slower, so `amp="auto"` stays fp32 there)."""
    probe = getattr(torch.cpu, "_is_amx_tile_supported", None)
    try:
        return bool(probe and probe() and torch.backends.mkldnn.is_available()
                    and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def _amp_dtype(config: TrainConfig, device: torch.device) -> torch.dtype | None:
    """`auto`: bf16 on CUDA with bf16 (else fp16), and on AMX CPUs — benchmarks/precision.py found no
    significant change in validation error over paired seeds (three families) while trials ran ~2x faster."""
    amp = config.amp
    if amp == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.bfloat16 if device.type == "cpu" and cpu_has_native_bf16() else None
    return AMP_DTYPES.get(amp)


def precision_name(amp: torch.dtype | None) -> str:
    """fp32 | bf16 | fp16: the label a result and a trial record for an autocast dtype."""
    return next((name for name, dtype in AMP_DTYPES.items() if dtype == amp), "fp32")


def resolve_precision(config: TrainConfig, device: torch.device) -> tuple[torch.dtype | None, bool]:
    """(autocast dtype or None, channels_last) that `train` uses for `config` on `device`."""
    # NHWC is cuDNN's fast layout. On CPU it is opt-in: oneDNN's AVX2 backward of a strided 1x1 convolution
    # with fewer than ~8 input channels in channels_last corrupts the heap or hangs (PyTorch 2.14.1, AMD EPYC),
    # and narrow fitted networks at small budgets have exactly these projection shortcuts.
    channels_last = config.channels_last if config.channels_last is not None else device.type == "cuda"
    return _amp_dtype(config, device), channels_last


def _autocast(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# ----------------------------------------------------------------------------- evaluation, latency


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
        with _autocast(images.device, amp):
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
            with torch.no_grad(), _autocast(images.device, amp):
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
        with _autocast(device, amp):
            for _ in range(2):
                model(x)
            _sync(device)
            start = time.perf_counter()
            while len(times) < 5 or (len(times) < 50 and time.perf_counter() - start < budget_s):
                t0 = time.perf_counter()
                model(x)
                _sync(device)
                times.append(time.perf_counter() - t0)
        out[f"latency_b{b}_ms"] = 1000.0 * statistics.median(times)
    model.train(was_training)
    return out


# ----------------------------------------------------------------------------- checkpoints


def _save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Write atomically: a crash leaves the previous checkpoint, never a torn one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        torch.save(state, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _checkpoint_path(path: str | os.PathLike) -> Path:
    p = Path(path)
    return p / CHECKPOINT if p.is_dir() else p


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """A checkpoint file (or a directory holding `checkpoint.pt`), loaded on CPU."""
    p = _checkpoint_path(path)
    if not p.exists():
        raise ArchsearchError(f"{p}: no checkpoint")
    return torch.load(p, map_location="cpu", weights_only=True)


def load_checkpoint_metrics(path: str | os.PathLike) -> list[dict[str, Any]]:
    """The per-epoch metrics recorded in a checkpoint (what `report` was given, epoch by epoch)."""
    return list(load_checkpoint(path)["history"])


def _check_resume(ckpt: dict[str, Any], config: TrainConfig, name: str, data: str, where: Path) -> None:
    if ckpt.get("version") != CHECKPOINT_VERSION:
        raise ConfigError(f"{where}: checkpoint version {ckpt.get('version')} is not {CHECKPOINT_VERSION}")
    if ckpt["name"] != name:
        raise ConfigError(f"{where}: checkpoint is for {ckpt['name']}, not {name}")
    if ckpt["data"] != data:
        raise ConfigError(f"{where}: checkpoint was trained on {ckpt['data']}, not {data}")
    now = config.model_dump(mode="json")
    for key, old in ckpt["config"].items():
        if key not in RUNTIME_KEYS and now.get(key) != old:
            raise ConfigError(f"{where}: checkpoint was trained with {key}={old!r}, not {now.get(key)!r}")


# ----------------------------------------------------------------------------- training


def _batches(n: int, batch_size: int) -> Iterator[slice]:
    for i in range(n // batch_size):  # drop the ragged tail: one shape for every step
        yield slice(i * batch_size, (i + 1) * batch_size)


def _check_finite(loss: Tensor, epoch: int, step: int) -> None:
    if not torch.isfinite(loss):
        raise NonFiniteLossError(f"loss is {loss.item()} at epoch {epoch}, step {step}")


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
    device = resolve_device(device)
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


def _build(spec_or_name: Any, num_classes: int, strategy: str) -> tuple[nn.Module, str]:
    if isinstance(spec_or_name, nn.Module):
        return spec_or_name, type(spec_or_name).__name__
    from archsearch.arch.spec import as_spec
    from archsearch.nn.build import build

    spec = as_spec(spec_or_name, num_classes)
    return build(spec, num_classes=num_classes, strategy=strategy), spec.name


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
    torch.manual_seed(config.seed)  # the builder's He init draws from the global generator
    net, name = _build(spec_or_name, data.num_classes, config.branch_strategy)
    amp, channels_last = resolve_precision(config, device)
    precision = precision_name(amp)
    net = net.to(device, memory_format=torch.channels_last if channels_last else torch.preserve_format)
    model = torch.compile(net) if config.compile else net

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
    history: list[dict[str, Any]] = []
    start_epoch = 0

    ckpt_path = Path(checkpoint_dir) / CHECKPOINT if checkpoint_dir is not None else None
    if ckpt_path is not None and ckpt_path.exists():
        ckpt = load_checkpoint(ckpt_path)
        _check_resume(ckpt, config, name, data.name, ckpt_path)
        net.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        if ckpt.get("scaler"):
            scaler.load_state_dict(ckpt["scaler"])
        torch.set_rng_state(ckpt["rng"]["torch"])
        if device.type == "cuda" and ckpt["rng"].get("cuda") is not None:
            torch.cuda.set_rng_state_all(ckpt["rng"]["cuda"])
        data_gen.set_state(ckpt["rng"]["data"])
        history = list(ckpt["history"])
        start_epoch = int(ckpt["epoch"])

    model.train()
    check_now = device.type == "cpu"  # elsewhere check one step late, so the device never idles
    for epoch in range(start_epoch + 1, config.epochs + 1):
        t_epoch = time.perf_counter()
        plan = plan_epoch(len(train_x), data_gen, augment=config.augment)
        order, dy, dx, flip = (t.to(device, non_blocking=True) for t in
                               (plan.order, plan.dy, plan.dx, plan.flip))
        loss_sum = torch.zeros((), dtype=torch.float64, device=device)
        wrong = torch.zeros((), dtype=torch.int64, device=device)
        data_s = step_s = 0.0
        pending: tuple[Tensor, int] | None = None
        lr = config.lr
        bar = _progress_bar(progress, steps_per_epoch, epoch, config.epochs)
        for i, sl in enumerate(_batches(len(train_x), config.batch_size)):
            t0 = time.perf_counter()
            idx = order[sl]
            x = normalize(crop_flip(train_x, idx, dy[sl], dx[sl], flip[sl], padding=config.padding))
            y = train_y[idx]
            t1 = time.perf_counter()
            lr = config.lr * lr_factor(config, (epoch - 1) * steps_per_epoch + i, steps_per_epoch)
            for group in optimizer.param_groups:
                group["lr"] = lr
            with _autocast(device, amp):
                out = model(x)
                loss = criterion(out, y)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
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
        _sync(device)
        fit_s = time.perf_counter() - t_epoch
        seen = steps_per_epoch * config.batch_size
        if config.precise_bn and len(val_x):
            sample = precise_bn_images(train_x, config.precise_bn, seed=config.seed, epoch=epoch,
                                       augment=config.augment, padding=config.padding)
            recalibrate_bn(net, sample, normalize, batch_size=config.batch_size, amp=amp)
        val_loss, val_error = (
            evaluate(model, val_x, val_y, normalize, batch_size=config.eval_batch_size, amp=amp)
            if len(val_x) else (None, None)
        )
        epoch_s = time.perf_counter() - t_epoch
        metrics = {
            "epoch": epoch,
            "train_loss": loss_sum.item() / seen,
            "train_error": 100.0 * wrong.item() / seen,
            "val_loss": val_loss,
            "val_error": val_error,
            "lr": lr,
            "epoch_seconds": epoch_s,
            "fit_seconds": fit_s,
            "data_seconds": data_s,
            "step_seconds": step_s,
            "images_per_s": seen / fit_s,
            "precision": precision,
            "branch_strategies": strategies_used(net),
        }
        history.append(metrics)
        if bar is not None:
            bar.set_postfix(loss=f"{metrics['train_loss']:.3f}",
                            val_err="-" if val_error is None else f"{val_error:.2f}%")
            bar.close()
        if ckpt_path is not None:
            _save_checkpoint(ckpt_path, {
                "version": CHECKPOINT_VERSION,
                "name": name,
                "data": data.name,
                "epoch": epoch,
                "config": config.model_dump(mode="json"),
                "model": net.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scaler": scaler.state_dict() if scaler.is_enabled() else None,
                "rng": {
                    "torch": torch.get_rng_state(),
                    "cuda": torch.cuda.get_rng_state_all() if device.type == "cuda" else None,
                    "data": data_gen.get_state(),
                },
                "history": history,
            })
        if report is not None:
            report(epoch, dict(metrics))

    last = history[-1] if history else {}
    vals = [h["val_error"] for h in history if h.get("val_error") is not None]
    result: dict[str, Any] = {
        "name": name,
        "params": sum(p.numel() for p in net.parameters()),
        "epochs": len(history),
        "val_error": last.get("val_error"),
        "val_loss": last.get("val_loss"),
        "best_val_error": min(vals) if vals else None,
        "train_loss": last.get("train_loss"),
        "train_seconds": sum(h["epoch_seconds"] for h in history),
        "images_per_s": last.get("images_per_s"),
        "train_images": len(train_x),
        "val_images": len(val_x),
        "device": str(device),
        "precision": precision,
        "channels_last": channels_last,
        "resumed_from_epoch": start_epoch,
        "history": history,
    }
    if evaluate_test:
        if not len(data.test_y):
            raise ConfigError(f"{data.source}: has no test split to evaluate")
        test_x, test_y = data.test_x.to(device), data.test_y.to(device)
        result["test_loss"], result["test_error"] = evaluate(
            model, test_x, test_y, normalize, batch_size=config.eval_batch_size, amp=amp
        )
    if config.latency:
        result.update(_latency_of(name, net, device, tuple(data.train_x.shape[1:]), amp, channels_last,
                                  by_name=not isinstance(spec_or_name, nn.Module)))
    return result


_LATENCY_SEEN: dict[tuple, dict[str, float]] = {}


def _latency_of(name: str, net: nn.Module, device: torch.device, input_shape: tuple[int, ...],
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


def _progress_bar(enabled: bool, total: int, epoch: int, epochs: int) -> Any:
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, desc=f"epoch {epoch}/{epochs}", unit="step", leave=True, dynamic_ncols=True)
