"""Test-time lesions: which residual parts a built network has, and deleting them without retraining.

Veit et al. (after them Multi-ResNet) delete residual blocks of a trained network at test time; the
deep-fusion paper removes component networks. A deletion replaces a residual part by zero and keeps
every shortcut: a whole unit (all its functions), one function of a Multi-ResNet unit, one branch of a
DVANet unit, one stream's residual H_i of a DMRNet unit (its merge stays), one residual unit F_j of a
warp operator (with every derivative term that holds F_j or F'_j), or one derivative term F'_j . F_i.

Deletions act per function (`BranchSet.deleted`, `WarpOperator.deleted_*`), so a unit that would fuse
its functions into grouped convolutions runs them one by one while a lesion is on; the parameters and
the `state_dict` are untouched. `route_gradient` is the same mechanism for Veit et al.'s effective
paths: it leaves the forward pass as it is and lets the gradient through chosen parts only.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from archsearch.arch.plan import derivative_terms, units
from archsearch.nn.blocks import MergeRunUnit, PostSumUnit, PreActUnit
from archsearch.nn.warp import WarpOperator, WarpTransition

SUM_UNITS = (PreActUnit, PostSumUnit)


@dataclass(frozen=True)
class Part:
    """One deletable part: stage and unit numbered from 1 as in the papers, and what it deletes.

    `functions` are the indices (0-based) of the unit's functions / branches / streams it zeroes; a warp
    part names its residual units (`functions`) or one derivative term (`term`, (j, i), i None = x).
    """

    index: int  # position of the unit in `net.body`
    stage: int
    unit: int
    part: str  # "unit", "function 2", "branch 2", "stream 2", "F2", "F'2·F1", "F'2·x"
    downsampling: bool
    functions: tuple[int, ...] = ()
    term: tuple[int, int | None] | None = None

    @property
    def whole_unit(self) -> bool:
        """A whole residual unit (what random n-deletions draw): a unit, or one residual unit of a warp operator."""
        return self.part == "unit" or (self.term is None and self.part.startswith("F"))

    def label(self) -> str:
        down = " (downsampling)" if self.downsampling else ""
        return f"stage {self.stage} unit {self.unit} {self.part}{down}"


def _function_word(module: nn.Module) -> str:
    if isinstance(module, MergeRunUnit):
        return "stream"
    return "branch" if isinstance(module, PostSumUnit) else "function"


def _unit_parts(index: int, stage: int, unit: int, module: nn.Module) -> list[Part]:
    k = len(module.functions)
    down = _downsampling(module)
    parts = [Part(index, stage, unit, "unit", down, tuple(range(k)))]
    if k > 1:
        word = _function_word(module)
        parts += [Part(index, stage, unit, f"{word} {i + 1}", down, (i,)) for i in range(k)]
    return parts


def _downsampling(module: nn.Module) -> bool:
    shortcuts = module.shortcuts if isinstance(module, MergeRunUnit) else [module.shortcut]
    return not all(isinstance(s, nn.Identity) for s in shortcuts)


def _warp_parts(index: int, stage: int, first_unit: int, op: WarpOperator) -> list[Part]:
    """F_j (residual unit first_unit + j of its stage) and each derivative term of one operator."""
    k = len(op.functions)
    parts = [Part(index, stage, first_unit + j, f"F{j + 1}", False, (j,)) for j in range(k)]
    for j, i in derivative_terms(k, op.variant):
        arg = "x" if i is None else f"F{i + 1}"
        parts.append(Part(index, stage, first_unit + j, f"F'{j + 1}·{arg}", False, (), (j, i)))
    return parts


def deletable_parts(net: nn.Module) -> list[Part]:
    """Every part a test-time lesion may delete, in network order (units, then their single functions)."""
    if any(isinstance(m, WarpOperator) for m in net.body):
        return _warp_network_parts(net)
    plan = units(net.spec)
    parts: list[Part] = []
    counts: dict[int, int] = {}
    for index, (module, unit) in enumerate(zip(net.body, plan, strict=True)):
        if not isinstance(module, (*SUM_UNITS, MergeRunUnit)):
            raise TypeError(f"lesions do not know the unit {type(module).__name__}")
        counts[unit.stage] = counts.get(unit.stage, 0) + 1
        parts += _unit_parts(index, unit.stage + 1, counts[unit.stage], module)
    return parts


def _warp_network_parts(net: nn.Module) -> list[Part]:
    parts: list[Part] = []
    stage, unit = 1, 0
    for index, module in enumerate(net.body):
        if isinstance(module, WarpTransition):
            stage, unit = stage + 1, 0
        else:
            parts += _warp_parts(index, stage, unit + 1, module)
            unit += len(module.functions)
    return parts


def whole_units(net: nn.Module) -> list[Part]:
    """The residual units random n-deletions draw from."""
    return [p for p in deletable_parts(net) if p.whole_unit]


def single_functions(net: nn.Module) -> list[Part]:
    """Every residual function as its own part (a unit of one function is itself): for random deletions
    that remove the same amount of computation from a ResNet and a Multi-ResNet of equal size."""
    parts = deletable_parts(net)
    return [p for p in parts if len(p.functions) == 1 and p.term is None]


@contextlib.contextmanager
def lesion(net: nn.Module, parts: Iterable[Part]) -> Iterator[nn.Module]:
    """Delete `parts` (residual parts give zeros, shortcuts and merges stay) for the `with` block."""
    body = net.body
    saved = {}
    for part in parts:
        module = body[part.index]
        if isinstance(module, WarpOperator):
            saved.setdefault(part.index, (module.deleted_functions, module.deleted_terms))
            module.deleted_functions = module.deleted_functions | set(part.functions)
            if part.term is not None:
                module.deleted_terms = module.deleted_terms | {part.term}
        else:
            saved.setdefault(part.index, module.functions.deleted)
            module.functions.deleted = module.functions.deleted | set(part.functions)
    try:
        yield net
    finally:
        for index, old in saved.items():
            module = body[index]
            if isinstance(module, WarpOperator):
                module.deleted_functions, module.deleted_terms = old
            else:
                module.functions.deleted = old


def surviving_paths(net: nn.Module) -> int:
    """Input-to-output paths of `net` as it runs now (under a lesion: the paths left)."""
    return sum(net.path_polynomial())


@contextlib.contextmanager
def route_gradient(net: nn.Module, through: Sequence[int | None]) -> Iterator[nn.Module]:
    """Forward pass unchanged; backward only along one path: per unit, its skip (None) or function i.

    Veit et al.'s sampling of paths of a given length: a unit on the path passes the gradient through
    one chosen residual function only (its shortcut's output is detached), a unit off the path through
    its shortcut only (every function's output is detached). For single-stream units (ResNet, WRN,
    Multi-ResNet, DVANet); `through` has one entry per unit of `net.body`.
    """
    units = list(net.body)
    if any(not isinstance(u, SUM_UNITS) for u in units):
        raise TypeError("gradient routing needs single-stream sum units (not merge-and-run or warp)")
    if len(through) != len(units):
        raise ValueError(f"{len(through)} routes for {len(units)} units")
    handles = []
    for unit, route in zip(units, through, strict=True):
        k = len(unit.functions)
        if route is None:
            unit.functions.detached = frozenset(range(k))
        else:
            unit.functions.detached = frozenset(set(range(k)) - {route})
            handles.append(unit.shortcut.register_forward_hook(_detach_output))
    try:
        yield net
    finally:
        for h in handles:
            h.remove()
        for unit in units:
            unit.functions.detached = frozenset()


def _detach_output(module: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor:
    del module, args
    return output.detach()
