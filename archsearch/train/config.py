"""What decides a training run: `TrainConfig`, the papers' recipes (presets), the learning-rate schedule.

Torch-free: a study validates its training settings without loading torch.
"""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError, field_validator, model_validator

from archsearch.errors import ConfigError, bound_reason

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
RUNTIME_KEYS = frozenset({"threads", "compile", "eval_batch_size", "latency", "branch_strategy", "model_parallel"})
# Options added after studies were first stored: at these values they change nothing, so a study's
# training fingerprint leaves them out and studies created before the option existed still resume.
FINGERPRINT_NEUTRAL: dict[str, Any] = {"precise_bn": 0}


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
    # NHWC memory layout. null: on CUDA only (NCHW on CPU, where some oneDNN NHWC kernels crash); auto: on CPU
    # a child-process probe picks channels_last only where it is safe and measured faster (cached).
    channels_last: bool | Literal["auto"] | None = None
    # torch.compile the training step. auto: on CPU in fp32 for trials long enough to pay back the compile
    # (archsearch.train.compiling); a failed compile trains eagerly, with the reason recorded.
    compile: bool | Literal["auto"] = "auto"
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
    # Model parallelism (Multi-ResNet Fig. 4): a unit's k functions / K branches / warp terms round robin on these
    # devices, combined on the first (archsearch.nn.parallel); same outputs as one device. null: one device.
    model_parallel: list[Annotated[str, StringConstraints(pattern=r"^(cpu|cuda|mps|xpu)(:\d+)?$")]] | None = Field(
        None, min_length=1)

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
        reason = bound_reason(err) or err["msg"]
        raise ConfigError(f"train config: {where}: {reason} (got {err.get('input')!r})") from None


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
