"""Simulation check of the declared-question statistics (archsearch.analysis.contrasts): plant an answer in
synthetic seed tables, measure coverage and false decisions. Pre-registered criteria (the tests assert them):
n₀ 95 % interval covers a planted n₀ ≥ 0.90 with four declared references; a single winner among four equal K
(5 seeds) in ≤ 5 %; no option of warp.yaml's names-per-option shape wins a single-winner decision in > 5 %.
The race (archsearch.analysis.race): false decisions on null tables ≤ 5 %.

    python benchmarks/questions_sim.py [--reps 1000] [--json]
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from archsearch.analysis.contrasts import Sample, best_set, contrast, threshold  # noqa: E402


def _sample(name: str, mean: float, n: int, rng: np.random.Generator, sd: float = 1.0) -> Sample:
    return Sample(name, tuple(float(v) for v in rng.normal(mean, sd, n)), tuple(range(n)))


def n0_coverage(reps: int, shared: bool, seeds: int = 5, n0: float = 17.0) -> dict[str, float]:
    rng = np.random.default_rng(100 + shared)
    hits = bounded = 0
    for rep in range(reps):
        ref = _sample("ref", 40.0, seeds, rng)
        pairs = [(d, _sample(f"m{d}", 40.0 + 0.25 * (n0 - d), seeds, rng),
                  ref if shared else _sample(f"r{d}", 40.0, seeds, rng)) for d in (8, 14, 20, 26)]
        a = threshold(pairs, seed=rep, n_boot=1000)
        hits += a.low <= n0 <= a.high
        bounded += math.isfinite(a.low) and math.isfinite(a.high)
    return {"coverage": hits / reps, "bounded_both_sides": bounded / reps}


def best_null(reps: int, names: dict[int, int], seeds: int = 5) -> dict[str, float]:
    rng = np.random.default_rng(200 + len(names))
    single = 0
    wins = dict.fromkeys(names, 0)
    kept = dict.fromkeys(names, 0)
    for _ in range(reps):
        a = best_set({k: [_sample(f"K{k}-{i}", 40.0, seeds, rng) for i in range(m)] for k, m in names.items()})
        for k in names:
            kept[k] += str(k) in a.contenders
        if len(a.contenders) == 1:
            single += 1
            wins[int(a.contenders[0])] += 1
    return {"single_winner": single / reps, **{f"K{k}_wins": w / reps for k, w in wins.items()},
            **{f"K{k}_kept": c / reps for k, c in kept.items()}}


def contrast_rates(reps: int) -> dict[str, float]:
    rng = np.random.default_rng(300)
    cover = power = wrong = 0
    for _ in range(reps):
        c = contrast(_sample("a", 41.0, 5, rng), _sample("b", 40.0, 5, rng, sd=2.0))
        cover += c.low <= 1.0 <= c.high
        d = contrast(_sample("a", 41.0, 20, rng), _sample("b", 40.0, 20, rng))
        power += d.decision == "+"
        wrong += d.decision == "-"
    return {"coverage_5_seeds": cover / reps, "resolves_+1pt_20_seeds": power / reps, "wrong_sign": wrong / reps}


def race_rates(reps: int, max_seeds: int = 10) -> dict[str, float]:
    """The race (min 3, max `max_seeds`) on synthetic tables: false decisions under the null, and how a planted
    +1-point contrast (noise 1 point per seed and candidate) resolves against the fixed grid on max_seeds seeds."""
    from archsearch.analysis.race import RaceSettings, race
    from archsearch.study.questions import Question, ResolvedQuestion, Selector

    cmp = ResolvedQuestion(Question(id="c", kind="compare", a=Selector(names=["a"]), b=Selector(names=["b"])),
                           a=("a",), b=("b",))
    best = ResolvedQuestion(Question(id="k", kind="best", candidates=Selector(names=list("abcd")), option="name"),
                            options=tuple((n, (n,)) for n in "abcd"))
    rng = np.random.default_rng(400)
    settings, pool = RaceSettings(3, max_seeds, 0.95, 1), list(range(max_seeds))
    null_cmp = null_best = planted = planted_wrong = grid_planted = 0
    seeds_used = []
    for _ in range(reps):
        t = {(n, s): 60.0 + rng.standard_normal() for n in "abcd" for s in pool}
        r = race([cmp, best], pool, settings, lambda j, t=t: t[(j.name, j.seed)])
        null_cmp += r.answers[0].result.decision in "+-"
        null_best += r.answers[1].resolved
        t = {(n, s): (61.0 if n == "a" else 60.0) + rng.standard_normal() for n in "ab" for s in pool}
        r = race([cmp], pool, settings, lambda j, t=t: t[(j.name, j.seed)])
        planted += r.answers[0].result.decision == "+"
        planted_wrong += r.answers[0].result.decision == "-"
        seeds_used.append(r.seeds_used["a"])
        g = contrast(Sample("a", tuple(t[("a", s)] for s in pool), tuple(pool)),
                     Sample("b", tuple(t[("b", s)] for s in pool), tuple(pool)))
        grid_planted += g.decision == "+"
    return {"null_compare_resolved": null_cmp / reps, "null_best_single_winner": null_best / reps,
            "planted_+1_resolved": planted / reps, "planted_wrong_sign": planted_wrong / reps,
            "planted_mean_seeds": float(np.mean(seeds_used)), f"grid_{max_seeds}_seeds_resolved": grid_planted / reps}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--reps", type=int, default=1000)
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    out = {"reps": args.reps,
           "n0_four_declared_references": n0_coverage(args.reps, shared=False),
           "n0_one_shared_reference": n0_coverage(args.reps, shared=True),
           "best_four_equal_K": best_null(args.reps, {1: 1, 2: 1, 3: 1, 4: 1}),
           "best_names_per_option_12_8_3": best_null(args.reps, {1: 3, 2: 12, 3: 8}),
           "contrast": contrast_rates(args.reps),
           "race_max_10": race_rates(args.reps), "race_max_20": race_rates(args.reps, 20)}
    print(json.dumps(out, indent=1) if args.json else "\n".join(f"{k}: {v}" for k, v in out.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
