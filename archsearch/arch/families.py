"""The family registry: what each residual family *is*, declared once (torch-free).

A family is a named spelling of a region of `ArchSpec` space (its unit kind and combine rule) plus
the facts every stage asks about it: the depth rule of its names, its name grammar (k/K token,
positional widening, default shortcut), the search-space axes it has, and how it is displayed
(export class and title, plot colour). `spec`, `space`, `export` and `analysis` read this table;
adding a family means one `register` call here (plus its unit in `nn` and `export` when the unit
kind is new). `register` returns an undo function, so tests can add a family and take it away again.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from archsearch.errors import SpecError

STANDARD_AXES = ("depth", "function", "w", "kernels", "shortcut", "dropout")


@dataclass(frozen=True)
class Family:
    """One family: its spec region, depth rule, name grammar, axes and display names."""

    name: str
    unit: str  # the unit kind it spells: "pre", "post", "warp" (or a registered one)
    combine: str = "sum"  # how a multi-branch unit joins its K functions: "sum", "merge", ...
    # depth = per_unit * (total units) + offset; per_unit None = the convs per function (B)
    depth_offset: int = 2
    depth_per_unit: int | None = None
    depth_letter: str = "n"  # the letter of the human depth rule ("6n+2", "6N+4", "6m+2", "3U+1")
    # name grammar
    name_form: str = ""
    branch_token: str | None = None  # "k" or "K" when the name carries the function count (warp: K)
    default_branches: int | None = 1  # None: the k/K token is required
    branch_example: str = ""  # the name quoted when a required k/K token is missing
    widening: str = "suffix"  # "suffix" (-w<w>/-c<C>), "wrn" (wrn-<d>-<w>) or "warp" (warpnet-<d>-<kw>)
    default_shortcut: str | None = None  # None: pad, or proj for bottleneck / -w widths
    # search-space axes
    axes: tuple[str, ...] = STANDARD_AXES
    fit_axes: tuple[str, ...] = ("depth", "widths", "width")
    default_fit: tuple[Any, ...] = ("widths",)
    # display
    title: str = ""  # model card / export docstring
    class_name: str = ""  # the exported network's class
    colour: str = "#17becf"  # plots

    def depth(self, total_units: int, convs: int) -> int:
        """Depth in this family's naming convention (convs = B, weighted layers per function)."""
        return (self.depth_per_unit or convs) * total_units + self.depth_offset

    def units_per_stage(self, depth: int, convs: int) -> int | None:
        """Units per stage of an evenly staged network of this depth, or None if no n >= 1 fits."""
        per = 3 * (self.depth_per_unit or convs)
        if depth <= self.depth_offset or (depth - self.depth_offset) % per:
            return None
        return (depth - self.depth_offset) // per

    def rule_text(self, convs: int, letter: str | None = None) -> str:
        """The depth rule as people write it, e.g. "6n+2" (basic), "9n+2" (bottleneck), "6N+4"."""
        return f"{3 * (self.depth_per_unit or convs)}{letter or self.depth_letter}+{self.depth_offset}"

    @property
    def positional_widening(self) -> bool:
        return self.widening != "suffix"


_FAMILIES: dict[str, Family] = {}


def register(fam: Family) -> Callable[[], None]:
    """Add a family (last in name-preference order); returns the function that removes it again."""
    if fam.name in _FAMILIES:
        raise SpecError(f"family {fam.name!r} is already registered")
    _FAMILIES[fam.name] = fam

    def unregister() -> None:
        _FAMILIES.pop(fam.name, None)

    return unregister


def family(name: str) -> Family:
    """The registered family called `name` (SpecError if none)."""
    try:
        return _FAMILIES[name]
    except KeyError:
        raise SpecError(f"unknown family {name!r}; known: {', '.join(_FAMILIES)}") from None


def families() -> tuple[Family, ...]:
    """All families, in the order canonical names prefer them (simplest first)."""
    return tuple(_FAMILIES.values())


def family_names() -> tuple[str, ...]:
    return tuple(_FAMILIES)


def is_family(name: str) -> bool:
    return name in _FAMILIES


def combines() -> tuple[str, ...]:
    """Every combine rule some family uses (the spec accepts exactly these)."""
    return tuple(dict.fromkeys(["sum", "merge", *(f.combine for f in _FAMILIES.values())]))


def unit_kinds() -> tuple[str, ...]:
    return tuple(dict.fromkeys(["pre", "post", "warp", *(f.unit for f in _FAMILIES.values())]))


_BRANCH_AXES = ("depth", "K", "w", "kernels", "shortcut", "dropout")
_BRANCH_FIT = ("depth", "K", "widths", "width")

for _fam in (
    Family("resnet", "pre", name_form="resnet-<6n+2>[-bottleneck: 9n+2]",
           title="pre-activation ResNet", class_name="PreActResNet", colour="#1f77b4"),
    Family("wrn", "pre", depth_offset=4, depth_per_unit=2, depth_letter="N", name_form="wrn-<6N+4>-<w>[-b<kernels>]",
           widening="wrn", default_shortcut="proj", axes=("depth", "w", "kernels", "dropout"),
           title="Wide ResNet", class_name="WideResNet", colour="#2ca02c"),
    Family("multiresnet", "pre", name_form="multiresnet-<6n+2>-k<k>[-w<w>|-bottleneck]", branch_token="k",
           default_branches=None, branch_example="multiresnet-26-k2",
           axes=("depth", "k", "function", "w", "kernels", "shortcut", "dropout"),
           fit_axes=("depth", "k", "widths", "width"),
           title="Multi-ResNet", class_name="MultiResNet", colour="#ff7f0e"),
    Family("postresnet", "post", depth_letter="m", name_form="postresnet-<6m+2>", default_shortcut="proj",
           axes=("depth", "w", "kernels", "shortcut", "dropout"),
           title="post-activation ResNet", class_name="PostActResNet", colour="#7f7f7f"),
    Family("dvanet", "post", depth_letter="m", name_form="dvanet-<6m+2>[-K<K>]", branch_token="K",
           default_branches=2, default_shortcut="proj", axes=_BRANCH_AXES, fit_axes=_BRANCH_FIT,
           title="DVANet, vanilla assembly", class_name="DVANet", colour="#9467bd"),
    Family("dmrnet", "post", combine="merge", depth_letter="m", name_form="dmrnet-<6m+2>[-K<K>][-w<w>]",
           branch_token="K", default_branches=2, default_shortcut="proj", axes=_BRANCH_AXES, fit_axes=_BRANCH_FIT,
           title="DMRNet, merge-and-run", class_name="DMRNet", colour="#d62728"),
    Family("warpnet", "warp", depth_offset=1, depth_letter="U", name_form="warpnet-<6U+1>-<kw>[-K<K>][-v1|-v2][-nobn]",
           branch_token="K", default_branches=2, widening="warp", default_shortcut="none",
           axes=("depth", "K", "kw", "variant", "nobn", "stem", "kernels", "dropout"),
           fit_axes=("depth", "stem"), default_fit=(("depth", "stem"),),
           title="WarpNet", class_name="WarpNet", colour="#8c564b"),
):
    register(_fam)
