"""ArchSpec: one frozen, torch-free description of every residual family, and its names.

Every family of the five papers is a point of one space (unit kind x function x units x widths x
parallel functions x warp). A name is a readable spelling of a spec; `parse_name` accepts every
spelling, `spec.name` prints the canonical one (the simplest family, fewest suffixes), and
`parse_name(spec.name) == spec` holds for every valid spec with the default class count.
What each family is (depth rule, k/K token, widening, default shortcut) is declared once in
`archsearch.arch.families`; the suffix tokens are read by `archsearch.arch.tokens`.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

from archsearch.arch.families import Family, combines, families, family, is_family, unit_kinds
from archsearch.arch.tokens import (
    ALLOWED_KERNELS,
    INT_RE,
    NAME_RE,
    fmt_float,
    stage_ints,
    suffix_options,
    valid_forms,
)
from archsearch.errors import SpecError

FUNCTIONS = ("basic", "bottleneck")
SHORTCUTS = ("pad", "proj", "none")
BASE_WIDTHS = (16, 32, 64)
@dataclass(frozen=True)
class ArchSpec:
    """A residual network as data.

    unit: "pre" (pre-activation ResNet/WRN/Multi-ResNet), "post" (post-activation fusion family:
      postresnet/DVANet/DMRNet) or "warp" (WarpNet units grouped into warp operators).
    function: "basic" (convs with `kernels`) or "bottleneck" (1x1, 3x3, 1x1 with 4x expansion).
    units: residual units per stage. widths: stage widths (bottleneck: inner widths, output x4).
    stem: stem output width (pre: 16 always; post: widths[0]; warp: the width before the kw copies).
    branches: parallel functions per unit (Multi-ResNet k, DVANet/DMRNet K); combine: "sum" adds
      them on one input, "merge" runs K streams with merge-and-run (post units only).
    shortcut: "pad" (option A), "proj" (1x1 projection; with BN in post units), "none" (warp).
    warp_k/warp_variant/warp_bn: WarpNet factor K (1 = sequential), v1 (F'x) or v2 (F'F), and
      whether the derivative terms keep their BN layers (False = the paper's "-nobn" runs).
    """

    unit: str = "pre"
    function: str = "basic"
    kernels: tuple[int, ...] = (3, 3)
    units: tuple[int, int, int] = (3, 3, 3)
    widths: tuple[int, int, int] = BASE_WIDTHS
    stem: int = 16
    branches: int = 1
    combine: str = "sum"
    shortcut: str = "pad"
    warp_k: int = 1
    warp_variant: int = 1
    warp_bn: bool = True
    dropout: float = 0.0
    num_classes: int = 10
    _validated: bool = field(default=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "kernels", tuple(int(k) for k in self.kernels))
        object.__setattr__(self, "units", tuple(int(u) for u in self.units))
        object.__setattr__(self, "widths", tuple(int(w) for w in self.widths))
        object.__setattr__(self, "dropout", float(self.dropout))
        _validate(self)

    # ---------------------------------------------------------------- derived views
    @property
    def convs_per_function(self) -> int:
        """B: weighted layers in one residual function (path-length unit)."""
        return 3 if self.function == "bottleneck" else len(self.kernels)

    @property
    def expansion(self) -> int:
        return 4 if self.function == "bottleneck" else 1

    @property
    def out_widths(self) -> tuple[int, int, int]:
        return tuple(w * self.expansion for w in self.widths)  # type: ignore[return-value]

    @property
    def total_units(self) -> int:
        return sum(self.units)

    @property
    def family(self) -> str:
        return self.name.split("-", 1)[0]

    @property
    def depth(self) -> int:
        return int(self.name.split("-")[1])

    @property
    def k(self) -> int:
        """Parallel functions per unit (k or K), or the warp factor for WarpNet."""
        return self.warp_k if self.unit == "warp" else self.branches

    @property
    def name(self) -> str:
        return canonical_name(self)

    # ---------------------------------------------------------------- (de)serialisation
    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("_validated")
        for key in ("kernels", "units", "widths"):
            d[key] = list(d[key])
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ArchSpec:
        if "name" in data:
            rest = {k: v for k, v in data.items() if k != "name"}
            unknown = set(rest) - {"num_classes"}
            if unknown:
                raise SpecError(f"a spec given by name takes only num_classes besides it, not {sorted(unknown)}")
            return parse_name(str(data["name"]), num_classes=int(rest.get("num_classes", 10)))
        known = {f.name for f in fields(cls)} - {"_validated"}
        unknown = set(data) - known
        if unknown:
            raise SpecError(f"unknown spec keys {sorted(unknown)}; known keys: {sorted(known)}")
        try:
            return cls(**data)
        except TypeError as exc:
            raise SpecError(f"bad spec: {exc}") from None

    @classmethod
    def from_json(cls, text: str) -> ArchSpec:
        return cls.from_dict(json.loads(text))

    def with_classes(self, num_classes: int) -> ArchSpec:
        return replace(self, num_classes=num_classes)


def as_spec(obj: ArchSpec | str | dict[str, Any], num_classes: int | None = None) -> ArchSpec:
    """Accept a spec, a name or a dict; an explicit num_classes wins over the spec's."""
    if isinstance(obj, ArchSpec):
        spec = obj
    elif isinstance(obj, str):
        spec = parse_name(obj)
    elif isinstance(obj, dict):
        spec = ArchSpec.from_dict(obj)
    else:
        raise SpecError(f"cannot make an architecture spec from {type(obj).__name__}")
    if num_classes is not None and num_classes != spec.num_classes:
        spec = spec.with_classes(num_classes)
    return spec


# -------------------------------------------------------------------- validation
def _validate(s: ArchSpec) -> None:
    def bad(msg: str) -> None:
        raise SpecError(msg)

    if s.unit not in unit_kinds():
        bad(f"unit must be one of {unit_kinds()}, not {s.unit!r}")
    if s.function not in FUNCTIONS:
        bad(f"function must be one of {FUNCTIONS}, not {s.function!r}")
    if s.combine not in combines():
        bad(f"combine must be one of {combines()}, not {s.combine!r}")
    if s.shortcut not in SHORTCUTS:
        bad(f"shortcut must be one of {SHORTCUTS}, not {s.shortcut!r}")
    if len(s.units) != 3 or min(s.units) < 1:
        bad(f"units must be 3 stage counts >= 1, not {s.units}")
    if len(s.widths) != 3 or min(s.widths) < 1:
        bad(f"widths must be 3 stage widths >= 1, not {s.widths}")
    if not s.kernels or any(k not in ALLOWED_KERNELS for k in s.kernels):
        bad(f"kernel sizes must be in {ALLOWED_KERNELS}, not {s.kernels}")
    if s.function == "bottleneck" and s.kernels != (3, 3):
        bad("bottleneck functions have fixed kernels (1, 3, 1); leave kernels at (3, 3)")
    if s.branches < 1:
        bad(f"branches (k or K) must be >= 1, not {s.branches}")
    if s.num_classes < 1:
        bad(f"num_classes must be >= 1, not {s.num_classes}")
    if not 0.0 <= s.dropout < 1.0:
        bad(f"dropout must be in [0, 1), not {s.dropout}")
    if s.combine == "merge" and s.unit != "post":
        bad("merge-and-run (combine='merge') is defined for post-activation units only")
    if s.branches == 1 and s.combine != "sum":
        object.__setattr__(s, "combine", "sum")  # one branch: merge and sum are the same network
    if s.unit == "warp":
        if s.function != "basic":
            bad("WarpNet units use basic functions")
        if s.branches != 1:
            bad("WarpNet units have one function each (use warp_k for the warp factor)")
        if s.warp_k < 1:
            bad(f"warp factor K must be >= 1, not {s.warp_k}")
        if s.warp_variant not in (1, 2):
            bad(f"warp variant must be 1 or 2, not {s.warp_variant}")
        for u in s.units:
            if u % s.warp_k:
                bad(f"units per stage {s.units} must be divisible by the warp factor K={s.warp_k}")
        if s.widths[0] % s.stem or s.widths[1] != 2 * s.widths[0] or s.widths[2] != 2 * s.widths[1]:
            bad(f"WarpNet widths must be stem*kw times (1, 2, 4); got widths {s.widths} with stem {s.stem}")
        object.__setattr__(s, "shortcut", "none")
        object.__setattr__(s, "combine", "sum")
    else:
        if s.warp_k != 1 or s.warp_variant != 1 or not s.warp_bn:
            bad("warp_k / warp_variant / warp_bn apply to warp units only")
        if s.shortcut == "none":
            bad("shortcut 'none' is for warp units; use 'pad' or 'proj'")
        object.__setattr__(s, "stem", 16 if s.unit == "pre" else s.widths[0])
        _check_pad_shortcuts(s)


def _check_pad_shortcuts(s: ArchSpec) -> None:
    """Option-A (zero-padding) shortcuts only add channels: refuse here what the builder could not build."""
    if s.shortcut != "pad":
        return
    channels = [s.stem, *(w * s.expansion for w in s.widths)]
    for i, (a, b) in enumerate(zip(channels, channels[1:], strict=False)):
        if b < a:
            into = f"{a}-channel stem" if i == 0 else f"stage {i}'s {a} channels"
            raise SpecError(f"-pad shortcuts cannot reduce channels ({into} → {b}): use -proj or widths ≥ {a}")


# -------------------------------------------------------------------- naming
def _default_shortcut(fam: Family, function: str, width_token: str) -> str:
    if fam.default_shortcut:
        return fam.default_shortcut
    if function == "bottleneck" or width_token.startswith("w"):
        return "proj"
    return "pad"


def _width_token(s: ArchSpec, fam: Family) -> str | None:
    """How `fam` spells the widths of `s` ("" = the base widths), or None when it cannot."""
    base = BASE_WIDTHS
    if fam.widening == "wrn":
        if s.widths[0] % 16 or s.widths != tuple(s.widths[0] // 16 * x for x in base):
            return None
        return None if s.function == "bottleneck" else "w"
    if fam.widening == "warp":
        return f"c{s.stem}" if s.stem != 16 else ""
    if s.widths == base:
        return ""
    if s.widths[0] % 16 == 0 and s.widths == tuple(s.widths[0] // 16 * x for x in base):
        return f"w{s.widths[0] // 16}"
    if s.widths == (s.widths[0], 2 * s.widths[0], 4 * s.widths[0]):
        return f"c{s.widths[0]}"
    return "c" + ".".join(str(w) for w in s.widths)


def _family_tokens(s: ArchSpec, fam: Family) -> list[str] | None:
    """Name tokens of spec `s` spelled in family `fam`, or None when that family cannot spell it."""
    if fam.unit != s.unit or (fam.branch_token is None and s.branches != 1):
        return None
    if s.branches > 1 and s.combine != fam.combine:
        return None
    width_token = _width_token(s, fam)
    if width_token is None:
        return None
    tokens: list[str] = [fam.name, str(fam.depth(s.total_units, s.convs_per_function))]
    if fam.widening == "wrn":
        tokens.append(str(s.widths[0] // 16))
    elif fam.widening == "warp":
        tokens.append(str(s.widths[0] // s.stem))
    if fam.branch_token and (fam.default_branches is None or s.k != fam.default_branches):
        tokens.append(f"{fam.branch_token}{s.k}")
    if width_token and fam.widening != "wrn":
        tokens.append(width_token)
    if s.function == "bottleneck":
        tokens.append("bottleneck")
    elif s.kernels != (3, 3):
        tokens.append("b" + "".join(str(k) for k in s.kernels))
    if s.shortcut != _default_shortcut(fam, s.function, width_token):
        tokens.append(s.shortcut)
    if len(set(s.units)) != 1:
        tokens.append("u" + ".".join(str(u) for u in s.units))
    if s.unit == "warp":
        if s.warp_variant == 2:
            tokens.append("v2")
        if not s.warp_bn:
            tokens.append("nobn")
    if s.dropout:
        tokens.append("drop" + fmt_float(s.dropout))
    return tokens


def _suffix_count(tokens: list[str]) -> int:
    """Suffixes beyond family-depth; the positional widening of wrn/warpnet is not a suffix."""
    positional = 1 if family(tokens[0]).positional_widening else 0
    return len(tokens) - 2 - positional


def canonical_name(s: ArchSpec) -> str:
    best: list[str] | None = None
    for fam in families():
        tokens = _family_tokens(s, fam)
        if tokens is None:
            continue
        if best is None or _suffix_count(tokens) < _suffix_count(best):
            best = tokens
    if best is None:
        raise SpecError(f"no family can name spec {s}")
    return "-".join(best)


# -------------------------------------------------------------------- parsing
def parse_name(name: str, num_classes: int = 10) -> ArchSpec:
    """Parse any accepted spelling of a network name into its spec."""
    try:
        return _parse_name(name, num_classes)
    except SpecError as exc:
        msg = str(exc)
        raise SpecError(msg if "valid forms" in msg else f"{msg}; {valid_forms()}") from None


def _parse_name(name: str, num_classes: int) -> ArchSpec:
    raw = name
    if not name.isascii():
        raise SpecError(f"{raw!r}: architecture names are ASCII (letters, digits 0-9, '-', '.'); {valid_forms()}")
    m = NAME_RE.match(name.strip())
    if not m:
        raise SpecError(f"cannot parse architecture name {raw!r}; {valid_forms()}")
    if not is_family(m.group("family").lower()):
        raise SpecError(f"unknown family {m.group('family').lower()!r} in {raw!r}; {valid_forms()}")
    fam = family(m.group("family").lower())
    depth = int(m.group("depth"))
    tokens = [t for t in m.group("rest").split("-") if t]
    positional: int | None = None
    if fam.positional_widening:
        if not tokens or not INT_RE.match(tokens[0]):
            form = f"{fam.name}-<depth>-<{'w' if fam.widening == 'wrn' else 'kw'}>"
            raise SpecError(f"{raw!r}: {fam.name} needs its widening factor, as in {form}; {valid_forms()}")
        positional = int(tokens.pop(0))
        if positional < 1:
            raise SpecError(f"{raw!r}: widening factor must be >= 1")
    opts = suffix_options(tokens, raw)
    _check_family_options(fam, opts, raw)
    function = opts.get("function", "basic")
    kernels = opts.get("kernels", (3, 3))
    convs = 3 if function == "bottleneck" else len(kernels)
    units = _units_of_name(fam, depth, convs, opts, raw)
    widths, stem, width_token = _widths_of_name(fam, positional, opts, raw)
    shortcut = opts.get("shortcut") or _default_shortcut(fam, function, width_token)
    count = opts.get("branches", fam.default_branches or 1)
    warp = fam.unit == "warp"
    try:
        return ArchSpec(unit=fam.unit, function=function, kernels=kernels, units=units, widths=widths,
                        stem=stem, branches=1 if warp else count, combine=fam.combine, shortcut=shortcut,
                        warp_k=count if warp else 1, warp_variant=opts.get("variant", 1),
                        warp_bn=not opts.get("nobn", False), dropout=opts.get("dropout", 0.0),
                        num_classes=num_classes)
    except SpecError as exc:
        raise SpecError(f"{raw!r}: {exc}") from None


def _check_family_options(fam: Family, opts: dict[str, Any], raw: str) -> None:
    if fam.branch_token is None and "branches" in opts and opts["branches"] != 1:
        raise SpecError(f"{raw!r}: {fam.name} has one function per unit; use multiresnet (k) or dvanet/dmrnet (K)")
    if fam.branch_token and fam.default_branches is None and "branches" not in opts:
        raise SpecError(f"{raw!r}: {fam.name} needs its function count, as in {fam.branch_example}")
    if fam.unit != "warp" and ("variant" in opts or "nobn" in opts):
        raise SpecError(f"{raw!r}: -v1/-v2/-nobn apply to warpnet only")


def _units_of_name(fam: Family, depth: int, convs: int, opts: dict[str, Any], raw: str) -> tuple[int, int, int]:
    if "units" in opts:
        units = opts["units"]
        if fam.depth(sum(units), convs) != depth:
            raise SpecError(f"{raw!r}: depth {depth} disagrees with units {'.'.join(map(str, units))} "
                            f"(that is depth {fam.depth(sum(units), convs)} for {fam.name})")
        return units
    n = fam.units_per_stage(depth, convs)
    if n is None:
        raise SpecError(f"{raw!r}: {fam.name} depth must be {fam.rule_text(convs)} with n >= 1 "
                        f"for these functions, got {depth}; {valid_forms()}")
    return (n, n, n)


def _widths_of_name(fam: Family, positional: int | None, opts: dict[str, Any],
                    raw: str) -> tuple[tuple[int, ...], int, str]:
    """(widths, stem, width token) a name spells."""
    if fam.widening == "wrn":
        if "widths" in opts:
            raise SpecError(f"{raw!r}: wrn takes its width as wrn-<depth>-<w>; -w/-c do not apply")
        return tuple(positional * x for x in BASE_WIDTHS), 16, "w"
    if fam.widening == "warp":
        if "widths" in opts and opts["widths"][0] != "c" or ("widths" in opts and "." in opts["widths"][1]):
            raise SpecError(f"{raw!r}: warpnet takes -c<C> (stem width) only; its widening is warpnet-<d>-<kw>")
        stem = int(opts["widths"][1]) if "widths" in opts else 16
        return (stem * positional, 2 * stem * positional, 4 * stem * positional), stem, ""
    if "widths" not in opts:
        return BASE_WIDTHS, 16, ""
    kind, text = opts["widths"]
    if kind == "w":
        return tuple(int(text) * x for x in BASE_WIDTHS), 16, kind
    if "." in text:
        return stage_ints(text, "-c", raw), 16, kind
    return (int(text), 2 * int(text), 4 * int(text)), 16, kind


