"""Trained weights in and out of exports: checkpoints read safely and fitted strictly.

A checkpoint is a raw state_dict or the trainer's dict holding it under "model"; wrappers' key
prefixes are dropped so archsearch's module tree is what the weights must fit.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from archsearch.errors import ArchsearchError
from archsearch.train.safe_load import safe_load

CHECKPOINT_FILE = "checkpoint.pt"  # what archsearch.train.checkpoint writes into a trial's directory

class ExportError(ArchsearchError):
    """An export that could not be written or did not survive its round-trip check."""


def _strip_prefixes(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Drop wrappers' key prefixes (torch.compile's `_orig_mod.`, DataParallel's `module.`)."""
    for prefix in ("_orig_mod.", "module."):
        if state and all(k.startswith(prefix) for k in state):
            state = {k[len(prefix):]: v for k, v in state.items()}
    return state


def load_weights(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(state_dict, checkpoint metadata) from a raw state_dict or a trainer checkpoint.

    A trainer checkpoint is a dict holding the state_dict under "model" (plus "config", "epoch",
    "history", ...); a directory means its `checkpoint.pt`. Loaded with `weights_only=True`.
    """
    p = Path(path)
    if p.is_dir():
        p = p / CHECKPOINT_FILE
    if not p.is_file():
        raise ExportError(f"{path}: no such checkpoint file")
    obj = safe_load(p, "weights/checkpoint file")
    meta: dict[str, Any] = {}
    if isinstance(obj, dict) and isinstance(obj.get("model"), dict):
        meta = {k: v for k, v in obj.items() if k in ("name", "epoch", "config", "history", "version")}
        obj = obj["model"]
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ExportError(f"{p}: neither a state_dict nor a checkpoint holding one under 'model'")
    return _strip_prefixes(dict(obj)), meta


def classes_in(state: dict[str, torch.Tensor]) -> int | None:
    """Output classes of a state_dict: rows of the head's Linear weight."""
    rows = [v.shape[0] for k, v in state.items() if k.startswith("head.") and k.endswith(".weight") and v.ndim == 2]
    return rows[-1] if rows else None


def fit_weights(model: nn.Module, state: dict[str, torch.Tensor], where: str) -> None:
    """Load strictly, with a one-line reason when the weights belong to another network."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [k for k in own if k in state and tuple(own[k].shape) != tuple(state[k].shape)]
    if missing or unexpected or shapes:
        first = (missing or unexpected or shapes)[0]
        raise ExportError(f"{where}: weights do not fit {model.spec.name}: {len(missing)} missing, "
                          f"{len(unexpected)} unexpected, {len(shapes)} of another shape (first: {first})")
    model.load_state_dict(state, strict=True)
