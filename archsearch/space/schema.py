"""Pydantic schema of a search-space YAML file (unknown keys are errors).

    name: cifar10_budget1.7M           # optional, defaults to the file's stem
    num_classes: 10
    infeasible: error                  # or skip: drop axis combinations no fit can put on budget
    budgets:                           # one or several equal-budget groups
      - label: "1.7M"
        params: 1.7M                   # and/or macs: 250M
        tolerance: 3%                  # relative; macs_tolerance defaults to it
        method: fit                    # fit: solve the family's free axes; filter: reject off-budget
    families:                          # axes: a value, a list of choices, or {low, high, step}
      multiresnet:
        depth: [8, 14, 20, 26]
        k: {low: 2, high: 10}
        fit: [widths]                  # or {axes: [depth, widths], divisor: 1, scale: [0.25, 4]}
      warpnet:
        K: [2, 3]
        kw: [2, 4]
        fit: [[depth, stem]]           # a nested list fits its axes jointly
    candidates:                        # explicit named networks
      - {name: resnet-110, budget: "1.7M"}               # as is (recorded with its own counts)
      - {name: multiresnet-8-k23, budget: "1.7M", fit: true}   # fitted onto the budget

Which axes apply to which family is each family's `axes` in `archsearch.arch.families` (k only for
multiresnet, K only for the branch families and WarpNet, ...); `fit` lists free axes in order: each
but the last is chosen closest to the budget with the later ones at their nominal values, the last is
solved exactly (`archsearch.arch.fit`).
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

AXIS_ORDER = ("depth", "function", "k", "K", "w", "kw", "stem", "kernels", "variant", "nobn", "shortcut", "dropout")

_NUMBER_RE = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:e[0-9]+)?)\s*([kKmMgG]?)\s*$")
_SCALE = {"": 1, "k": 10**3, "m": 10**6, "g": 10**9}


def parse_count(value: Any) -> int:
    """1700000, 1.7e6, "1.7M", "250k" -> int."""
    if isinstance(value, bool):
        raise ValueError(f"expected a count such as 1.7M, got {value!r}")
    if isinstance(value, int | float):
        return int(round(value))
    m = _NUMBER_RE.match(str(value))
    if not m:
        raise ValueError(f"expected a count such as 1700000 or 1.7M, got {value!r}")
    return int(round(float(m.group(1)) * _SCALE[m.group(2).lower()]))


def parse_fraction(value: Any) -> float:
    """0.03 or "3%" -> 0.03."""
    text = str(value).strip()
    frac = float(text[:-1]) / 100 if text.endswith("%") else float(text)
    if not 0 <= frac < 1:
        raise ValueError(f"tolerance must be in [0, 1) (e.g. 0.03 or 3%), got {value!r}")
    return frac


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Range(Strict):
    """Integer range, both ends included."""

    low: int
    high: int
    step: int = 1

    @model_validator(mode="after")
    def _check(self) -> Range:
        if self.step < 1:
            raise ValueError(f"step must be >= 1, got {self.step}")
        if self.high < self.low:
            raise ValueError(f"empty range: high {self.high} < low {self.low}")
        return self

    def values(self) -> list[int]:
        return list(range(self.low, self.high + 1, self.step))


Scalar = int | float | str | bool
AxisValue = Range | list[Scalar] | Scalar


class Budget(Strict):
    label: str
    params: int | None = None
    macs: int | None = None
    tolerance: float = 0.03
    macs_tolerance: float | None = None
    method: Literal["fit", "filter"] = "fit"

    @field_validator("params", "macs", mode="before")
    @classmethod
    def _count(cls, v: Any) -> int | None:
        return None if v is None else parse_count(v)

    @field_validator("tolerance", "macs_tolerance", mode="before")
    @classmethod
    def _fraction(cls, v: Any) -> float | None:
        return None if v is None else parse_fraction(v)

    @model_validator(mode="after")
    def _check(self) -> Budget:
        if self.params is None and self.macs is None:
            raise ValueError("a budget needs params and/or macs")
        for key in ("params", "macs"):
            v = getattr(self, key)
            if v is not None and v <= 0:
                raise ValueError(f"{key} must be positive, got {v}")
        return self


class FitConfig(Strict):
    axes: list[str | list[str]]
    divisor: int = Field(1, ge=1)
    scale: tuple[float, float] = (0.25, 4.0)

    @model_validator(mode="after")
    def _check(self) -> FitConfig:
        if not self.axes:
            raise ValueError("fit needs at least one axis")
        if not 0 < self.scale[0] <= self.scale[1]:
            raise ValueError(f"scale must be 0 < low <= high, got {list(self.scale)}")
        for group in self.axes:
            if isinstance(group, list) and len(group) != 2:
                raise ValueError(f"a joint fit group has exactly two axes, got {group}")
        return self

    def flat(self) -> list[str]:
        return [a for g in self.axes for a in (g if isinstance(g, list) else [g])]


class Family(Strict):
    depth: AxisValue | None = None
    function: AxisValue | None = None
    k: AxisValue | None = None
    K: AxisValue | None = None
    w: AxisValue | None = None
    kw: AxisValue | None = None
    stem: AxisValue | None = None
    kernels: AxisValue | None = None
    variant: AxisValue | None = None
    nobn: AxisValue | None = None
    shortcut: AxisValue | None = None
    dropout: AxisValue | None = None
    fit: FitConfig | None = None
    group: str | list[str] | None = None  # labels its points carry for declared questions (study `questions:`)

    @field_validator("fit", mode="before")
    @classmethod
    def _short_fit(cls, v: Any) -> Any:
        return {"axes": v} if isinstance(v, list) else v

    def given_axes(self) -> list[str]:
        return [a for a in AXIS_ORDER if getattr(self, a) is not None]


class CandidateEntry(Strict):
    name: str
    budget: str | None = None
    fit: bool | FitConfig = False
    family: str | None = None
    id: str | None = None
    group: str | list[str] | None = None  # e.g. fig7_setting1; a network in two settings lists both

    @field_validator("fit", mode="before")
    @classmethod
    def _short_fit(cls, v: Any) -> Any:
        return {"axes": v} if isinstance(v, list) else v


class SpaceConfig(Strict):
    name: str | None = None
    description: str | None = None
    num_classes: int = Field(10, ge=1)
    infeasible: Literal["error", "skip"] = "error"
    budgets: list[Budget] = Field(default_factory=list)
    families: dict[str, Family] = Field(default_factory=dict)
    candidates: list[CandidateEntry] = Field(default_factory=list)

    @model_validator(mode="after")
    def _check(self) -> SpaceConfig:
        labels = [b.label for b in self.budgets]
        if len(set(labels)) != len(labels):
            raise ValueError(f"budget labels must be unique, got {labels}")
        if not self.families and not self.candidates:
            raise ValueError("a space needs families and/or candidates")
        if self.families and not self.budgets:
            raise ValueError("families need at least one budget (budgets: [{label, params, tolerance}])")
        return self


def group_labels(value: str | list[str] | None) -> tuple[str, ...]:
    """A `group:` value as a tuple of labels."""
    if value is None:
        return ()
    return (value,) if isinstance(value, str) else tuple(value)
