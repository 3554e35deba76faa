"""Model parallelism inside one network: a unit's parallel functions on different devices.

Multi-ResNet (Fig. 4) and WarpNet place the k functions of a unit (the K branches of DVANet/DMRNet, the
derivative terms of a warp operator) on different devices and combine their outputs on the first.
`place` moves function i of every unit to device `i mod len(devices)` and everything else (stem, shortcuts,
merges, head) to the first device; each unit then sends its input to a function's device and the output
back (`transfer`), so the module tree and its `state_dict` stay what they are on one device. Autograd
carries the gradients back across the same transfers.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

import torch
from torch import nn

from archsearch.errors import ConfigError

_RECORDERS: list[list[tuple[int, tuple[int, ...]]]] = []


def transfer(t: torch.Tensor, device: torch.device, entry: int) -> torch.Tensor:
    """`t` on `device` (entry `entry` of the placement list); recorded while `record_transfers` is open."""
    for record in _RECORDERS:
        record.append((entry, tuple(t.shape)))
    return t.to(device, non_blocking=True)


@contextlib.contextmanager
def record_transfers() -> Iterator[list[tuple[int, tuple[int, ...]]]]:
    """Collect (device entry, tensor shape) of every transfer between a unit and its functions' devices."""
    record: list[tuple[int, tuple[int, ...]]] = []
    _RECORDERS.append(record)
    try:
        yield record
    finally:
        _RECORDERS.remove(record)


def place(net: nn.Module, devices: Sequence[str | torch.device]) -> nn.Module:
    """Spread every unit's parallel functions over `devices`, round robin; combine on `devices[0]`.

    Units place themselves (`spread(devices)`: `BranchSet`, `WarpOperator`); one device entry or none
    leaves the network on that device. Returns `net`.
    """
    targets = [_usable(d) for d in devices]
    if not targets:
        return net
    net.to(targets[0])
    if len(targets) > 1:
        for module in net.modules():
            spread = getattr(module, "spread", None)
            if callable(spread):
                spread(targets)
    return net


def placement(net: nn.Module) -> dict[str, int]:
    """Which device entry each placed function's parameters were put on: {module name: entry}."""
    out: dict[str, int] = {}
    for name, module in net.named_modules():
        for i, entry in enumerate(getattr(module, "placement", None) or []):
            out[f"{name}.{i}"] = entry
    return out


def _usable(device: str | torch.device) -> torch.device:
    """A listed device this machine has, else a one-line `ConfigError` naming it."""
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise ConfigError(f"train.model_parallel: {str(device)!r} is not a torch device (cpu, cuda:1, ...)") from None
    if dev.type == "cuda":
        have = torch.cuda.device_count()
        if (dev.index or 0) >= have:
            raise ConfigError(f"train.model_parallel: {dev} is not here: this machine has {have} CUDA device(s)")
    return dev
