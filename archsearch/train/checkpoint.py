"""Checkpoints: written atomically after every epoch, checked against the run that resumes them."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from archsearch.errors import ArchsearchError, ConfigError
from archsearch.train.config import RUNTIME_KEYS, TrainConfig
from archsearch.train.safe_load import safe_load

CHECKPOINT = "checkpoint.pt"
CHECKPOINT_VERSION = 1


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
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
    ckpt = safe_load(p, "checkpoint file")
    if not isinstance(ckpt, dict) or "history" not in ckpt:
        raise ArchsearchError(f"{p}: not an archsearch checkpoint file (no training history in it)")
    return ckpt


def load_checkpoint_metrics(path: str | os.PathLike) -> list[dict[str, Any]]:
    """The per-epoch metrics recorded in a checkpoint (what `report` was given, epoch by epoch)."""
    return list(load_checkpoint(path)["history"])


def check_resume(ckpt: dict[str, Any], config: TrainConfig, name: str, data: str, where: Path) -> None:
    """Refuse a checkpoint of another architecture, dataset, version or config (run-time keys may differ)."""
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


def checkpoint_state(
    *, name: str, data: str, epoch: int, config: TrainConfig, net: nn.Module, optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler, data_gen: torch.Generator, device: torch.device, history: list[dict[str, Any]],
) -> dict[str, Any]:
    """Everything an exact resume needs after `epoch`: weights, optimiser, every random generator's state."""
    return {
        "version": CHECKPOINT_VERSION,
        "name": name,
        "data": data,
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
    }


def restore(
    ckpt: dict[str, Any], *, net: nn.Module, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler,
    data_gen: torch.Generator, device: torch.device,
) -> tuple[list[dict[str, Any]], int]:
    """Load `ckpt` into the run's state in place; returns (the epochs' metrics so far, the last epoch done)."""
    net.load_state_dict(ckpt["model"])
    optimizer.load_state_dict(ckpt["optimizer"])
    if ckpt.get("scaler"):
        scaler.load_state_dict(ckpt["scaler"])
    torch.set_rng_state(ckpt["rng"]["torch"])
    if device.type == "cuda" and ckpt["rng"].get("cuda") is not None:
        torch.cuda.set_rng_state_all(ckpt["rng"]["cuda"])
    data_gen.set_state(ckpt["rng"]["data"])
    return list(ckpt["history"]), int(ckpt["epoch"])
