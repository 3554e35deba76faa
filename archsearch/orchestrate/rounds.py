"""Rounds of a race on a live study: when a look's trials have all ended, enqueue the next look's.

The decision of what to train is the planner's (`archsearch.analysis.race.next_jobs`, handed in by the `run`
command so that orchestration never imports the analysis): given the resolved questions and the stored
records it names the (candidate, seed) pairs still missing from the current look. Because it is recomputed
from storage every time, a resumed race picks up exactly where the stored trials leave it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from archsearch.space.space import grid
from archsearch.study.records import load_records
from archsearch.study.storage import quiet_optuna, retry

log = logging.getLogger("archsearch.orchestrate.rounds")

Planner = Callable[[list[Any], list[Any]], list[tuple[str, int]]]  # (questions, records) -> (name, seed) jobs


class RoundFeeder:
    """Enqueues each look of a race (a trial per (candidate, seed), with that candidate's grid params)."""

    def __init__(self, study: Any, space: Any, questions: list[Any], planner: Planner) -> None:
        self.study, self.questions, self.planner = study, questions, planner
        self.params = {c.name: dict(c.trial_params) for c in grid(space)}
        self.stopped = ""  # why the race stopped early (a trial it needs failed for good)
        self.over = False  # the planner asked for nothing more: stored trials only grow, so it never will again

    def refill(self) -> int:
        """Enqueue the current look's missing trials; 0 when the race is over (or cannot go on)."""
        if self.stopped or self.over:
            return 0
        records = load_records(self.study)
        jobs = self.planner(self.questions, records)
        self.over = not jobs
        wanted = set(jobs)
        ended = {(r.name, r.seed) for r in records if r.state in ("COMPLETE", "PRUNED")}
        failed = sorted({(r.name, r.seed, r.number) for r in records
                         if r.state == "FAIL" and (r.name, r.seed) not in ended and (r.name, r.seed) in wanted})
        if failed:
            name, seed, number = failed[0]
            self.stopped = (f"race stopped: trial #{number} ({name} seed {seed}) failed and a question needs it; "
                            "the questions it feeds stay open")
            log.warning(self.stopped)
            return 0
        with quiet_optuna():
            for name, seed in jobs:
                retry(lambda n=name, s=seed: self.study.enqueue_trial(self.params[n], user_attrs={"seed": s},
                                                                     skip_if_exists=False))
        return len(jobs)
