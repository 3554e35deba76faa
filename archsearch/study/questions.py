"""Declared questions: what a study must answer, each from its own candidates.

    questions:
      - {id: n0_1.7M, kind: threshold, reference: {names: [resnet-110]},
         treatment: {family: multiresnet, budget: "1.7M"}, along: depth}
      - {id: n0_pairs, kind: threshold, pairs: [[multiresnet-14-k10, resnet-110], [multiresnet-8-k23, resnet-110]]}
      - {id: best_K_fig7_setting1, kind: best, candidates: {group: fig7_setting1}, option: K}
      - {id: wide_vs_deep, kind: compare, a: {names: [wrn-28-10]}, b: {names: [resnet-1001-bottleneck]}}
      - {id: best_K_small, kind: best, candidates: {family: dmrnet, budget: "0.1M"}, option: K, margin: 0.3}

A selector picks candidates by `names`, `family`, `budget`, `group` and `depth` (all given keys must match). A selector
with `budget` picks only candidates fitted onto that budget: off-budget networks never feed a budgeted answer.
A threshold question has exactly one reference per treatment — one per budget, or pairs listed explicitly —
and one treatment per depth; anything else is a one-line config error naming the ambiguous candidates.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from archsearch.errors import ConfigError

OPTIONS = ("K", "k", "depth", "width", "family", "name")
_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,79}$")


class Selector(BaseModel):
    """Which candidates: every given key must match."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    names: list[str] | None = None
    family: str | None = None
    budget: str | None = None
    group: str | None = None
    depth: int | list[int] | None = None

    @model_validator(mode="after")
    def _not_empty(self) -> Selector:
        if not any((self.names, self.family, self.budget, self.group, self.depth)):
            raise ValueError("a selector needs at least one of names, family, budget, group, depth")
        return self

    def matches(self, c: CandidateInfo) -> bool:
        depths = [self.depth] if isinstance(self.depth, int) else self.depth
        return ((self.names is None or c.name in self.names) and (self.family is None or c.family == self.family)
                and (self.budget is None or (c.budget == self.budget and c.on_budget))
                and (self.group is None or self.group in c.groups) and (depths is None or c.depth in depths))


class Question(BaseModel):
    """One declared question (kind decides which keys it needs)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str
    kind: Literal["threshold", "best", "compare"]
    reference: Selector | None = None
    treatment: Selector | None = None
    along: Literal["depth"] = "depth"
    pairs: list[tuple[str, str]] | None = None  # threshold: (treatment, reference) as a paper pairs them
    candidates: Selector | None = None
    option: Literal["K", "k", "depth", "width", "family", "name"] | None = None
    a: Selector | None = None
    b: Selector | None = None
    margin: float = Field(0.0, ge=0)  # points: options within it are "equivalent"

    @model_validator(mode="after")
    def _keys_of_kind(self) -> Question:
        if not _ID_RE.match(self.id):
            raise ValueError(f"id {self.id!r}: letters, digits, '_', '.', '-' (at most 80)")
        need = {"threshold": ("treatment", "reference") if self.pairs is None else (),
                "best": ("candidates", "option"), "compare": ("a", "b")}[self.kind]
        missing = [k for k in need if getattr(self, k) is None]
        if missing:
            raise ValueError(f"a {self.kind} question needs {', '.join(missing)}")
        allowed = {"threshold": {"reference", "treatment", "pairs"}, "best": {"candidates", "option"},
                   "compare": {"a", "b"}}[self.kind]
        extra = [k for k in ("reference", "treatment", "pairs", "candidates", "option", "a", "b")
                 if getattr(self, k) is not None and k not in allowed]
        if extra:
            raise ValueError(f"a {self.kind} question does not take {', '.join(extra)}")
        if self.kind == "threshold" and self.pairs is not None and (self.treatment or self.reference):
            raise ValueError("a threshold question takes either pairs or treatment + reference, not both")
        return self


@dataclass(frozen=True)
class CandidateInfo:
    """What a question needs to know of a candidate (from the space, or from trial records)."""

    name: str
    family: str
    budget: str | None = None
    on_budget: bool = True
    groups: tuple[str, ...] = ()
    depth: int | None = None
    branches: int | None = None
    width: int | None = None

    def option(self, axis: str) -> Any:
        return {"K": self.branches or 1, "k": self.branches or 1, "depth": self.depth, "width": self.width,
                "family": self.family, "name": self.name}[axis]


@dataclass(frozen=True)
class ResolvedQuestion:
    """A question with its candidates named: threshold `pairs` (depth, treatment, reference), best `options`
    ({option value: names}), compare `a` / `b` names."""

    question: Question
    pairs: tuple[tuple[int, str, str], ...] = ()
    options: tuple[tuple[Any, tuple[str, ...]], ...] = ()
    a: tuple[str, ...] = ()
    b: tuple[str, ...] = ()

    @property
    def names(self) -> set[str]:
        out = {n for _, t, r in self.pairs for n in (t, r)} | set(self.a) | set(self.b)
        return out | {n for _, names in self.options for n in names}


def resolve(questions: list[Question], candidates: list[CandidateInfo], where: str = "questions") -> list[
        ResolvedQuestion]:
    """Name each question's candidates; ConfigError for an empty selection or an ambiguous threshold."""
    ids = [q.id for q in questions]
    dup = sorted({i for i in ids if ids.count(i) > 1})
    if dup:
        raise ConfigError(f"{where}: question ids must be unique, repeated: {', '.join(dup)}")
    by_name = {c.name: c for c in candidates}
    return [_resolve_one(q, candidates, by_name, f"{where}[{i}] ({q.id})") for i, q in enumerate(questions)]


def _pick(sel: Selector, candidates: list[CandidateInfo], where: str) -> list[CandidateInfo]:
    picked = [c for c in candidates if sel.matches(c)]
    if not picked:
        raise ConfigError(f"{where}: selects no candidate of the space ({sel.model_dump(exclude_none=True)})")
    return picked


def _resolve_one(q: Question, candidates: list[CandidateInfo], by_name: dict[str, CandidateInfo],
                 where: str) -> ResolvedQuestion:
    if q.kind == "compare":
        a, b = _pick(q.a, candidates, f"{where}.a"), _pick(q.b, candidates, f"{where}.b")
        both = sorted({c.name for c in a} & {c.name for c in b})
        if both:
            raise ConfigError(f"{where}: a and b both select {', '.join(both)}")
        return ResolvedQuestion(q, a=tuple(c.name for c in a), b=tuple(c.name for c in b))
    if q.kind == "best":
        options: dict[Any, list[str]] = {}
        for c in _pick(q.candidates, candidates, f"{where}.candidates"):
            options.setdefault(c.option(q.option), []).append(c.name)
        if len(options) < 2:
            raise ConfigError(f"{where}: selects one {q.option} only ({', '.join(map(str, options))}): "
                              "nothing to compare")
        ordered = sorted(options.items(), key=lambda kv: (str(type(kv[0])), kv[0]))
        return ResolvedQuestion(q, options=tuple((v, tuple(n)) for v, n in ordered))
    return ResolvedQuestion(q, pairs=_threshold_pairs(q, candidates, by_name, where))


def _threshold_pairs(q: Question, candidates: list[CandidateInfo], by_name: dict[str, CandidateInfo],
                     where: str) -> tuple[tuple[int, str, str], ...]:
    if q.pairs is not None:
        unknown = sorted({n for pair in q.pairs for n in pair if n not in by_name})
        if unknown:
            raise ConfigError(f"{where}.pairs: not candidates of the space: {', '.join(unknown)}")
        rows = [(by_name[t], by_name[r]) for t, r in q.pairs]
    else:
        treatments = _pick(q.treatment, candidates, f"{where}.treatment")
        references = _pick(q.reference, candidates, f"{where}.reference")
        rows = []
        for t in treatments:
            refs = [r for r in references if r.budget == t.budget] or (references if len(references) == 1 else [])
            if len(refs) != 1:
                named = ", ".join(r.name for r in refs) or "none"
                raise ConfigError(f"{where}: treatment {t.name} (budget {t.budget}) needs exactly one reference, "
                                  f"got {named}; narrow reference or list pairs")
            rows.append((t, refs[0]))
    out, seen = [], {}
    for t, r in rows:
        if t.depth is None:
            raise ConfigError(f"{where}: treatment {t.name} has no depth")
        if t.depth in seen:
            raise ConfigError(f"{where}: two treatments at depth {t.depth}: {seen[t.depth]} and {t.name}; "
                              "select one per depth (by names, budget or group) or ask one question per budget")
        seen[t.depth] = t.name
        out.append((t.depth, t.name, r.name))
    return tuple(sorted(out))
