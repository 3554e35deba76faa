"""A race's rounds on a real Optuna storage (no Ray): look by look, resumable, stopped when a needed trial fails."""

from __future__ import annotations

from pathlib import Path

import optuna
from optuna.trial import TrialState

from archsearch.analysis.race import RaceSettings, next_jobs, race_on_records
from archsearch.orchestrate.rounds import RoundFeeder
from archsearch.space.space import sample, space_from_dict
from archsearch.study.questions import CandidateInfo, Question, Selector, resolve
from archsearch.study.records import load_records

optuna.logging.set_verbosity(optuna.logging.WARNING)
SPACE = space_from_dict({"candidates": [{"name": "resnet-8"}, {"name": "multiresnet-8-k2"}, {"name": "dmrnet-8"}]})
QUESTIONS = resolve([Question(id="c", kind="compare", a=Selector(names=["multiresnet-8-k2"]),
                              b=Selector(names=["resnet-8"]))],
                    [CandidateInfo(n, n.split("-")[0], depth=8) for n in ("resnet-8", "multiresnet-8-k2", "dmrnet-8")])


class Config:  # what next_jobs reads of a StudyConfig
    seed_list = [10, 11, 12, 13, 14]
    max_epochs = 2

    class search:  # noqa: N801
        min_seeds, max_seeds, confidence = 3, 5, 0.95


def planner(questions: list, records: list) -> list[tuple[str, int]]:
    return next_jobs(Config, questions, records)


def run_waiting(study: optuna.Study, error: dict[str, float], fail: set[tuple[str, int]] = frozenset()) -> list:
    """Train every WAITING trial (fake: its candidate's fixed error), as the searcher would store it."""
    done = []
    while any(t.state == TrialState.WAITING for t in study.get_trials(deepcopy=False)):
        trial = study.ask()
        spec = sample(trial, SPACE)
        seed = trial.user_attrs["seed"]
        for k, v in (("name", spec.name), ("family", spec.family), ("epochs", 2), ("max_epochs", 2)):
            trial.set_user_attr(k, v)
        if (spec.name, seed) in fail:
            study.tell(trial, state=TrialState.FAIL)
        else:
            trial.set_user_attr("full_fidelity", True)
            study.tell(trial, error[spec.name] + 0.01 * seed)
        done.append((spec.name, seed))
    return done


def test_looks_are_enqueued_one_after_another_and_a_resume_continues_the_same_race(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'race.db'}"
    study = optuna.create_study(study_name="r", storage=url)
    feeder = RoundFeeder(study, SPACE, QUESTIONS, planner)
    assert feeder.refill() == 6  # look 1: both candidates of the question, 3 seeds; dmrnet-8 is never asked
    first = run_waiting(study, {"multiresnet-8-k2": 60.0, "resnet-8": 60.0})
    assert first == [(n, s) for s in (10, 11, 12) for n in ("multiresnet-8-k2", "resnet-8")]
    resumed = RoundFeeder(optuna.load_study(study_name="r", storage=url), SPACE, QUESTIONS, planner)  # a new driver
    assert resumed.refill() == 4  # look 2 (5 seeds): the open question gets seeds 13 and 14
    run_waiting(study, {"multiresnet-8-k2": 60.0, "resnet-8": 60.0})
    assert resumed.refill() == 0 and not resumed.stopped  # max_seeds reached: the race is over
    result = race_on_records(QUESTIONS, load_records(study), Config.seed_list, RaceSettings(3, 5, 0.95, 2))
    assert result.done and result.seeds_used == {"multiresnet-8-k2": 5, "resnet-8": 5}


def test_a_needed_trial_that_failed_stops_the_race_with_a_reason(tmp_path: Path) -> None:
    study = optuna.create_study(study_name="r", storage=f"sqlite:///{tmp_path / 'race.db'}")
    feeder = RoundFeeder(study, SPACE, QUESTIONS, planner)
    feeder.refill()
    run_waiting(study, {"multiresnet-8-k2": 60.0, "resnet-8": 60.0}, fail={("resnet-8", 11)})
    assert feeder.refill() == 0
    assert feeder.stopped.startswith("race stopped: trial #3 (resnet-8 seed 11) failed")
