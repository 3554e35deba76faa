"""Running a network on batch statistics in its BN layers while every other layer stays in eval mode.

Two places need it: precise BN (`archsearch.train.evaluate.recalibrate_bn`) recomputes running statistics from
batches, and the `auto` branch strategy (`archsearch.nn.branches`) times a training step; neither may
draw dropout masks (that would shift every later random number of the trial).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from torch import nn

BatchNorm = nn.modules.batchnorm._BatchNorm


def batch_norm_layers(module: nn.Module) -> list[BatchNorm]:
    return [m for m in module.modules() if isinstance(m, BatchNorm)]


@contextlib.contextmanager
def batch_statistics_only(module: nn.Module) -> Iterator[list[BatchNorm]]:
    """BN layers in training mode, all others in eval mode; every module's own mode restored after.

    Yields the BN layers. Running statistics do change inside (the caller restores or replaces them).
    """
    modes = {m: m.training for m in module.modules()}
    layers = batch_norm_layers(module)
    module.eval()
    for bn in layers:
        bn.train()
    try:
        yield layers
    finally:
        for m, mode in modes.items():
            m.train(mode)
