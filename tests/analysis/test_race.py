"""The race on synthetic seed tables: planted answers resolve, null tables rarely mislead, seeds go where needed.

Every table is a dict (name, seed) → error drawn with a seeded generator; the race sees it through the same
lookup the replay and the Ray planner use.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from archsearch.analysis.race import Job, RaceSettings, looks, nominal_levels, race, spending
from archsearch.study.questions import Question, ResolvedQuestion, Selector


def compare(a: str = "a", b: str = "b", qid: str = "c") -> ResolvedQuestion:
    return ResolvedQuestion(Question(id=qid, kind="compare", a=Selector(names=[a]), b=Selector(names=[b])),
                            a=(a,), b=(b,))


def best(names: str, qid: str = "k", margin: float = 0.0) -> ResolvedQuestion:
    return ResolvedQuestion(Question(id=qid, kind="best", candidates=Selector(names=list(names)), option="name",
                                     margin=margin), options=tuple((n, (n,)) for n in names))


def threshold(pairs: list[tuple[int, str, str]]) -> ResolvedQuestion:
    return ResolvedQuestion(Question(id="n0", kind="threshold", pairs=[(t, r) for _, t, r in pairs]),
                            pairs=tuple(pairs))


def table(means: dict[str, float], sd: float, seeds: int, rng: np.random.Generator) -> dict[tuple[str, int], float]:
    return {(n, s): m + sd * rng.standard_normal() for n, m in means.items() for s in range(seeds)}


def run(questions: list[ResolvedQuestion], t: dict, seeds: int, settings: RaceSettings):  # noqa: ANN201
    return race(questions, list(range(seeds)), settings, lambda j: t.get((j.name, j.seed)))


def test_looks_and_alpha_spending() -> None:
    assert looks(3, 10) == [3, 5, 8, 10]
    assert looks(3, 3) == [3]
    assert looks(4, 20) == [4, 6, 9, 14, 20]
    spent = spending(looks(3, 10), 0.95)
    assert math.isclose(sum(spent), 0.05) and spent[0] < 0.001 < spent[1] < spent[2]  # O'Brien-Fleming: late
    levels = nominal_levels((3, 5, 8, 10), 0.95)
    assert levels == nominal_levels((3, 5, 8, 10), 0.95)  # seeded: the same boundaries every time
    assert all(a < 0.05 for a in levels) and levels[-1] > 0.03  # the last look keeps most of the power
    assert nominal_levels((5,), 0.9) == pytest.approx((0.1,))  # one look: the grid's own level


def test_boundaries_keep_the_chance_of_any_false_crossing_at_alpha() -> None:
    """Fresh null paths (another seed than the calibration's): a paired t crossing any look's boundary ≤ α."""
    schedule, alpha = (3, 5, 8, 10), 0.05
    levels = nominal_levels(schedule, 1 - alpha)
    x = np.random.default_rng(99).standard_normal((20000, 10)) * 3.0 + 0.0
    crossed = np.zeros(len(x), dtype=bool)
    for n, a in zip(schedule, levels, strict=True):
        d = x[:, :n]
        t = np.abs(d.mean(axis=1) / (d.std(axis=1, ddof=1) / math.sqrt(n)))
        crossed |= t > stats.t.ppf(1 - a / 2, n - 1)
    assert 0.04 <= crossed.mean() <= 0.056, crossed.mean()
    naive = np.zeros(len(x), dtype=bool)  # the same four looks, each at 0.05: what spending prevents
    for n in schedule:
        d = x[:, :n]
        naive |= np.abs(d.mean(axis=1) / (d.std(axis=1, ddof=1) / math.sqrt(n))) > stats.t.ppf(0.975, n - 1)
    assert naive.mean() > 0.08


def test_planted_contrast_resolves_with_its_sign() -> None:
    """+1 point, noise 1 point per seed (each candidate's error): resolved '+' in most tables, never '-'."""
    decisions = []
    for rep in range(100):
        t = table({"a": 61.0, "b": 60.0}, 1.0, 20, np.random.default_rng(rep))
        decisions.append(run([compare()], t, 20, RaceSettings(3, 20, 0.95, 1)).answers[0].result.decision)
    assert decisions.count("-") == 0
    assert decisions.count("+") >= 60, decisions.count("+")


def test_null_tables_rarely_give_a_wrong_resolved_decision() -> None:
    """All candidates equal: a resolved compare sign or a single best is wrong; ≤ 5 % of 200 races each."""
    wrong_compare = wrong_best = 0
    for rep in range(200):
        t = table(dict.fromkeys("abcd", 60.0), 1.0, 10, np.random.default_rng([7, rep]))
        r = run([compare(), best("abcd")], t, 10, RaceSettings(3, 10, 0.95, 1))
        wrong_compare += r.answers[0].result.decision in "+-"
        wrong_best += r.answers[1].resolved
    assert wrong_compare <= 10, wrong_compare
    assert wrong_best <= 10, wrong_best


def test_seeds_go_only_where_a_question_is_open() -> None:
    """A clearly worse option leaves the best question at the first look; an easy compare stops early."""
    t = table({"a": 50.0, "b": 60.0, "c": 60.2, "x": 70.0}, 0.5, 10, np.random.default_rng(3))
    r = run([best("abc"), compare("x", "b", "easy")], t, 10, RaceSettings(3, 10, 0.95, 1))
    assert r.done and r.answers[0].resolved and r.answers[0].result.contenders == ["a"]
    assert r.answers[1].result.decision == "+"
    assert r.seeds_used["x"] < 10 and r.epochs_trained < 4 * 10
    first = r.rounds[0]
    assert first.seeds == 3 and len(first.jobs) == 12  # every candidate starts with min_seeds
    assert [j.seed for j in first.jobs[:4]] == [0, 0, 0, 0]  # seed-major: a look's seeds advance together
    assert all(j.epoch == 1 for j in r.requested)


def test_threshold_freezes_each_depth_sign_and_reports_n0() -> None:
    """Δ(8) = +3, Δ(20) = −3 with noise 0.5: both signs resolve and n₀ lies between the depths."""
    t = table({"m8": 63.0, "m20": 57.0, "r": 60.0}, 0.5, 10, np.random.default_rng(5))
    r = run([threshold([(8, "m8", "r"), (20, "m20", "r")])], t, 10, RaceSettings(3, 10, 0.95, 1))
    a = r.answers[0]
    assert a.resolved and a.result.signs == {8: "+", 20: "-"}
    assert 8 < a.result.n0 < 20


def test_an_incomplete_table_leaves_the_race_pending_with_the_missing_jobs() -> None:
    t = table({"a": 61.0, "b": 60.0}, 1.0, 10, np.random.default_rng(0))
    del t[("b", 2)]
    r = run([compare()], t, 10, RaceSettings(3, 10, 0.95, 1))
    assert not r.done and r.pending == [Job("b", 2, 1)]
    with pytest.raises(ValueError, match="fewer than max_seeds"):
        run([compare()], t, 5, RaceSettings(3, 10, 0.95, 1))
