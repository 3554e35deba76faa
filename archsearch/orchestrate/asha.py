"""ASHA's arithmetic and its two rules, free of Ray: the schedulers and the offline replays both call these.

- Rungs: Ray's single bracket, grace · rf^k ≤ max_epochs, never one at the last epoch (a trial that
  got there finishes, measures its latency and reports once more).
- Rule `stop` (Ray's `_Bracket.on_result`): a trial reaching a rung is recorded there once and stops
  at once if its error is worse than the (1 − 1/rf) percentile of the results recorded there so far.
- Rule `promote` (Li et al. 2020, Algorithm 2): a trial reaching a rung waits there; a free worker
  promotes the best not-yet-promoted trial in the top ⌊n/rf⌋ of the highest rung that has one.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Iterable

import numpy as np


def asha_rungs(max_epochs: int, grace_period: int, reduction_factor: float) -> list[int]:
    """Epochs at which ASHA compares trials (Ray's single bracket: grace · rf^k ≤ max_epochs)."""
    rungs, k = [], 0
    while True:
        m = grace_period * reduction_factor**k
        if m > max_epochs + 1e-9:
            break
        rungs.append(int(math.ceil(m - 1e-9)))
        k += 1
    return rungs


def rung_epochs(max_epochs: int, grace_period: int, reduction_factor: float) -> list[int]:
    """The rungs archsearch uses: `asha_rungs` without one at the last epoch (ascending)."""
    return [m for m in asha_rungs(max_epochs, grace_period, reduction_factor) if m < max_epochs]


def expected_epochs(max_epochs: int, rungs: list[int], reduction_factor: float) -> float:
    """Epochs one trial trains on average if ASHA keeps the top 1/rf at each rung (an estimate)."""
    if not rungs:
        return float(max_epochs)
    total, alive, last = 0.0, 1.0, 0
    for r in rungs:
        total += alive * (r - last)
        alive /= reduction_factor
        last = r
    if last < max_epochs:
        total += alive * (max_epochs - last)
    return total


class StopRungs:
    """Rule `stop`: Ray's `_Bracket` with `stop_last_trials=False`, rewards as Ray keeps them (−error).

    Rungs are kept descending, as Ray does, so a result finds the highest rung it reached first; a
    non-integer milestone (grace · rf^k) is rounded up, which leaves `epoch >= milestone` unchanged.
    """

    def __init__(self, max_epochs: int, grace_period: int, reduction_factor: float) -> None:
        self.rf = float(reduction_factor)
        rungs = rung_epochs(max_epochs, grace_period, reduction_factor)
        self.rungs: list[tuple[int, dict[Hashable, float]]] = [(m, {}) for m in reversed(rungs)]

    @property
    def milestones(self) -> list[int]:
        return sorted(m for m, _ in self.rungs)

    def cutoff(self, recorded: dict[Hashable, float]) -> float | None:
        """The reward a newcomer must reach: the (1 − 1/rf) percentile of the rung's rewards so far."""
        if not recorded:
            return None
        return np.nanpercentile(list(recorded.values()), (1 - 1 / self.rf) * 100)

    def decide(self, key: Hashable, epoch: float, reward: float | None) -> bool:
        """Record a result at the highest rung it reached first, if any; True: stop the trial now."""
        for milestone, recorded in self.rungs:
            if epoch >= milestone and key in recorded:
                break  # judged at this rung already: the decision to go on was made
            if epoch < milestone or key in recorded:
                continue
            cutoff = self.cutoff(recorded)
            stop = cutoff is not None and reward is not None and reward < cutoff
            if reward is not None:
                recorded[key] = reward
            return stop
        return False

    def seed(self, key: Hashable, values: dict[int, float]) -> None:
        """Record a trial's per-epoch errors in the rungs it reached (as ASHA would have)."""
        for milestone, recorded in self.rungs:
            reached = [e for e in values if e >= milestone]
            if reached and key not in recorded:
                recorded[key] = -values[min(reached)]


class PromotionRungs:
    """Rule `promote`: each rung's recorded errors, who was promoted from it, and Algorithm 2's get_job."""

    def __init__(self, max_epochs: int, grace_period: int, reduction_factor: float) -> None:
        self.eta = float(reduction_factor)
        self.milestones = rung_epochs(max_epochs, grace_period, reduction_factor)
        self.rungs: dict[int, dict[Hashable, float]] = {m: {} for m in self.milestones}
        self.promoted: dict[int, set[Hashable]] = {m: set() for m in self.milestones}

    def seed(self, key: Hashable, values: dict[int, float]) -> None:
        """Record a stored trial at the rungs it reached; having gone past a rung means promoted."""
        for m in self.milestones:
            if m in values:
                self.rungs[m].setdefault(key, float(values[m]))
            if any(e > m for e in values):
                self.promoted[m].add(key)

    def rungs_due(self, key: Hashable, epoch: int) -> list[int]:
        """Rungs at or below `epoch` the trial has not been promoted from (it may not train past them)."""
        return [m for m in self.milestones if m <= epoch and key not in self.promoted[m]]

    def next_job(self, candidates: Iterable[Hashable]) -> tuple[int, Hashable] | None:
        """(rung, key) that Algorithm 2's get_job promotes among `candidates`, or None.

        Highest rung first; within a rung the top ⌊n/η⌋ of its n recorded errors, ties by key.
        """
        candidates = set(candidates)
        for m in reversed(self.milestones):
            ranked = sorted(self.rungs[m].items(), key=lambda kv: (kv[1], kv[0]))
            top = ranked[: int(len(ranked) // self.eta)]
            for key, _ in top:
                if key not in self.promoted[m] and key in candidates:
                    return m, key
        return None
