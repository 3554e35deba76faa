"""Augmentation as batched index arithmetic on the device: epoch plans, padded crops and flips, normalisation."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch
from torch import Tensor

from archsearch.errors import ConfigError


@dataclass(frozen=True)
class EpochPlan:
    """One epoch's randomness, drawn up front: image order, crop offsets and flips (all on CPU)."""

    order: Tensor  # int64 [N]
    dy: Tensor  # int64 [N], crop offset in 0..2*pad
    dx: Tensor
    flip: Tensor  # bool [N]


def plan_epoch(n: int, generator: torch.Generator, *, pad: int = 4, augment: bool = True) -> EpochPlan:
    """Draw an epoch's order and augmentation from `generator` (CPU) so that runs replay exactly."""
    order = torch.randperm(n, generator=generator)
    if not augment:
        z = torch.full((n,), pad, dtype=torch.int64)
        return EpochPlan(order, z, z, torch.zeros(n, dtype=torch.bool))
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=generator)
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=generator)
    flip = torch.rand(n, generator=generator) < 0.5
    return EpochPlan(order, dy, dx, flip)


def _crop_index(offset: Tensor, size: int, pad: int, padding: str) -> tuple[Tensor, Tensor | None]:
    """Source coordinates of a padded crop per image (B×size), and a validity mask for zero padding."""
    idx = offset[:, None] - pad + torch.arange(size, device=offset.device)
    if padding == "reflect":
        idx = idx.abs()
        idx = torch.where(idx > size - 1, 2 * (size - 1) - idx, idx)
        return idx, None
    valid = (idx >= 0) & (idx < size)
    return idx.clamp(0, size - 1), valid


def crop_flip(
    images: Tensor,
    index: Tensor,
    dy: Tensor,
    dx: Tensor,
    flip: Tensor,
    *,
    pad: int = 4,
    padding: str = "zero",
) -> Tensor:
    """Gather `images[index]` with a pad-`pad` random crop and horizontal flip, as index arithmetic.

    Equivalent to padding every image (zeros, or `reflect`), cutting an H×W window at (dy, dx) and
    flipping it where `flip` is set, without building the padded copy: two gathers and a mask.
    """
    if padding not in ("zero", "reflect"):
        raise ConfigError(f"padding={padding!r}: expected 'zero' or 'reflect'")
    batch = images[index]
    b, c, h, w = batch.shape
    rows, row_ok = _crop_index(dy, h, pad, padding)
    cols, col_ok = _crop_index(dx, w, pad, padding)
    cols = torch.where(flip[:, None], cols.flip(1), cols)
    out = torch.gather(batch, 2, rows[:, None, :, None].expand(b, c, h, w))
    out = torch.gather(out, 3, cols[:, None, None, :].expand(b, c, h, w))
    if row_ok is not None and col_ok is not None:
        col_ok = torch.where(flip[:, None], col_ok.flip(1), col_ok)
        out = out * (row_ok[:, None, :, None] & col_ok[:, None, None, :])
    return out


class Normalizer:
    """uint8 → float with per-channel normalisation, in the training memory format and dtype."""

    def __init__(
        self,
        mean: Iterable[float],
        std: Iterable[float],
        device: torch.device,
        channels_last: bool = False,
    ) -> None:
        std_t = torch.tensor(list(std), dtype=torch.float32, device=device)
        mean_t = torch.tensor(list(mean), dtype=torch.float32, device=device)
        # (x/255 - mean) / std == x * scale + shift
        self.scale = (1.0 / (255.0 * std_t)).view(1, -1, 1, 1)
        self.shift = (-mean_t / std_t).view(1, -1, 1, 1)
        self.channels_last = channels_last

    def __call__(self, x: Tensor) -> Tensor:
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return torch.addcmul(self.shift, x.float(), self.scale)
