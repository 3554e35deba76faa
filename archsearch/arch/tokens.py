"""The tokens of architecture names: suffixes such as -K4, -w2, -c8.16.32, -b131, -u4.4.3, -drop0.3.

`classify` turns one suffix into a (spec key, value) pair whatever the family; which family may use
which suffix, and what its positional tokens mean, is `archsearch.arch.spec`'s business.
"""

from __future__ import annotations

import re
from typing import Any

from archsearch.arch.families import families
from archsearch.errors import SpecError

ALLOWED_KERNELS = (1, 3, 5)
SUFFIX_FORMS = "[-c<C>|-c<a>.<b>.<c>] [-proj|-pad] [-u<a>.<b>.<c>] [-drop<p>]"


def valid_forms() -> str:
    return "valid forms: " + ", ".join(f.name_form for f in families()) + "; optional suffixes " + SUFFIX_FORMS


def fmt_float(x: float) -> str:
    return repr(float(x)).rstrip("0").rstrip(".") if "e" not in repr(float(x)) else repr(float(x))


NAME_RE = re.compile(r"^(?P<family>[a-z]+)-(?P<depth>\d+)(?P<rest>(-[a-z0-9.]+)*)$", re.IGNORECASE)
INT_RE = re.compile(r"^\d+$")


def stage_ints(text: str, what: str, name: str) -> tuple[int, int, int]:
    parts = text.split(".")
    if len(parts) != 3 or not all(INT_RE.match(p) for p in parts):
        raise SpecError(f"{name!r}: {what} needs three integers a.b.c, got {text!r}")
    return tuple(int(p) for p in parts)  # type: ignore[return-value]


def suffix_options(tokens: list[str], raw: str) -> dict[str, Any]:
    opts: dict[str, Any] = {}
    for tok in tokens:
        key, value = classify(tok, raw)
        if key in opts:
            raise SpecError(f"{raw!r}: suffix for {key} given twice")
        opts[key] = value
    return opts


def classify(tok: str, raw: str) -> tuple[str, Any]:
    low = tok.lower()
    if re.fullmatch(r"[kK]\d+", tok):
        k = int(tok[1:])
        if k < 1:
            raise SpecError(f"{raw!r}: k/K must be >= 1, got {tok!r}")
        return "branches", k
    if low == "bottleneck":
        return "function", "bottleneck"
    if re.fullmatch(r"b\d+", low):
        kernels = tuple(int(c) for c in low[1:])
        bad = [k for k in kernels if k not in ALLOWED_KERNELS]
        if bad:
            raise SpecError(f"{raw!r}: block kernels {low[1:]} must use sizes {ALLOWED_KERNELS}, "
                            f"as in -b33 or -b131")
        return "kernels", kernels
    if re.fullmatch(r"w\d+", low):
        if int(low[1:]) < 1:
            raise SpecError(f"{raw!r}: width multiplier must be >= 1")
        return "widths", ("w", low[1:])
    if re.fullmatch(r"c\d+(\.\d+\.\d+)?", low):
        if any(int(p) < 1 for p in low[1:].split(".")):
            raise SpecError(f"{raw!r}: widths must be >= 1")
        return "widths", ("c", low[1:])
    if low in ("proj", "pad"):
        return "shortcut", low
    if re.fullmatch(r"u[\d.]+", low):
        units = stage_ints(low[1:], "-u", raw)
        if min(units) < 1:
            raise SpecError(f"{raw!r}: units per stage must be >= 1")
        return "units", units
    if low in ("v1", "v2"):
        return "variant", int(low[1])
    if low == "nobn":
        return "nobn", True
    if re.fullmatch(r"drop(0?\.\d+|0|1e-\d+)", low):
        return "dropout", float(low[4:])
    raise SpecError(f"{raw!r}: unknown suffix -{tok}; {valid_forms()}")
