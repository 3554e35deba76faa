"""Answers to declared questions, from counting trials only (each answer says which seeds it rests on).

`answer_all` turns resolved questions (`archsearch.study.questions`) and trial records into answers; `as_json`
gives the stable form `archsearch replay --json` and the report share. The statistics are
`archsearch.analysis.contrasts`'s, checked by simulation in tests/analysis/test_contrasts.py.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from archsearch.analysis.contrasts import (
    LEVEL,
    BestSet,
    Contrast,
    Sample,
    ThresholdAnswer,
    best_set,
    contrast,
    threshold,
)
from archsearch.errors import ConfigError
from archsearch.study.asked import QUESTIONS_ATTR, candidate_infos, derive_questions, from_json
from archsearch.study.questions import ResolvedQuestion, resolve


@dataclass
class Answer:
    """One question's answer: `result` is a ThresholdAnswer, BestSet or Contrast; `seeds` per candidate used."""

    id: str
    kind: str
    result: ThresholdAnswer | BestSet | Contrast | None
    seeds: dict[str, int] = field(default_factory=dict)
    message: str = ""

    @property
    def resolved(self) -> bool:
        r = self.result
        if isinstance(r, ThresholdAnswer | BestSet):
            return r.resolved
        return isinstance(r, Contrast) and r.decision in "+-="

    def line(self) -> str:
        """One line for `run`'s summary and the report's first lines."""
        return f"{self.id}: {describe(self)}"


def samples_by_name(records: list[Any], split: str = "val") -> dict[str, Sample]:
    """Each canonical name's counting trials as one Sample (seed order); `split="test"` reads their test errors."""
    by: dict[str, list[tuple[int, float]]] = defaultdict(list)
    for r in records:
        value = r.value if split == "val" else getattr(r, "test_error", None)
        if r.usable and value is not None:
            by[r.name].append((r.seed if r.seed is not None else -1 - r.number, float(value)))
    return {n: Sample(n, tuple(v for _, v in sorted(rows)), tuple(s for s, _ in sorted(rows)))
            for n, rows in sorted(by.items())}


def answer(rq: ResolvedQuestion, samples: dict[str, Sample], *, level: float = LEVEL, seed: int = 0) -> Answer:
    """Answer one resolved question from the counting seeds of its own candidates."""
    q = rq.question
    missing = sorted(n for n in rq.names if n not in samples)
    seeds = {n: samples[n].n for n in sorted(rq.names) if n in samples}
    if missing:
        return Answer(q.id, q.kind, None, seeds, f"no counting trial yet for {', '.join(missing)}")
    if q.kind == "threshold":
        result: Any = threshold([(d, samples[t], samples[r]) for d, t, r in rq.pairs], level=level, seed=seed)
    elif q.kind == "best":
        labels = {v: str(v) if q.option == "name" else f"{q.option}={v}" for v, _ in rq.options}
        result = best_set({v: [samples[n] for n in names] for v, names in rq.options}, labels=labels,
                          level=level, margin=q.margin)
    else:
        result = contrast(_pooled(q.id + ".a", [samples[n] for n in rq.a]),
                          _pooled(q.id + ".b", [samples[n] for n in rq.b]), level=level, margin=q.margin)
    return Answer(q.id, q.kind, result, seeds)


def _pooled(label: str, samples: list[Sample]) -> Sample:
    """A side of a compare question: one candidate as is; several as the mean of their seed means per seed."""
    if len(samples) == 1:
        return samples[0]
    common = set.intersection(*(set(s.seeds or ()) for s in samples))
    rows = [(seed, sum(dict(zip(s.seeds, s.values, strict=True))[seed] for s in samples) / len(samples))
            for seed in sorted(common)]
    return Sample(label, tuple(v for _, v in rows), tuple(s for s, _ in rows))


def answer_all(resolved: list[ResolvedQuestion], records: list[Any], *, level: float = LEVEL,
               seed: int = 0, split: str = "val") -> list[Answer]:
    samples = samples_by_name(records, split)
    return [answer(rq, samples, level=level, seed=seed + i) for i, rq in enumerate(resolved)]


def questions_of(attrs: dict[str, Any], records: list[Any]) -> tuple[list[ResolvedQuestion], str]:
    """The questions a study was asked (stored when its run started), else derived from its trials; and how."""
    if attrs.get(QUESTIONS_ATTR):
        return from_json(attrs[QUESTIONS_ATTR]), "as stored when the run started"
    infos = candidate_infos(records)
    try:
        return resolve(derive_questions(infos), infos), "derived from the trials (no stored questions)"
    except ConfigError as exc:
        return [], f"none could be derived: {exc}"


@dataclass
class StudyAnswers:
    """The study's questions answered on the validation split, and (when trials were tested) on the test split."""

    answers: list[Answer]
    test_answers: list[Answer] | None
    source: str
    caveat: str = ""  # e.g. the answers rest on the seeds per-trial ASHA let survive


def study_answers(attrs: dict[str, Any], records: list[Any], *, level: float = LEVEL, seed: int = 0) -> StudyAnswers:
    resolved, source = questions_of(attrs, records)
    val = answer_all(resolved, records, level=level, seed=seed)
    tested = any(getattr(r, "test_error", None) is not None for r in records if r.usable)
    test = answer_all(resolved, records, level=level, seed=seed, split="test") if tested else None
    names = set().union(*(rq.names for rq in resolved)) if resolved else set()
    pruned = sum(r.state == "PRUNED" and r.name in names for r in records)
    caveat = (f"{pruned} trials of these candidates were stopped early by per-trial ASHA: the answers rest on the "
              "seeds that survived, not on every seed of each candidate" if pruned else "")
    return StudyAnswers(val, test, source, caveat)


def _depth(v: float | None, lo: int, hi: int) -> str:
    if v is None:
        return "?"
    return f"<{lo}" if v == -math.inf else f">{hi}" if v == math.inf else f"{v:.1f}"


def describe(a: Answer) -> str:
    """The answer in words, inconclusive ones with what would resolve them."""
    r = a.result
    if r is None:
        return f"not answered: {a.message}"
    if isinstance(r, ThresholdAnswer):
        if r.status in ("needs_seeds", "insufficient"):
            return f"not answered: {r.message}"
        lo, hi = r.depths[0], r.depths[-1]
        signs = " ".join(f"{d}:{s}" for d, s in r.signs.items())
        head = f"n₀ = {_depth(r.n0, lo, hi)} (95 % interval {_depth(r.low, lo, hi)} – {_depth(r.high, lo, hi)})"
        todo = [c.seeds_to_resolve for c in r.deltas if c.decision == "?"]
        tail = "" if r.resolved else " — inconclusive" + _need(todo)
        return f"{head}; Δ signs {signs}{tail}"
    if isinstance(r, BestSet):
        if r.status != "ok":
            return f"not answered: {r.message}"
        if r.equivalent:
            return f"equivalent within {r.margin:g} points: {_with_means(r)}"
        if r.resolved:
            best = r.options[0]
            return f"best {r.contenders[0]} ({best.mean:.2f} % ± {best.se:.2f})"
        return f"inconclusive: {_with_means(r)} not significantly worse than the best" + _need(
            [r.seeds_to_resolve])
    if r.status != "ok":
        return f"not answered: {r.message}"
    verdict = {"+": f"{r.a} worse", "-": f"{r.a} better", "=": "equivalent within the margin",
               "?": "inconclusive"}[r.decision]
    need = _need([r.seeds_to_resolve]) if r.decision == "?" else ""
    return f"{r.a} − {r.b} = {r.estimate:+.2f} points [{r.low:+.2f}, {r.high:+.2f}]: {verdict}{need}"


def _with_means(r: BestSet) -> str:
    """The contenders, best first, each with its mean error."""
    means = {o.label: o.mean for o in r.options}
    return ", ".join(f"{label} ({means[label]:.2f} %)" for label in r.contenders)


def _need(seeds: list[int | None]) -> str:
    known = [s for s in seeds if s is not None]
    if not known:
        return " (the effect is too small to resolve with a feasible number of seeds)"
    return f" (≈ {max(known)} seeds per candidate would likely resolve it)"


def as_json(a: Answer) -> dict[str, Any]:
    """The stable machine-readable form (the replay's `answers` entries)."""
    r = a.result
    out: dict[str, Any] = {"id": a.id, "kind": a.kind, "resolved": a.resolved, "seeds": a.seeds,
                           "text": describe(a)}
    if isinstance(r, ThresholdAnswer):
        out.update(n0=_num(r.n0), low=_num(r.low), high=_num(r.high), signs={str(d): s for d, s in r.signs.items()})
    elif isinstance(r, BestSet):
        out.update(contenders=[o.value for o in r.options if o.label in r.contenders], equivalent=r.equivalent)
    elif isinstance(r, Contrast):
        out.update(estimate=r.estimate, low=r.low, high=r.high, decision=r.decision)
    return out


def _num(v: float | None) -> float | str | None:
    if v is None or math.isfinite(v):
        return v
    return "inf" if v > 0 else "-inf"
