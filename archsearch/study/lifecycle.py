"""A study's life: open or create it, resume it after a crash, and say where it stands.

A resume reads the storage, turns RUNNING trials that no live driver owns into FAIL ("interrupted")
and enqueues their continuations (same params and seed, `resumed_from` = old number, starting from
the old checkpoint); `seed_rungs` then refills ASHA's rungs from the stored per-epoch values. Ray's
experiment state is never restored.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from archsearch.errors import ConfigError
from archsearch.space.space import load_space, space_from_dict
from archsearch.study.asked import QUESTIONS_ATTR, to_json
from archsearch.study.config import StudyConfig
from archsearch.study.questions import ResolvedQuestion
from archsearch.study.records import (
    COUNTED_STATES,
    INTERRUPTED,
    best_architecture,
    intermediate_values,
    load_records,
)
from archsearch.study.storage import open_storage, quiet_optuna, redact, retry, storage_file

try:
    from archsearch import __version__
except ImportError:  # a stale editable install can expose the package as a namespace
    from importlib.metadata import version

    __version__ = version("archsearch")


# ---------------------------------------------------------------------------------- open


@dataclass
class Prepared:
    """A study opened and checked, nothing written yet."""

    config: StudyConfig
    space: Any
    storage: Any
    exists: bool
    fingerprint: str
    grid: list[dict[str, Any]] | None
    questions: list[ResolvedQuestion]  # resolved by `prepare`, stored with the study when it opens


def load_space_of(config: StudyConfig) -> Any:
    if isinstance(config.space, dict):
        return space_from_dict(config.space, source=f"{config.path}: space")
    return load_space(config.space_path)


def make_sampler(config: StudyConfig) -> Any:
    with quiet_optuna():
        if config.sampler == "tpe":
            return optuna.samplers.TPESampler(seed=config.sampler_seed, multivariate=True, group=True)
        if config.sampler == "nsga2":
            return optuna.samplers.NSGAIISampler(seed=config.sampler_seed)
        return optuna.samplers.RandomSampler(seed=config.sampler_seed)  # random; grid points are enqueued


def open_study(prep: Prepared) -> Any:
    """Create the study (attrs; grid points enqueued) or load it; the first write of a run."""
    config = prep.config
    sampler = make_sampler(config)
    questions = to_json(prep.questions)
    if prep.exists:
        study = optuna.load_study(study_name=config.name, storage=prep.storage, sampler=sampler)
        study.set_user_attr(QUESTIONS_ATTR, questions)  # what this invocation asks (may be edited between runs)
        return study
    study = optuna.create_study(study_name=config.name, storage=prep.storage, sampler=sampler,
                                directions=["minimize"] * len(config.objective_names))
    for key, value in (("space_fingerprint", prep.fingerprint), ("objectives", config.objective_names),
                       ("train_fingerprint", config.train_fingerprint()),
                       ("archsearch_version", __version__), ("config", config.snapshot()),
                       ("space_file", str(config.space_path) if config.space_path else "inline"),
                       (QUESTIONS_ATTR, questions)):
        study.set_user_attr(key, value)
    racing = config.search is not None and config.search.method == "race"  # a race enqueues look by look
    if prep.grid is not None and not racing:
        points = prep.grid
        if config.n_trials is not None:
            points = points[: -(-config.n_trials // len(config.seed_list))]
        with quiet_optuna():
            for params in points:
                for seed in config.seed_list:
                    study.enqueue_trial(params, user_attrs={"seed": seed}, skip_if_exists=False)
    return study


def load_existing_study(storage_url: str, study_name: str, *, where: str = "export") -> Any:
    """Load a study that must exist, with one-line errors for a missing database or study (nothing is created)."""
    db = storage_file(storage_url)
    if db is not None and not db.is_file():
        raise ConfigError(f"no study database at {db} (storage {redact(storage_url)})")
    storage = open_storage(storage_url, where=where, create=False)
    try:
        return optuna.load_study(study_name=study_name, storage=storage)
    except KeyError:
        names = optuna.get_all_study_names(storage)
        raise ConfigError(f"no study {study_name!r} in {redact(storage_url)}; "
                          f"studies there: {', '.join(names) or 'none'}") from None


# ---------------------------------------------------------------------------------- resume


def mark_interrupted(study: Any, numbers: list[int] | None = None) -> list[int]:
    """RUNNING trials (all, or those numbered) → FAIL with fail_reason "interrupted"; their numbers."""
    done = []
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if numbers is not None and t.number not in numbers:
            continue
        retry(lambda t=t: study._storage.set_trial_user_attr(t._trial_id, "fail_reason", INTERRUPTED))
        retry(lambda t=t: study._storage.set_trial_state_values(t._trial_id, TrialState.FAIL))
        done.append(t.number)
    return done


def checkpoint_of(trial: Any) -> str | None:
    """The checkpoint a continuation of `trial` starts from: its own, else the one it started from."""
    for key in ("checkpoint", "resume_checkpoint"):
        path = trial.user_attrs.get(key)
        if path and Path(path).is_file():
            return str(path)
    return None


def enqueue_continuations(study: Any) -> list[tuple[int, str | None]]:
    """Enqueue one continuation per interrupted trial that has none yet; [(old number, checkpoint)]."""
    trials = study.get_trials(deepcopy=False)
    continued = {t.user_attrs.get("resumed_from") for t in trials}
    out = []
    for t in trials:
        if t.state != TrialState.FAIL or t.user_attrs.get("fail_reason") != INTERRUPTED or t.number in continued:
            continue
        ckpt = checkpoint_of(t)
        attrs = {"seed": t.user_attrs.get("seed"), "resumed_from": t.number, "resume_checkpoint": ckpt}
        retry(lambda t=t, attrs=attrs: study.enqueue_trial(t.params, user_attrs=attrs, skip_if_exists=False))
        out.append((t.number, ckpt))
    return out


def seed_rungs(scheduler: Any, study: Any) -> int:
    """Feed every stored trial's per-epoch errors into ASHA's rungs (continued trials seed themselves)."""
    trials = study.get_trials(deepcopy=False)
    continued = {t.user_attrs.get("resumed_from") for t in trials if t.state.name == "WAITING"}
    n = 0
    for t in trials:
        if t.state.name in ("WAITING", "RUNNING") or t.number in continued:
            continue
        values = intermediate_values(t)
        if values:
            scheduler.seed(f"optuna-{t.number}", values)
            n += 1
    return n


# ---------------------------------------------------------------------------------- where it stands


def state_counts(study: Any) -> Counter:
    return Counter(t.state.name for t in study.get_trials(deepcopy=False))


def summary(study: Any) -> dict[str, Any]:
    """Counts by state and the best architecture (lowest seed mean over counting trials), as plain data."""
    counts = state_counts(study)
    best = best_architecture(load_records(study))
    return {
        "study": study.study_name,
        "counts": dict(counts),
        "interrupted_trials": sum(t.state.name == "FAIL" and t.user_attrs.get("fail_reason") == INTERRUPTED
                                  for t in study.get_trials(deepcopy=False)),
        "counted": sum(counts.get(s, 0) for s in COUNTED_STATES),
        "best": None if best is None else {
            "name": best.name, "val_error": best.mean, "std": best.std, "seeds": best.seeds,
            "number": best.best.number,
        },
    }


def summary_of_storage(storage: Any, sid: int) -> str:
    counts = Counter(t.state.name for t in storage.get_all_trials(sid, deepcopy=False))
    return ", ".join(f"{v} {k.lower()}" for k, v in sorted(counts.items()))
