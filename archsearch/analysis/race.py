"""The race: seeds go only where a declared question is still open (F-Race / irace over seeds as instances).

The race is a pure function of a table lookup "candidate c, seed s, trained to epoch e → validation error", so
the same code decides on Ray (lookup = the stored trials; a missing job is enqueued) and in a replay on a CSV
table (a missing job is an error). Seeds are drawn from the study's seed pool in order, and every candidate a
question still needs advances together to the next *look*: n₁ = min_seeds, then n₊ = n + ⌈n/2⌉ up to max_seeds
(3, 5, 8, 10 by default). At each look each open question is tested with the seeds it has; once decided, its
decision is frozen and its candidates leave unless another open question needs them; a best question drops the
options excluded from its set (they cannot be the best), a threshold question the depths whose sign is known.

Intervals stay valid although the race looked at the data before deciding to stop: **alpha spending with a
union bound over the looks** (Bonferroni across looks, not an anytime-valid confidence sequence). Look k spends
α_k = α · (n_k² − n_{k−1}²) / n_max² of α = 1 − confidence (a quadratic spending function in the fraction of
seeds: little is spent on the first, noisy looks), and every test at look k is run at level 1 − α_k. Whatever
the stopping rule, the chance that any look makes a false decision is at most Σ α_k = α, because each look's
error is bounded by its own α_k — no assumption on how looks correlate. Chosen over confidence sequences
because the per-look tests stay the report's own Student-t / Gupta tests (valid with 3 seeds and unknown
variance, where normal-mixture sequences need a known variance bound), at the price of some conservatism.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import stats

from archsearch.analysis.contrasts import BestSet, Contrast, Sample, ThresholdAnswer, best_set, option_estimate
from archsearch.analysis.questions import Answer, StudyAnswers, answer, answer_all, questions_of, study_answers
from archsearch.study.questions import ResolvedQuestion


@dataclass(frozen=True)
class Job:
    """Train candidate `name` with `seed` to `epoch` (the race asks for these, in order)."""

    name: str
    seed: int
    epoch: int


Lookup = Callable[[Job], float | None]  # the validation error, or None when the job has not run


@dataclass(frozen=True)
class RaceSettings:
    min_seeds: int = 3
    max_seeds: int = 10
    confidence: float = 0.95
    epochs: int = 1  # full fidelity: every job trains its candidate to the study's last epoch


def looks(min_seeds: int, max_seeds: int) -> list[int]:
    """Seeds per candidate at each look: min_seeds, then +⌈n/2⌉ each round, ending at max_seeds."""
    out = [min_seeds]
    while out[-1] < max_seeds:
        n = out[-1]
        out.append(min(max_seeds, n + max(1, math.ceil(n / 2))))
    return out


def spending(seeds_at_looks: list[int], confidence: float) -> list[float]:
    """α spent by each look under Lan–DeMets' O'Brien–Fleming-type function α(t) = 2 − 2Φ(z_{1−α/2} / √t),
    t = n_k / n_max (they sum to α = 1 − confidence; the first, noisy looks spend almost nothing)."""
    alpha, top = 1 - confidence, seeds_at_looks[-1]
    z = stats.norm.ppf(1 - alpha / 2)
    cumulative = [min(alpha, 2 - 2 * stats.norm.cdf(z / math.sqrt(n / top))) for n in seeds_at_looks]
    cumulative[-1] = alpha
    return [c - p for c, p in zip(cumulative, [0.0, *cumulative[:-1]], strict=True)]


@functools.lru_cache(maxsize=64)
def nominal_levels(seeds_at_looks: tuple[int, ...], confidence: float, paths: int = 40000) -> tuple[float, ...]:
    """Two-sided nominal α of each look's tests: the group-sequential boundary c_k of the paired Student t
    statistic such that, under the null, the chance of first crossing at look k is the α spent there; found by
    simulating `paths` seeded null sequences of seed differences (t is scale-free, so the variance is
    irrelevant), then read back as 2(1 − F_t(c_k; n_k − 1))."""
    spent = spending(list(seeds_at_looks), confidence)
    if len(seeds_at_looks) == 1:
        return (1 - confidence,)  # one look: the fixed design's own level
    top = seeds_at_looks[-1]
    rng = np.random.default_rng(20261203)
    x = rng.standard_normal((paths, top))
    alive = np.ones(paths, dtype=bool)
    out = []
    for n, a in zip(seeds_at_looks, spent, strict=True):
        d = x[:, :n]
        t = np.abs(d.mean(axis=1) / (d.std(axis=1, ddof=1) / math.sqrt(n)))
        live = np.sort(t[alive])[::-1]
        k = int(round(a * paths))  # crossings allowed at this look, among the paths not stopped before
        c = live[k] if k < live.size else 0.0
        c = max(c, float(stats.t.ppf(1 - (1 - confidence) / 2, n - 1)))  # never looser than a fixed test
        alive &= t <= c
        out.append(float(2 * stats.t.sf(c, n - 1)))
    return tuple(out)


@dataclass
class Round:
    """One look: how many seeds each still-needed candidate has, what it trained, what was decided."""

    look: int
    seeds: int
    alpha: float
    jobs: list[Job]
    candidates: list[str]
    resolved: list[str] = field(default_factory=list)  # question ids decided at this look
    dropped: list[str] = field(default_factory=list)  # candidates no open question needs after it


@dataclass
class RaceResult:
    """Where the race stands: every job it asked for, the looks it completed, and the answers so far."""

    rounds: list[Round]
    requested: list[Job]
    pending: list[Job]  # jobs of the current look not in the table yet (empty when the race is over)
    answers: list[Answer]
    seeds_used: dict[str, int]
    settings: RaceSettings

    @property
    def done(self) -> bool:
        return not self.pending

    @property
    def epochs_trained(self) -> int:
        pending = set(self.pending)
        return sum(j.epoch for j in self.requested if j not in pending)

    def open_questions(self) -> list[str]:
        return [a.id for a in self.answers if not a.resolved]


@dataclass
class _Open:
    """A question during the race: its frozen answer once decided, the options / depths that left."""

    rq: ResolvedQuestion
    final: Answer | None = None
    excluded: dict[Any, Any] = field(default_factory=dict)  # best: option value -> its estimate at exclusion
    frozen: dict[int, Contrast] = field(default_factory=dict)  # threshold: depth -> decided contrast
    last: Answer | None = None

    def needs(self) -> set[str]:
        if self.final is not None:
            return set()
        q = self.rq
        if q.question.kind == "best":
            return {n for v, names in q.options if v not in self.excluded for n in names}
        if q.question.kind == "threshold":
            return {n for d, t, r in q.pairs if d not in self.frozen for n in (t, r)}
        return set(q.names)


def race(questions: list[ResolvedQuestion], pool: list[int], settings: RaceSettings, lookup: Lookup) -> RaceResult:
    """Run the race as far as the table allows (see the module docstring); deterministic for a given table."""
    if len(pool) < settings.max_seeds:
        raise ValueError(f"the seed pool has {len(pool)} seeds, fewer than max_seeds {settings.max_seeds}")
    schedule = looks(settings.min_seeds, settings.max_seeds)
    alphas = nominal_levels(tuple(schedule), settings.confidence)
    state = [_Open(rq) for rq in questions]
    order = _candidate_order(questions)
    values: dict[str, dict[int, float]] = {n: {} for n in order}
    rounds: list[Round] = []
    requested: list[Job] = []
    active = [n for n in order if any(n in s.needs() for s in state)]
    for k, n in enumerate(schedule):
        jobs = [Job(name, seed, settings.epochs) for seed in pool[:n] for name in active
                if seed not in values[name]]
        requested += jobs
        missing = []
        for job in jobs:
            v = lookup(job)
            if v is None:
                missing.append(job)
            else:
                values[job.name][job.seed] = float(v)
        if missing:
            return _result(state, rounds, requested, missing, values, settings, pool)
        rnd = Round(k + 1, n, alphas[k], jobs, list(active))
        samples = samples_over_pool(values, pool)
        for s in state:
            if s.final is None and _look(s, samples, 1 - alphas[k]):
                rnd.resolved.append(s.rq.question.id)
        still = [name for name in active if any(name in s.needs() for s in state)]
        rnd.dropped = [name for name in active if name not in still]
        rounds.append(rnd)
        active = still
        if not active:
            break
    return _result(state, rounds, requested, [], values, settings, pool)


def _candidate_order(questions: list[ResolvedQuestion]) -> list[str]:
    """Every candidate the questions name, in the order they first appear (the jobs' order within a seed)."""
    out: list[str] = []
    for rq in questions:
        q = rq.question
        names = ([n for _, t, r in rq.pairs for n in (t, r)] if q.kind == "threshold"
                 else [n for _, ns in rq.options for n in ns] if q.kind == "best" else [*rq.a, *rq.b])
        out += [n for n in names if n not in out]
    return out


def samples_over_pool(values: dict[str, dict[int, float]], pool: list[int]) -> dict[str, Sample]:
    """Each candidate's errors over the pool seeds it has, in pool order (so pairs line up by seed)."""
    out = {}
    for name, by_seed in values.items():
        seeds = [s for s in pool if s in by_seed]
        if seeds:
            out[name] = Sample(name, tuple(by_seed[s] for s in seeds), tuple(seeds))
    return out


def _look(s: _Open, samples: dict[str, Sample], level: float) -> bool:
    """Test one open question at this look's level; freeze what is decided. True when the question resolved."""
    kind = s.rq.question.kind
    if kind == "compare":
        s.last = answer(s.rq, samples, level=level)
        if s.last.resolved:
            s.final = s.last
        return s.final is not None
    if kind == "best":
        return _look_best(s, samples, level)
    return _look_threshold(s, samples, level)


def _look_best(s: _Open, samples: dict[str, Sample], level: float) -> bool:
    rq = s.rq
    alive = tuple((v, names) for v, names in rq.options if v not in s.excluded)
    s.last = answer(dataclasses.replace(rq, options=alive), samples, level=level)
    result = s.last.result
    if isinstance(result, BestSet) and result.status == "ok":
        keep = set(result.contenders)
        for o in result.options:
            if o.label not in keep:
                s.excluded[o.value] = o
    left = [(v, names) for v, names in rq.options if v not in s.excluded]
    if len(left) == 1 or (isinstance(result, BestSet) and result.resolved):
        s.final = _best_answer(s, samples, level)
    return s.final is not None


def _best_answer(s: _Open, samples: dict[str, Sample], level: float) -> Answer:
    """The best set among the options still in the race, shown beside the excluded options' means."""
    rq, q = s.rq, s.rq.question
    labels = {v: str(v) if q.option == "name" else f"{q.option}={v}" for v, _ in rq.options}
    alive = [(v, names) for v, names in rq.options if v not in s.excluded]
    if len(alive) == 1:
        v, names = alive[0]
        est = option_estimate(labels[v], v, [samples[n] for n in names])
        result = BestSet([est], [labels[v]], True, False, q.margin)
    else:
        result = best_set({v: [samples[n] for n in names] for v, names in alive}, labels=labels, level=level,
                          margin=q.margin)
    result.options = sorted([*result.options, *s.excluded.values()], key=lambda o: o.mean)
    return Answer(q.id, q.kind, result, {n: samples[n].n for n in sorted(rq.names) if n in samples})


def _look_threshold(s: _Open, samples: dict[str, Sample], level: float) -> bool:
    s.last = answer(s.rq, samples, level=level)
    result = s.last.result
    if isinstance(result, ThresholdAnswer):
        for d, c in zip(result.depths, result.deltas, strict=True):
            if d not in s.frozen and c.decision in "+-":
                s.frozen[d] = c
    if all(d in s.frozen for d, _, _ in s.rq.pairs):
        s.final = _threshold_answer(s, samples, level)
    return s.final is not None


def _threshold_answer(s: _Open, samples: dict[str, Sample], level: float) -> Answer:
    """n₀ and its interval from every seed measured, with each depth's sign as decided when it froze."""
    a = answer(s.rq, samples, level=level)
    r = a.result
    if isinstance(r, ThresholdAnswer):
        r.deltas = [s.frozen.get(d, c) for d, c in zip(r.depths, r.deltas, strict=True)]
    return a


def _result(state: list[_Open], rounds: list[Round], requested: list[Job], pending: list[Job],
            values: dict[str, dict[int, float]], settings: RaceSettings, pool: list[int]) -> RaceResult:
    samples = samples_over_pool(values, pool)
    level = 1 - rounds[-1].alpha if rounds else settings.confidence
    answers = []
    for s in state:
        if s.final is not None:
            answers.append(s.final)
        elif s.rq.question.kind == "best" and s.excluded and rounds:
            a = _best_answer(s, samples, level)
            answers.append(a)
        elif s.rq.question.kind == "threshold" and rounds:
            answers.append(_threshold_answer(s, samples, level))
        else:
            answers.append(s.last or answer(s.rq, samples, level=level))
    seeds_used = {n: len(v) for n, v in values.items()}
    return RaceResult(rounds, requested, pending, answers, seeds_used, settings)


# ------------------------------------------------------------------------------------------ a study's race
def settings_of(config: Any) -> RaceSettings:
    """A race study's settings (`search:` and the training length)."""
    s = config.search
    return RaceSettings(s.min_seeds, s.max_seeds, s.confidence, config.max_epochs)


def race_on_records(questions: list[ResolvedQuestion], records: list[Any], pool: list[int],
                    settings: RaceSettings) -> RaceResult:
    """The race as far as a study's counting trials take it (a trial counts at its last epoch only)."""
    values = {(r.name, r.seed): float(r.value) for r in records if r.usable and r.seed is not None}
    return race(questions, pool, settings, lambda j: values.get((j.name, j.seed)))


def next_jobs(config: Any, questions: list[ResolvedQuestion], records: list[Any]) -> list[tuple[str, int]]:
    """What a running race study trains next: the current look's (name, seed) pairs not stored yet ([]: over)."""
    result = race_on_records(questions, records, config.seed_list, settings_of(config))
    return [(j.name, j.seed) for j in result.pending]


def race_of_study(attrs: dict[str, Any], questions: list[ResolvedQuestion], records: list[Any]) -> RaceResult | None:
    """A stored race study's race, rebuilt from its records and the settings stored when it ran (None: no race)."""
    snap = attrs.get("config") or {}
    search = snap.get("search") or {}
    if search.get("method") != "race":
        return None
    settings = RaceSettings(int(search["min_seeds"]), int(search["max_seeds"]), float(search["confidence"]),
                            int(snap["train"]["epochs"]))
    return race_on_records(questions, records, [int(s) for s in snap["seeds"]], settings)


def answers_of_study(attrs: dict[str, Any], records: list[Any], *, level: float = 0.95,
                     seed: int = 0) -> tuple[StudyAnswers, RaceResult | None]:
    """The study's answers: a race study's are the race's own decisions (its looks, spent α and frozen
    decisions, rebuilt from the records), every other study's the grid answers of `study_answers`. The
    test-split answers of a race use the seeds it trained, once, at the nominal level (never to decide)."""
    resolved, source = questions_of(attrs, records)
    result = race_of_study(attrs, resolved, records)
    if result is None:
        return study_answers(attrs, records, level=level, seed=seed), None
    trained = {(j.name, j.seed) for j in result.requested}
    used = [r for r in records if (r.name, r.seed) in trained and r.usable]
    tested = any(r.test_error is not None for r in used)
    test = answer_all(resolved, used, level=level, seed=seed, split="test") if tested else None
    caveat = (f"the race is not over: {len(result.pending)} trials of look {len(result.rounds) + 1} are missing "
              "(resume the run); the answers are those of the last complete look" if result.pending else "")
    asked = StudyAnswers(result.answers, test, source, caveat)
    return asked, result


def race_json(r: RaceResult) -> dict[str, Any]:
    """How the race reached its answers: per look the seeds, the jobs, what resolved, who left."""
    return {"looks": [{"look": x.look, "seeds": x.seeds, "alpha": x.alpha, "trials": len(x.jobs),
                       "candidates": x.candidates, "resolved": x.resolved, "dropped": x.dropped} for x in r.rounds],
            "seeds_per_candidate": r.seeds_used, "open": r.open_questions(), "done": r.done,
            "settings": {"min_seeds": r.settings.min_seeds, "max_seeds": r.settings.max_seeds,
                         "confidence": r.settings.confidence}}


def race_markdown(r: RaceResult) -> str:
    """How the race reached its answers: per look the seeds, trials, spent α, what resolved, who left."""
    s = r.settings
    out = ["### How the race reached these answers", "",
           f"Race over seeds (min {s.min_seeds}, max {s.max_seeds}, confidence {s.confidence:g}): at each look every "
           "candidate an open question needs has the same seeds; each look's tests run at level 1 − α_k (alpha "
           "spending, union bound over the looks), so the answers stay valid although the race chose when to stop.",
           "", "| look | seeds | α_k | trials | candidates | resolved | left the race |",
           "|---|---|---|---|---|---|---|"]
    for x in r.rounds:
        out.append(f"| {x.look} | {x.seeds} | {x.alpha:.4f} | {len(x.jobs)} | {len(x.candidates)} | "
                   f"{', '.join(x.resolved) or '–'} | {', '.join(x.dropped) or '–'} |")
    per = ", ".join(f"{n} ×{k} seeds ({k * s.epochs} epochs)" for n, k in r.seeds_used.items() if k)
    out += ["", f"Trained: {per}; {r.epochs_trained} epochs in all."]
    if r.open_questions():
        out.append(f"Still open at the end: {', '.join(r.open_questions())} (their lines say how many seeds would "
                   "likely resolve them: raise search.max_seeds and resume).")
    return "\n".join(out + [""])
