"""Declared questions: selectors, one reference per treatment, one-line errors for ambiguous questions, and
answers computed only from each question's own candidates."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
from pydantic import ValidationError

from archsearch.analysis.questions import answer_all, as_json
from archsearch.errors import ConfigError
from archsearch.study.questions import CandidateInfo, Question, resolve

C = CandidateInfo
SPACE = [
    C("resnet-110", "resnet", "1.7M", True, (), 110, 1),
    C("resnet-56-c24", "resnet", "1.7M", True, (), 56, 1),
    C("multiresnet-14-k10", "multiresnet", "1.7M", True, ("paper",), 14, 10),
    C("multiresnet-26-k4", "multiresnet", "1.7M", True, (), 26, 4),
    C("multiresnet-8-k23", "multiresnet", "1.9M", False, ("paper",), 8, 23),  # off budget
    C("dmrnet-50-K2", "dmrnet", "1.5M", True, ("fig7_setting1", "fig7_setting2"), 50, 2),
    C("dmrnet-50-K4-c12", "dmrnet", "1.5M", True, ("fig7_setting1",), 50, 4),
    C("dmrnet-26-K4", "dmrnet", "1.5M", True, ("fig7_setting2",), 26, 4),
]


def q(**kw) -> Question:
    return Question(**kw)


def test_threshold_with_one_reference_per_budget() -> None:
    [rq] = resolve([q(id="n0", kind="threshold", reference={"names": ["resnet-110"]},
                      treatment={"family": "multiresnet", "budget": "1.7M"})], SPACE)
    assert rq.pairs == ((14, "multiresnet-14-k10", "resnet-110"), (26, "multiresnet-26-k4", "resnet-110"))


def test_off_budget_candidates_never_feed_a_budgeted_answer() -> None:
    [rq] = resolve([q(id="n0", kind="threshold", reference={"names": ["resnet-110"]},
                      treatment={"family": "multiresnet", "budget": "1.7M"})], SPACE)
    assert "multiresnet-8-k23" not in rq.names  # its label says 1.9M and it is off budget


def test_explicit_pairs_and_groups() -> None:
    pairs, fig7 = resolve([
        q(id="pairs", kind="threshold",
          pairs=[("multiresnet-14-k10", "resnet-110"), ("multiresnet-8-k23", "resnet-110")]),
        q(id="fig7", kind="best", candidates={"group": "fig7_setting1"}, option="K")], SPACE)
    assert [d for d, _, _ in pairs.pairs] == [8, 14]
    assert fig7.options == ((2, ("dmrnet-50-K2",)), (4, ("dmrnet-50-K4-c12",)))  # setting 2 never pooled in


@pytest.mark.parametrize("question, reason", [
    (dict(id="amb", kind="threshold", reference={"family": "resnet", "budget": "1.7M"},
          treatment={"family": "multiresnet", "budget": "1.7M"}),
     "treatment multiresnet-14-k10 (budget 1.7M) needs exactly one reference, got resnet-110, resnet-56-c24"),
    (dict(id="nothing", kind="best", candidates={"family": "warpnet"}, option="K"), "selects no candidate"),
    (dict(id="one", kind="best", candidates={"group": "fig7_setting2", "budget": "1.5M"}, option="depth"),
     None),
    (dict(id="same", kind="compare", a={"family": "resnet"}, b={"names": ["resnet-110"]}),
     "a and b both select resnet-110"),
    (dict(id="unknown", kind="threshold", pairs=[("multiresnet-20-k2", "resnet-110")]),
     "not candidates of the space: multiresnet-20-k2"),
])
def test_ambiguous_or_empty_questions_are_one_line_config_errors(question, reason) -> None:
    if reason is None:  # fig7 setting 2 has two depths: a valid best-depth question
        assert resolve([q(**question)], SPACE)[0].options
        return
    with pytest.raises(ConfigError) as err:
        resolve([q(**question)], SPACE, where="study.yaml: questions")
    text = str(err.value)
    assert reason in text and text.startswith("study.yaml: questions[0]") and "\n" not in text


@pytest.mark.parametrize("question, reason", [
    (dict(id="x", kind="best", candidates={"family": "dmrnet"}), "a best question needs option"),
    (dict(id="x", kind="compare", a={"names": ["a"]}, b={"names": ["b"]}, option="K"), "does not take option"),
    (dict(id="x", kind="threshold", reference={}, treatment={"family": "multiresnet"}), "needs at least one of"),
    (dict(id="bad id!", kind="compare", a={"names": ["a"]}, b={"names": ["b"]}), "id 'bad id!'"),
])
def test_malformed_questions_are_refused(question, reason) -> None:
    with pytest.raises(ValidationError, match=reason):
        Question(**question)


@dataclass
class Rec:
    name: str
    seed: int
    value: float
    number: int = 0
    usable: bool = True


def test_answers_use_only_their_own_candidates_and_seeds() -> None:
    rng = np.random.default_rng(0)
    means = {"resnet-110": 40.0, "resnet-56-c24": 30.0, "multiresnet-14-k10": 42.0, "multiresnet-26-k4": 37.0,
             "dmrnet-50-K2": 40.0, "dmrnet-50-K4-c12": 40.0}
    records = [Rec(n, s, float(rng.normal(m, 0.3))) for n, m in means.items() for s in range(6)]
    records.append(Rec("resnet-110", 99, 0.0, usable=False))  # a pruned/partial trial: never counts
    resolved = resolve([
        q(id="n0", kind="threshold", reference={"names": ["resnet-110"]}, treatment={"family": "multiresnet",
                                                                                    "budget": "1.7M"}),
        q(id="k", kind="best", candidates={"group": "fig7_setting1"}, option="K", margin=2.0),
        q(id="few", kind="compare", a={"names": ["dmrnet-26-K4"]}, b={"names": ["dmrnet-50-K2"]})], SPACE)
    n0, best, few = answer_all(resolved, records)
    assert n0.seeds == {"multiresnet-14-k10": 6, "multiresnet-26-k4": 6, "resnet-110": 6}  # not resnet-56-c24
    assert n0.result.signs == {14: "+", 26: "-"} and 14 < n0.result.n0 < 26 and n0.resolved
    assert best.result.equivalent and best.resolved and "equivalent within 2 points" in best.line()
    assert few.result is None and "no counting trial yet for dmrnet-26-K4" in few.line()
    assert as_json(n0)["signs"] == {"14": "+", "26": "-"}
    assert as_json(best)["contenders"] == [2, 4] or as_json(best)["contenders"] == [4, 2]
