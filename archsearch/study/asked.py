"""Which questions a study asks: its declared `questions:`, or ones derived per budget and per group.

Derived questions never pool settings: one n₀ threshold per budget (only where the budget holds exactly one plain
ResNet to be the reference), one best-K question per branch family, budget and group, and one best-network
question per budget. The resolved questions are stored with the study (user attribute `questions`) when a run
starts, so the report answers exactly what the run was asked, even without the study file.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import replace
from typing import Any

from archsearch.study.config import StudyConfig
from archsearch.study.questions import CandidateInfo, Question, ResolvedQuestion, Selector, resolve

QUESTIONS_ATTR = "questions"
# each branch family's K = 1 twin (a WarpNet with K = 1 is the sequential WarpNet itself)
BRANCH_BASELINES = {"dmrnet": "postresnet", "dvanet": "postresnet", "multiresnet": "resnet", "warpnet": "warpnet"}


def candidate_infos(points: Iterable[Any]) -> list[CandidateInfo]:
    """Space candidates or trial records, one per name (what selectors look at)."""
    out: dict[str, CandidateInfo] = {}
    for p in points:
        groups = tuple(getattr(p, "groups", ()) or ())
        if p.name in out:  # one network listed twice (as published and fitted): it carries both labels
            seen = out[p.name]
            out[p.name] = replace(seen, groups=seen.groups + tuple(g for g in groups if g not in seen.groups))
            continue
        out[p.name] = CandidateInfo(p.name, p.family, getattr(p, "budget", None) or None,
                                    bool(getattr(p, "on_budget", True)), groups, getattr(p, "depth", None),
                                    getattr(p, "branches", None), getattr(p, "width", None))
    return list(out.values())


def derive_questions(infos: list[CandidateInfo]) -> list[Question]:
    """The questions a study without `questions:` asks (see the module docstring)."""
    questions: list[Question] = []
    budgets = sorted({c.budget for c in infos if c.budget and c.on_budget})
    for b in budgets:
        here = [c for c in infos if c.budget == b and c.on_budget]
        plain = [c for c in here if c.family == "resnet"]
        multi = [c for c in here if c.family == "multiresnet" and (c.branches or 1) > 1]
        depths = [c.depth for c in multi]
        if len(plain) == 1 and multi and len(set(depths)) == len(depths):
            questions.append(Question(id=f"n0_{b}", kind="threshold", reference=Selector(names=[plain[0].name]),
                                      treatment=Selector(names=[c.name for c in multi])))
        questions += _best_k_questions(here, b)
        if len(here) > 1:
            questions.append(Question(id=f"best_{b}", kind="best", candidates=Selector(budget=b), option="name"))
    return questions


def _best_k_questions(here: list[CandidateInfo], budget: str) -> list[Question]:
    out = []
    for family, baseline in BRANCH_BASELINES.items():
        members = [c for c in here if c.family in (family, baseline)]
        if not any(c.family == family for c in members):
            continue
        groups: list[str | None] = sorted({g for c in members if c.family == family for g in c.groups})
        groups.append(None)  # the candidates without a group form their own setting
        for g in groups:
            chosen = [c for c in members if (g in c.groups if g is not None else not c.groups)]
            if len({c.branches or 1 for c in chosen}) < 2:
                continue
            qid = f"best_K_{family}_{budget}" + (f"_{g}" if g else "")
            out.append(Question(id=qid, kind="best", candidates=Selector(names=[c.name for c in chosen]), option="K"))
    return out


def study_questions(config: StudyConfig, points: Iterable[Any]) -> list[ResolvedQuestion]:
    """The study's questions resolved against its candidates; ConfigError (one line) when one is ambiguous."""
    infos = candidate_infos(points)
    declared = config.questions
    questions = declared if declared is not None else derive_questions(infos)
    return resolve(questions, infos, where=f"{config.path}: questions")


def to_json(resolved: list[ResolvedQuestion]) -> str:
    return json.dumps([{"question": rq.question.model_dump(mode="json", exclude_defaults=True),
                        "pairs": [list(p) for p in rq.pairs],
                        "options": [[v, list(names)] for v, names in rq.options],
                        "a": list(rq.a), "b": list(rq.b)} for rq in resolved], sort_keys=True)


def from_json(text: str) -> list[ResolvedQuestion]:
    return [ResolvedQuestion(Question(**d["question"]), tuple(tuple(p) for p in d["pairs"]),
                             tuple((v, tuple(names)) for v, names in d["options"]), tuple(d["a"]), tuple(d["b"]))
            for d in json.loads(text)]
