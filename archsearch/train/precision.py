"""Where and in what precision a run computes: the device, autocast dtype, memory format."""

from __future__ import annotations

import contextlib

import torch

from archsearch.errors import ConfigError
from archsearch.train.config import TrainConfig


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
    # `auto` is settled by archsearch.train.layout.resolve_layout (a probe on CPU); here it means CUDA only.
    channels_last = config.channels_last if isinstance(config.channels_last, bool) else device.type == "cuda"
    return _amp_dtype(config, device), channels_last


def autocast(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    """Autocast to `dtype` on `device`'s type, or nothing for fp32 (`None`)."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def sync_device(device: torch.device) -> None:
    """Wait for queued CUDA work, so a timing measures it (a no-op on CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
