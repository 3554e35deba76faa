"""ASHA's rules in one place: rung arithmetic, the stop and promote rules, the offline replays, and the Ray
schedulers deciding exactly as the replays do (driven directly, without starting Ray)."""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import pytest
from ray.tune.schedulers.async_hyperband import _Bracket

from archsearch.orchestrate.asha import PromotionRungs, StopRungs, asha_rungs, expected_epochs, rung_epochs
from archsearch.orchestrate.ray_backend import PromotingASHA, RungASHA
from archsearch.orchestrate.replay import REPLAYS, replay_promote, replay_stop


@dataclass
class Curve:
    """The replays' view of a finished trial (the fields they read and rewrite)."""

    number: int
    name: str
    intermediate: dict[int, float]
    state: str = "COMPLETE"
    epochs: int = 0
    full_fidelity: bool = True
    value: float | None = None


# Hand-made curves, 4 epochs, rungs at epochs 1 and 2 (grace 1, η = 2); trial 0 is bad but starts first.
CURVES = {0: [60.0, 55.0, 50.0, 45.0], 1: [40.0, 30.0, 25.0, 20.0], 2: [50.0, 45.0, 40.0, 38.0],
          3: [45.0, 40.0, 35.0, 33.0]}


def curves() -> list[Curve]:
    return [Curve(n, f"net-{n}", {e: v for e, v in enumerate(errs, start=1)}) for n, errs in CURVES.items()]


def test_rungs_for_known_settings() -> None:
    assert asha_rungs(16, 1, 4) == [1, 4, 16] and rung_epochs(16, 1, 4) == [1, 4]  # never a rung at the last epoch
    assert rung_epochs(4, 1, 2) == [1, 2]
    assert rung_epochs(10, 1, 2.5) == [1, 3, 7]  # 2.5 and 6.25 round up: `epoch >= milestone` is unchanged
    assert rung_epochs(3, 3, 2) == []
    assert expected_epochs(4, [1, 2], 2) == pytest.approx(1 + 0.5 + 0.25 * 2)


@pytest.mark.parametrize(("max_t", "grace", "rf"), [(16, 1, 4), (100, 1, 3), (200, 10, 4), (10, 1, 2.5), (9, 2, 3)])
def test_rungs_are_rays_bracket(max_t: int, grace: int, rf: float) -> None:
    ray_rungs = [m for m, _ in _Bracket(grace, max_t, rf, 0)._rungs if m < max_t]
    assert StopRungs(max_t, grace, rf).milestones == sorted(int(-(-m // 1)) for m in ray_rungs)


def test_stop_rule_decides_as_rays_bracket() -> None:
    """Random curves arriving interleaved: `StopRungs.decide` stops exactly when Ray's `_Bracket` does."""
    rng = random.Random(0)

    @dataclass
    class T:
        trial_id: str

    for rf, grace in ((2, 1), (3, 1), (4, 2)):
        ours = StopRungs(12, grace, rf)
        ray = _Bracket(grace, 12, rf, 0, stop_last_trials=False)
        ray._rungs = [(m, rec) for m, rec in ray._rungs if m < 12]
        live = {f"t{i}": 0 for i in range(20)}
        while live:
            tid = rng.choice(sorted(live))
            live[tid] += 1
            reward = -rng.uniform(10, 90)
            stop = ours.decide(tid, live[tid], reward)
            assert stop == (ray.on_result(T(tid), live[tid], reward) == "STOP")
            if stop or live[tid] == 12:
                del live[tid]


def test_replay_under_rule_stop_by_hand() -> None:
    """One slot: trials 0 and 1 meet empty or weak rungs and finish; 2 is below rung 2's median (−42.5)."""
    out = replay_stop(curves(), {}, max_epochs=4, grace=1, rf=2, slots=1, order=curves())
    assert [r.epochs for r in out] == [4, 4, 2, 4]
    assert [r.state for r in out] == ["COMPLETE", "COMPLETE", "PRUNED", "COMPLETE"]
    assert out[2].intermediate == {1: 50.0, 2: 45.0} and out[2].value is None and out[3].value == 33.0


def test_replay_under_rule_promote_by_hand() -> None:
    """One slot, Algorithm 2: 0 waits at rung 1 for ever (never in the top half); 1 is promoted twice;
    3 (second best at rung 1 of 4) is promoted once and waits at rung 2 behind 1."""
    out = replay_promote(curves(), {}, max_epochs=4, grace=1, rf=2, slots=1, order=curves())
    assert [r.epochs for r in out] == [1, 4, 1, 2]
    assert [r.state for r in out] == ["PRUNED", "COMPLETE", "PRUNED", "PRUNED"]


def test_replay_ties_go_to_the_earlier_started_trial() -> None:
    ladder = PromotionRungs(4, 1, 2)
    ladder.rungs[1].update({1: 50.0, 0: 50.0, 2: 60.0, 3: 70.0})
    assert ladder.next_job({0, 1, 2, 3}) == (1, 0)


# ---------------------------------------------------------------------------------- the schedulers decide the same


@dataclass
class FakeTrial:
    trial_id: str
    status: str = "PENDING"
    config: dict = field(default_factory=dict)

    def is_finished(self) -> bool:
        return self.status in ("TERMINATED", "ERROR")


class FakeController:
    def __init__(self) -> None:
        self.trials: list[FakeTrial] = []

    def get_trials(self) -> list[FakeTrial]:
        return self.trials

    def stop_trial(self, trial: FakeTrial) -> None:
        trial.status = "TERMINATED"


def scheduler_stop_epochs(max_epochs: int, grace: int, rf: float) -> list[int]:
    """RungASHA on one slot: each trial reports epoch by epoch until it is stopped or finishes."""
    asha, reached = RungASHA(max_epochs, grace, rf), []
    for number, errs in CURVES.items():
        trial = FakeTrial(f"t{number}")
        asha.on_trial_add(None, trial)
        for epoch, err in enumerate(errs, start=1):
            if asha.on_trial_result(None, trial, {"epoch": epoch, "val_error": err}) == "STOP":
                break
        reached.append(epoch)
    return reached


def scheduler_promote_epochs(max_epochs: int, grace: int, rf: float) -> list[int]:
    """PromotingASHA on one slot, as Tune and the searcher drive it: a due promotion first, else a new trial."""
    asha, ctl = PromotingASHA(max_epochs, grace, rf), FakeController()
    new = [FakeTrial(f"t{n}") for n in CURVES]
    asha.may_start_new = lambda: bool(new)
    reached = {t.trial_id: 0 for t in new}
    while True:
        if not asha.promotion_waiting() and new:
            ctl.trials.append(new.pop(0))
        trial = asha.choose_trial_to_run(ctl)
        if trial is None:
            break
        trial.status = "RUNNING"
        errs = CURVES[int(trial.trial_id[1:])]
        for epoch in range(reached[trial.trial_id] + 1, max_epochs + 1):
            reached[trial.trial_id] = epoch
            if asha.on_trial_result(ctl, trial, {"epoch": epoch, "val_error": errs[epoch - 1]}) == "PAUSE":
                trial.status = "PAUSED"
                break
        else:
            trial.status = "TERMINATED"
    assert all(t.status == "TERMINATED" for t in ctl.trials)  # the paused ones stopped at the end: PRUNED
    return [reached[f"t{n}"] for n in CURVES]


@pytest.mark.parametrize(("grace", "rf"), [(1, 2), (1, 3), (2, 2)])
def test_schedulers_and_replays_decide_the_same(grace: int, rf: float) -> None:
    for rule, scheduled in (("stop", scheduler_stop_epochs), ("promote", scheduler_promote_epochs)):
        replayed = REPLAYS[rule][1](curves(), {}, max_epochs=4, grace=grace, rf=rf, slots=1, order=curves())
        assert scheduled(4, grace, rf) == [r.epochs for r in replayed], rule
    assert scheduler_stop_epochs(4, 1, 2) == [4, 4, 2, 4] and scheduler_promote_epochs(4, 1, 2) == [1, 4, 1, 2]
