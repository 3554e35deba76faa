"""Trials grouped into candidates: seeds of one canonical name, their mean error, budget order, block kind.

Only full-fidelity COMPLETE trials with a finite value count (`TrialRecord.usable`); a question
without such trials reports why (`no_data_message`), never a guess.
"""

from __future__ import annotations

import math
import re
from collections import Counter, defaultdict
from dataclasses import dataclass

import numpy as np

from archsearch.study.records import TrialRecord


def budget_sort_key(label: str) -> tuple[float, str]:
    """Order budget labels by the number they spell ("0.29M" < "1.7M"), unknown labels last."""
    m = re.fullmatch(r"\s*([0-9.]+)\s*([kKmMgG]?)\S*\s*", label)
    if not m:
        return (math.inf, label)
    scale = {"": 1, "k": 1e3, "m": 1e6, "g": 1e9}[m.group(2).lower()]
    try:
        return (float(m.group(1)) * scale, label)
    except ValueError:
        return (math.inf, label)


def block_of(name: str) -> str:
    """Block kind of a ResNet/Multi-ResNet name; n₀ and best k compare only within one kind."""
    if "-bottleneck" in name:
        return "bottleneck"
    return "wide" if re.search(r"-w\d", name) else "basic"


@dataclass
class CandidateSummary:
    """One canonical name: its seeds' errors and its complexity."""

    name: str
    family: str
    budget: str
    depth: int | None
    branches: int | None
    width: int | None
    n: int  # full-fidelity seeds
    mean: float | None
    std: float | None
    params: float | None
    macs: float | None
    latency_b1_ms: float | None
    path_length_mean: float | None
    test_error: float | None
    n_pruned: int
    n_failed: int


def summarize(records: list[TrialRecord]) -> list[CandidateSummary]:
    """Per canonical name: mean ± std over full-fidelity seeds, counts of pruned/failed trials."""
    by_name: dict[tuple[str, str], list[TrialRecord]] = defaultdict(list)
    for r in records:
        by_name[(r.name, r.budget)].append(r)
    out = []
    for (name, _), rs in by_name.items():
        ok = [r for r in rs if r.usable]
        vals = np.array([r.value for r in ok], dtype=float)
        first = (ok or rs)[0]
        tests = [r.test_error for r in ok if r.test_error is not None]
        out.append(
            CandidateSummary(
                name=name,
                family=first.family,
                budget=first.budget,
                depth=first.depth,
                branches=first.branches,
                width=first.width,
                n=len(ok),
                mean=float(vals.mean()) if len(ok) else None,
                std=float(vals.std(ddof=1)) if len(ok) > 1 else None,
                params=first.params,
                macs=first.macs,
                latency_b1_ms=_median([r.latency_b1_ms for r in ok]),
                path_length_mean=first.path_length_mean,
                test_error=float(np.mean(tests)) if tests else None,
                n_pruned=sum(r.state == "PRUNED" for r in rs),
                n_failed=sum(r.state == "FAIL" for r in rs),
            )
        )
    inf = math.inf
    out.sort(key=lambda c: (c.family, budget_sort_key(c.budget), inf if c.mean is None else c.mean))
    return out


def _median(xs: list[float | None]) -> float | None:
    xs = [x for x in xs if x is not None]
    return float(np.median(xs)) if xs else None


def values_by_name(records: list[TrialRecord]) -> dict[str, np.ndarray]:
    out: dict[str, list[float]] = defaultdict(list)
    for r in records:
        if r.usable:
            out[r.name].append(float(r.value))  # type: ignore[arg-type]
    return {k: np.asarray(v) for k, v in sorted(out.items())}


def no_data_message(what: str, present: list[TrialRecord]) -> str:
    c = Counter(r.state for r in present)
    partial = sum(r.state == "COMPLETE" and not r.full_fidelity for r in present)
    detail = ", ".join(f"{n} {s.lower()}" for s, n in sorted(c.items()))
    extra = f"; {partial} complete below full fidelity" if partial else ""
    return f"insufficient data: no full-fidelity COMPLETE {what} trial ({detail}{extra})"
