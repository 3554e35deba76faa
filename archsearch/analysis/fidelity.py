"""Can ASHA's low rungs be trusted? Rank correlation of each rung's error with the final error."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from scipy import stats

from archsearch.analysis.stats import LEVEL, N_BOOT, bootstrap_spearman, interval, seeded_rng
from archsearch.study.records import TrialRecord


@dataclass
class RungCorrelation:
    """How well the error at one ASHA rung ranks the final error of full-fidelity trials."""

    epoch: int
    n: int
    spearman: float
    spearman_ci: tuple[float, float]
    kendall: float
    kendall_p: float
    warn: bool
    reason: str


@dataclass
class FidelityCheck:
    """Rank agreement between ASHA's rungs and the final error, for one family or "all"."""

    family: str
    status: str  # ok | warn | insufficient
    rungs: list[RungCorrelation] = field(default_factory=list)
    message: str = ""


def rung_epochs(records: list[TrialRecord]) -> list[int]:
    """ASHA's rungs as the study shows them: the epochs where pruned trials stopped.

    Without pruned trials, powers of two below the maximum epoch stand in for them.
    """
    max_ep = max((r.max_epochs or max(r.intermediate, default=0) for r in records), default=0)
    stops = {r.epochs or max(r.intermediate, default=0) for r in records if r.state == "PRUNED"}
    rungs = sorted(e for e in stops if 0 < e < max_ep)
    if rungs or max_ep < 2:
        return rungs
    return [2**i for i in range(int(math.log2(max_ep)) + 1) if 2**i < max_ep]


def fidelity_check(
    records: list[TrialRecord], *, rungs: list[int] | None = None, min_trials: int = 5,
    threshold: float = 0.5, seed: int = 0, n_boot: int = N_BOOT, level: float = LEVEL,
) -> list[FidelityCheck]:
    """Spearman and Kendall correlation of each rung's error with the final error, per family.

    "all" (first, when there are several families) pools them, as ASHA itself ranks them together. A rung warns when ρ <
    `threshold` or its interval reaches 0; rungs that fewer than `min_trials` full-fidelity trials
    reached are skipped. The trials are the survivors of ASHA, so the range is restricted and ρ is,
    if anything, pessimistic about the rungs.
    """
    rungs = rung_epochs(records) if rungs is None else sorted(rungs)
    usable = [r for r in records if r.usable]
    fams = sorted({r.family for r in usable})
    out = []
    for i, fam in enumerate(["all", *fams] if len(fams) > 1 else fams):
        rs = [r for r in usable if fam == "all" or r.family == fam]
        checks = []
        for epoch in rungs:
            pair = [(r.intermediate[epoch], r.value) for r in rs if epoch in r.intermediate]
            if len(pair) < min_trials:
                continue
            x, y = (np.array(v, dtype=float) for v in zip(*pair, strict=True))
            if np.ptp(x) == 0 or np.ptp(y) == 0:
                checks.append(RungCorrelation(epoch, len(x), math.nan, (math.nan, math.nan), math.nan,
                                              math.nan, True, "constant errors: no ranking information"))
                continue
            rho = float(stats.spearmanr(x, y).statistic)
            kt = stats.kendalltau(x, y)
            ci = interval(bootstrap_spearman(x, y, n_boot, seeded_rng(seed, 5, i, epoch)), level)
            reasons = []
            if rho < threshold:
                reasons.append(f"Spearman {rho:.2f} < {threshold}")
            if not ci[0] > 0:
                reasons.append(f"interval [{ci[0]:.2f}, {ci[1]:.2f}] reaches 0")
            checks.append(RungCorrelation(epoch, len(x), rho, ci, float(kt.statistic), float(kt.pvalue),
                                          bool(reasons), "; ".join(reasons)))
        if not checks:
            msg = (f"no rung reached by ≥ {min_trials} full-fidelity trials" if rs
                   else f"insufficient data: no full-fidelity COMPLETE {fam} trial")
            out.append(FidelityCheck(fam, "insufficient", [], msg))
            continue
        warned = [c for c in checks if c.warn]
        msg = ("; ".join(f"epoch {c.epoch}: {c.reason}" for c in warned) if warned
               else f"every rung ranks the final error with Spearman ≥ {threshold}")
        out.append(FidelityCheck(fam, "warn" if warned else "ok", checks, msg))
    return out
