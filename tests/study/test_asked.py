"""Which questions a study asks: derived per budget and group (never pooling settings), declared ones refused
with one line when ambiguous, and stored with the study."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from archsearch.cli import main
from archsearch.errors import ConfigError
from archsearch.space.space import grid, space_from_dict
from archsearch.study.asked import derive_questions, from_json, study_questions, to_json
from archsearch.study.config import load_study
from archsearch.study.questions import CandidateInfo

REPO = Path(__file__).resolve().parents[2]
C = CandidateInfo


def test_derived_questions_never_pool_settings() -> None:
    infos = [C("resnet-56", "resnet", "1M", True, (), 56, 1),
             C("multiresnet-8-k4", "multiresnet", "1M", True, (), 8, 4),
             C("multiresnet-14-k2", "multiresnet", "1M", True, (), 14, 2),
             C("dmrnet-50-K2", "dmrnet", "1.5M", True, ("s1", "s2"), 50, 2),
             C("dmrnet-50-K4-c12", "dmrnet", "1.5M", True, ("s1",), 50, 4),
             C("dmrnet-26-K4", "dmrnet", "1.5M", True, ("s2",), 26, 4),
             C("resnet-110", "resnet", "1.9M", False, (), 110, 1)]  # off budget: never in a budgeted question
    qs = {q.id: q for q in derive_questions(infos)}
    assert set(qs) == {"n0_1M", "best_K_multiresnet_1M", "best_1M", "best_K_dmrnet_1.5M_s1", "best_K_dmrnet_1.5M_s2",
                       "best_1.5M"}
    assert qs["best_K_dmrnet_1.5M_s1"].candidates.names == ["dmrnet-50-K2", "dmrnet-50-K4-c12"]
    two_refs = infos + [C("resnet-20-c40", "resnet", "1M", True, (), 20, 1)]
    assert "n0_1M" not in {q.id for q in derive_questions(two_refs)}  # ambiguous reference: not guessed


def _study(tmp_path: Path, questions: list) -> Path:
    data = yaml.safe_load((REPO / "studies" / "quickstart.yaml").read_text())
    data["space"] = str(REPO / "search_spaces" / "quickstart.yaml")
    data["questions"] = questions
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_quickstart_questions_resolve_and_round_trip(tmp_path: Path) -> None:
    config = load_study(REPO / "studies" / "quickstart.yaml")
    space = space_from_dict(yaml.safe_load((REPO / "search_spaces" / "quickstart.yaml").read_text()))
    resolved = study_questions(config, grid(space))
    assert [rq.question.id for rq in resolved] == ["best_network", "multi_vs_plain_depth8"]
    assert len(resolved[0].options) == 4 and len(resolved[1].a) == len(resolved[1].b) == 1
    assert from_json(to_json(resolved)) == resolved


@pytest.mark.parametrize("question, reason", [
    ({"id": "q", "kind": "compare", "a": {"family": "resnet"}, "b": {"family": "dmrnet", "depth": 50}},
     "questions[0] (q).b: selects no candidate"),
    ({"id": "q", "kind": "threshold", "reference": {"family": "resnet", "budget": "0.15M"},
      "treatment": {"family": "multiresnet"}}, "needs exactly one reference, got resnet-8-c22.46.91, resnet-14"),
])
def test_ambiguous_declared_question_is_one_line_exit_2(tmp_path: Path, capsys, question, reason) -> None:
    path = _study(tmp_path, [question])
    with pytest.raises(ConfigError, match="questions"):
        study_questions(load_study(path), grid(space_from_dict(yaml.safe_load(
            (REPO / "search_spaces" / "quickstart.yaml").read_text()))))
    assert main(["run", str(path), "--dry-run"]) == 2
    err = capsys.readouterr().err.strip()
    assert reason in err and len(err.splitlines()) == 1 and str(path) in err


def test_malformed_question_is_a_config_error(tmp_path: Path, capsys) -> None:
    path = _study(tmp_path, [{"id": "q", "kind": "best", "candidates": {"family": "dmrnet"}}])
    assert main(["run", str(path), "--dry-run"]) == 2
    err = capsys.readouterr().err.strip()
    assert "questions" in err and "option" in err and len(err.splitlines()) == 1
