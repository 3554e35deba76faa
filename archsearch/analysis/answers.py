"""Every answer for one study, computed once from its records; plots and the report only read it."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from archsearch.analysis.best import BestResult, best_k, wrn_analysis
from archsearch.analysis.candidates import CandidateSummary, summarize
from archsearch.analysis.failures import failure_lines
from archsearch.analysis.fidelity import FidelityCheck, fidelity_check
from archsearch.analysis.landscape import EDF, ParetoFront, PathLengthResult, edfs, pareto, path_length_analysis
from archsearch.analysis.stats import LEVEL, N_BOOT
from archsearch.analysis.threshold import N0Result, n0_analysis
from archsearch.study.records import TrialRecord


@dataclass
class StudyAnalysis:
    """All answers for one study, computed once; plots and the report only read this."""

    states: dict[str, int]
    n_full_fidelity: int
    candidates: list[CandidateSummary]
    n0: list[N0Result]
    best_k: list[BestResult]
    wrn: list[BestResult]
    edf: list[EDF]
    pareto: list[ParetoFront]
    path_length: list[PathLengthResult]
    fidelity: list[FidelityCheck]
    seed: int
    n_boot: int
    level: float
    precisions: dict[str, int] = field(default_factory=dict)  # among the trials that feed answers
    compiled: dict[str, int] = field(default_factory=dict)  # "compiled" / "eager" / "unrecorded" among them
    failures: list[str] = field(default_factory=list)  # the report's first lines: crashes, families all failed

    @property
    def mixed_precision(self) -> bool:
        """Answers built from trials trained in different precisions (e.g. a cluster of mixed CPUs)."""
        return len(self.precisions) > 1


def analyze(
    records: list[TrialRecord], *, seed: int = 0, n_boot: int = N_BOOT, level: float = LEVEL,
    rungs: list[int] | None = None,
) -> StudyAnalysis:
    """Every question a study answers, from its records (deterministic for a given `seed`)."""
    kw = {"seed": seed, "n_boot": n_boot, "level": level}
    return StudyAnalysis(
        states=dict(Counter(r.state for r in records)),
        n_full_fidelity=sum(r.usable for r in records),
        candidates=summarize(records),
        n0=n0_analysis(records, **kw),
        best_k=best_k(records, **kw),
        wrn=wrn_analysis(records, **kw),
        edf=edfs(records),
        pareto=[pareto(records, axis) for axis in ("params", "macs", "latency_b1_ms")],
        path_length=path_length_analysis(records, **kw),
        fidelity=fidelity_check(records, rungs=rungs, **kw),
        seed=seed,
        n_boot=n_boot,
        level=level,
        precisions=dict(Counter(r.precision or "unrecorded" for r in records if r.usable)),
        compiled=dict(Counter({True: "compiled", False: "eager", None: "unrecorded"}[r.compiled]
                              for r in records if r.usable)),
        failures=failure_lines(records),
    )
