"""ASHA replayed offline on finished curves: at which epoch would each trial have stopped?

Training is deterministic on CPU, so an ASHA trial's per-epoch errors equal those of the grid trial
with the same (architecture, seed); only the asynchronous order needs simulating. `slots` trials run
at once, started in `order`, each epoch lasting its architecture's mean epoch time (the same for its
seeds, so seeds started together report in start order). The decisions are the schedulers' own
(`archsearch.orchestrate.asha`), so a what-if on other settings asks exactly what a run would have.

Records are any dataclass with `number`, `name`, `intermediate` ({epoch: error}); the replay returns
copies with `state`, `epochs`, `full_fidelity`, `value` and `intermediate` as that run would store them.
"""

from __future__ import annotations

import dataclasses
import heapq
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import numpy as np

from archsearch.orchestrate.asha import PromotionRungs, StopRungs

Replay = Callable[..., list]


def epoch_time(seconds: dict[tuple[str, int], float]) -> Callable[[str], float]:
    """Seconds per epoch of an architecture in the replays: the mean over its trials (1 if unknown)."""
    per_name: dict[str, list[float]] = defaultdict(list)
    for (name, _), sec in seconds.items():
        per_name[name].append(sec)
    return lambda name: float(np.mean(per_name[name])) if per_name.get(name) else 1.0


def replay_stop(grid: list, seconds: dict, *, max_epochs: int, grace: int, rf: float, slots: int,
                order: list) -> list:
    """Rule `stop` (Ray's ASHA): a trial reports every epoch and stops at once when a rung says so."""
    rule = StopRungs(max_epochs, grace, rf)
    epoch_s = epoch_time(seconds)
    queue = list(order)
    events: list = []
    seq = 0
    stopped: dict[int, int] = {}

    def start(now: float) -> None:
        nonlocal seq
        if queue:
            r = queue.pop(0)
            heapq.heappush(events, (now + epoch_s(r.name), seq, r.number, 1, r))
            seq += 1

    for _ in range(slots):
        start(0.0)
    while events:
        now, _, number, epoch, r = heapq.heappop(events)
        stop = epoch >= max_epochs or rule.decide(number, epoch, -r.intermediate[epoch])
        if stop:
            stopped[number] = epoch
            start(now)
        else:
            heapq.heappush(events, (now + epoch_s(r.name), seq, number, epoch + 1, r))
            seq += 1
    return [_as_replayed(r, stopped[r.number], max_epochs) for r in grid]


def replay_promote(grid: list, seconds: dict, *, max_epochs: int, grace: int, rf: float, slots: int,
                   order: list) -> list:
    """Rule `promote` (Li et al. 2020): train to the next rung and wait there; a free slot promotes first.

    A free slot takes `PromotionRungs.next_job` among the trials waiting at a rung and only when none
    is due starts the next new trial. Trials are keyed by their start position, so ties between equal
    errors go to the earlier-started trial, as Ray's trial ids (a creation counter) order them.
    """
    rungs = PromotionRungs(max_epochs, grace, rf)
    stops = [*rungs.milestones, max_epochs]
    epoch_s = epoch_time(seconds)
    waiting: set[int] = set()  # start positions of trials paused at a rung
    reached: dict[int, int] = {}
    queue = list(range(len(order)))

    def next_job() -> tuple[int, int, int] | None:  # (start position, from epoch, to epoch)
        job = rungs.next_job(waiting)
        if job is not None:
            m, key = job
            rungs.promoted[m].add(key)
            waiting.discard(key)
            return key, m, stops[stops.index(m) + 1]
        if queue:
            return queue.pop(0), 0, stops[0]
        return None

    events: list = []
    seq = running = 0

    def fill(now: float) -> None:  # every free slot takes the next job, if there is one
        nonlocal seq, running
        while running < slots and (job := next_job()) is not None:
            heapq.heappush(events, (now + epoch_s(order[job[0]].name) * (job[2] - job[1]), seq, job))
            seq += 1
            running += 1

    fill(0.0)
    while events:
        now, _, (key, _, to) = heapq.heappop(events)
        running -= 1
        reached[order[key].number] = to
        if to < max_epochs:
            rungs.rungs[to][key] = order[key].intermediate[to]
            waiting.add(key)
        fill(now)
    return [_as_replayed(r, reached.get(r.number, 0), max_epochs) for r in grid]


REPLAYS: dict[str, tuple[str, Replay]] = {"stop": ("stop (Ray)", replay_stop),
                                          "promote": ("pause & promote (Li et al.)", replay_promote)}


def _as_replayed(record: Any, epoch: int, max_epochs: int) -> Any:
    """The record as the replayed run would store it: stopped (PRUNED) or finished at `epoch`."""
    full = epoch >= max_epochs
    return dataclasses.replace(record, state="COMPLETE" if full else "PRUNED", epochs=epoch, full_fidelity=full,
                               value=record.intermediate[epoch] if full else None,
                               intermediate={k: v for k, v in record.intermediate.items() if k <= epoch})
