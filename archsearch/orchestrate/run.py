"""Run a study on Ray Tune with ASHA, keeping Optuna's storage the honest source of truth.

One session: check the study (`prepare`), start or join Ray, take the driver lock, mark the trials a
crash left RUNNING as interrupted and queue their continuations, rebuild ASHA's rungs from storage,
then let Tune run trials until n_trials / the time budget / Ctrl-C. Resume never uses
`Tuner.restore`: a new Ray experiment starts on the same Optuna study (see `archsearch.study.storage`),
so already-finished trials are never told twice.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from archsearch.errors import ConfigError
from archsearch.orchestrate import preflight
from archsearch.orchestrate.asha import rung_epochs
from archsearch.orchestrate.prepare import ABORT_ENV, inject_nan, prepare, prewarm_data, searcher_slots, trial_static
from archsearch.orchestrate.progress import StudyProgress
from archsearch.orchestrate.ray_backend import (
    PromotingASHA,
    check_cluster,
    cluster_slots,
    init_ray,
    make_scheduler,
    make_tuner,
    shutdown_ray,
)
from archsearch.orchestrate.rounds import Planner, RoundFeeder
from archsearch.orchestrate.searcher import StudySearcher
from archsearch.orchestrate.signals import Stopped, stop_like_ctrl_c
from archsearch.study.config import StudyConfig
from archsearch.study.driver import DriverLock
from archsearch.study.lifecycle import (
    Prepared,
    enqueue_continuations,
    mark_interrupted,
    open_study,
    seed_rungs,
    summary,
)
from archsearch.study.records import load_records
from archsearch.study.storage import redact


@dataclass
class _Session:
    """What one `run_study` call drives: the scheduler, the searcher and the progress view."""

    scheduler: Any
    searcher: StudySearcher
    progress: StudyProgress
    slots: int


@dataclass
class _Held:
    """The driver lock once taken, and the state it is released with."""

    lock: DriverLock | None = None
    state: str = "failed"


def run_study(config: StudyConfig, *, resume: bool = False, address: str | None = None, console: Any = None,
              num_cpus: int | None = None, num_gpus: int | None = None,
              planner: Planner | None = None) -> dict[str, Any]:
    """Run (or resume) a study to its n_trials / time budget; returns `storage.summary` plus run facts.

    A race (`search.method: race`) needs `planner` (`archsearch.analysis.race.next_jobs` bound to the config):
    it names each look's trials from the stored ones.

    SIGTERM and SIGHUP stop it like Ctrl-C (`signals`); `exit_code` in the result is 128 + that signal.
    A second signal raises `Stopped` at once (the driver lock is still released).
    """
    t_start = time.time()
    if config.search is not None and config.search.method == "race" and planner is None:
        raise ConfigError(f"{config.path}: search.method: race needs a planner (archsearch.analysis.race.next_jobs; "
                          "`archsearch run` passes it)")
    preflight.check(config, address=address, num_cpus=num_cpus)
    prep = prepare(config, resume=resume, address=address)
    if not address:
        prewarm_data(config)
    init_ray(address, num_cpus=num_cpus, num_gpus=num_gpus)
    held = _Held()
    try:
        with stop_like_ctrl_c() as stops:
            try:
                out = _drive(config, prep, address, t_start, console, held, planner)
            except KeyboardInterrupt:
                held.state = "interrupted"
                raise Stopped(stops.first or signal.SIGINT) from None
        out["exit_code"] = stops.exit_code() if out["session_interrupted"] else 0
        return out
    finally:
        if held.lock is not None:
            held.lock.release(held.state)
        shutdown_ray()


def _drive(config: StudyConfig, prep: Prepared, address: str | None, t_start: float, console: Any,
           held: _Held, planner: Planner | None = None) -> dict[str, Any]:
    """Take the driver lock, continue what a crash left, and let Tune run trials until the study ends."""
    check_cluster(config)
    study = open_study(prep)
    held.lock = DriverLock(prep.storage, study._study_id, config.run_dir / "driver.lock")
    held.lock.acquire()
    interrupted = mark_interrupted(study)
    continued = enqueue_continuations(study)
    feeder = RoundFeeder(study, prep.space, prep.questions, planner) if planner is not None else None
    session = _start_session(config, prep, study, address, t_start, console, feeder)
    run_name = time.strftime("session-%Y%m%d-%H%M%S")
    tuner = make_tuner(config, session.searcher, session.scheduler, run_name)
    t_fit = time.time()
    # With a custom searcher Tune keeps one trial pending at a time, so slot 2 would wait for trial
    # 1's actor to start (~4 s); the searcher itself never has more trials live than slots.
    with session.progress, _env_unless_set("TUNE_MAX_PENDING_TRIALS_PG", str(max(1, session.slots))):
        try:
            if session.searcher.may_start_new():  # a finished study: no Tune experiment (nor its sync errors)
                tuner.fit()
        finally:
            session.searcher.finalize()
    t_end = time.time()
    searcher = session.searcher
    held.state = "interrupted" if searcher.interrupted else "finished"
    out = summary(study)
    out.update(
        storage=redact(config.storage_url), run_dir=str(config.run_dir),
        ray_dir=str(config.run_dir / "ray" / run_name),
        session_interrupted=searcher.interrupted, marked_interrupted=interrupted,
        continued=[c[0] for c in continued],
        started=searcher.started, wall_seconds=t_end - t_start, fit_seconds=t_end - t_fit, slots=session.slots,
        trial_seconds=searcher.trial_seconds, slot_spans=searcher.slot_spans,
        race_note=feeder.stopped if feeder is not None else "",
    )
    return out


def _start_session(config: StudyConfig, prep: Prepared, study: Any, address: str | None, t_start: float,
                   console: Any, feeder: RoundFeeder | None = None) -> _Session:
    """ASHA with its rungs rebuilt from storage, the progress view, and the searcher wired to both."""
    scheduler = make_scheduler(config)
    if scheduler is not None:
        seed_rungs(scheduler, study)
    slots = cluster_slots(config)
    deadline = t_start + config.time_budget if config.time_budget else None
    kwargs: dict[str, Any] = {"console": console} if console is not None else {}
    asha = config.asha
    rungs = rung_epochs(config.max_epochs, asha.grace_period, asha.reduction_factor) if asha is not None else []
    planned = config.n_trials
    if planned is None and feeder is not None:  # at most: every candidate a question needs x max_seeds
        planned = len(set().union(*(rq.names for rq in prep.questions))) * config.search.max_seeds
    elif planned is None and prep.grid is not None:  # a grid study ends after every point x seed
        planned = len(prep.grid) * len(config.seed_list)
    progress = StudyProgress(config.name, planned, config.max_epochs, slots=slots, deadline=deadline,
                             records=load_records(study), rungs=rungs,
                             reduction_factor=None if asha is None else float(asha.reduction_factor), **kwargs)
    searcher = StudySearcher(study, prep.space, config, scheduler=scheduler, progress=progress,
                             static=trial_static(config), n_trials=config.n_trials, deadline=deadline,
                             inject_nan=inject_nan(), slots=searcher_slots(config, address, slots),
                             inject_abort=inject_nan(ABORT_ENV), feeder=feeder)
    if isinstance(scheduler, PromotingASHA):
        scheduler.may_start_new = searcher.may_start_new
        scheduler.may_promote = lambda: deadline is None or time.time() < deadline
        scheduler.on_pause, scheduler.on_promote = searcher.trial_paused, searcher.trial_promoted
    return _Session(scheduler, searcher, progress, slots)


@contextlib.contextmanager
def _env_unless_set(key: str, value: str) -> Iterator[None]:
    """Set an environment variable for the block unless the user set it already."""
    if key in os.environ:
        yield
        return
    os.environ[key] = value
    try:
        yield
    finally:
        os.environ.pop(key, None)
