"""The declared-question statistics, checked by simulation: plant an answer in synthetic seed tables, then measure
coverage and false decisions of the same functions the report calls (200 replicates each)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from archsearch.analysis.contrasts import MIN_SEEDS, Sample, best_set, contrast, threshold

REPS = 200


def _sample(name: str, mean: float, n: int, rng: np.random.Generator, sd: float = 1.0) -> Sample:
    return Sample(name, tuple(float(v) for v in rng.normal(mean, sd, n)), tuple(range(n)))


def test_contrast_interval_covers_a_planted_difference() -> None:
    rng = np.random.default_rng(0)
    hits = 0
    for _ in range(REPS):
        c = contrast(_sample("a", 41.0, 5, rng), _sample("b", 40.0, 5, rng, sd=2.0))
        hits += c.low <= 1.0 <= c.high
    assert hits / REPS >= 0.92


def test_planted_contrast_resolves() -> None:
    """+1 point with noise 1 point per seed: 20 seeds each resolve it as "+" in most runs (power ≈ 0.87)."""
    rng = np.random.default_rng(1)
    decisions = [contrast(_sample("a", 41.0, 20, rng), _sample("b", 40.0, 20, rng)).decision for _ in range(REPS)]
    assert decisions.count("+") / REPS >= 0.75 and decisions.count("-") == 0


@pytest.mark.parametrize("n", [1, 2])
def test_no_interval_from_fewer_than_three_seeds(n: int) -> None:
    """One or two seeds: no zero-width (or wild) interval, a refusal that says what is needed."""
    rng = np.random.default_rng(2)
    c = contrast(_sample("a", 41.0, n, rng), _sample("b", 40.0, 5, rng))
    assert c.status == "needs_seeds" and c.low is None and c.high is None and c.decision == "?"
    assert f"needs ≥ {MIN_SEEDS} seeds" in c.message
    best = best_set({2: [_sample("k2", 40.0, n, rng)], 4: [_sample("k4", 41.0, 5, rng)]})
    assert best.status == "needs_seeds" and not best.resolved


def test_best_set_null_declares_a_single_winner_rarely() -> None:
    """Four equally good K, 5 seeds each: a single winner in ≤ 5 % of replicates (the old P(best) labelled one
    'likely'/'clear' in 23 %)."""
    rng = np.random.default_rng(3)
    singles = 0
    for _ in range(REPS):
        answer = best_set({k: [_sample(f"K{k}", 40.0, 5, rng)] for k in (1, 2, 3, 4)})
        singles += len(answer.contenders) == 1
    assert singles / REPS <= 0.05


def test_best_set_has_no_names_per_option_bias() -> None:
    """warp.yaml's shape (K=2 by 12 names, K=3 by 8, K=1 by 3), every network equal: no option wins more often
    because more names measure it, and each stays in the set ≥ 90 % of the time."""
    rng = np.random.default_rng(4)
    names = {1: 3, 2: 12, 3: 8}
    wins, kept = dict.fromkeys(names, 0), dict.fromkeys(names, 0)
    for _ in range(REPS):
        answer = best_set({k: [_sample(f"K{k}-{i}", 40.0, 5, rng) for i in range(m)] for k, m in names.items()})
        for k in names:
            kept[k] += str(k) in answer.contenders
        if len(answer.contenders) == 1:
            wins[int(answer.contenders[0])] += 1
    assert all(w / REPS <= 0.05 for w in wins.values()), wins
    assert all(c / REPS >= 0.90 for c in kept.values()), kept


def test_best_set_finds_a_planted_best_and_margin_equivalence() -> None:
    rng = np.random.default_rng(5)
    found = sum(best_set({k: [_sample(f"K{k}", 40.0 - 3.0 * (k == 2), 5, rng)] for k in (1, 2, 4)}).contenders
                == ["2"] for _ in range(REPS))
    assert found / REPS >= 0.8
    # equal options, margin 2 points, 10 seeds of sd 0.5: "equivalent within the margin" is the (resolved) answer
    eq = [best_set({k: [_sample(f"K{k}", 40.0, 10, rng, sd=0.5)] for k in (1, 2)}, margin=2.0) for _ in range(50)]
    assert sum(a.equivalent and a.resolved for a in eq) / 50 >= 0.9


def _linear_pairs(rng: np.random.Generator, n0: float, depths: list[int], seeds: int, slope: float = 0.25,
                  shared_reference: bool = False) -> list[tuple[int, Sample, Sample]]:
    """Δ(d) = slope · (n0 − d): the treatment is worse below n0 and better above it, noise 1 point per seed."""
    shared = _sample("ref", 40.0, seeds, rng)
    pairs = []
    for d in depths:
        ref = shared if shared_reference else _sample(f"ref-{d}", 40.0, seeds, rng)
        pairs.append((d, _sample(f"multi-{d}", 40.0 + slope * (n0 - d), seeds, rng), ref))
    return pairs


@pytest.mark.parametrize("shared", [False, True], ids=["4 declared references", "one shared reference"])
def test_threshold_interval_covers_a_planted_n0(shared: bool) -> None:
    """Four depths, each paired with its own equally good reference (or one reference for all): the 95 % interval
    covers the planted n₀ = 17 in ≥ 90 % of 200 replicates (the old best-of-4-references reading: 0.73)."""
    rng = np.random.default_rng(6)
    hits, finite = 0, 0
    for rep in range(REPS):
        answer = threshold(_linear_pairs(rng, 17.0, [8, 14, 20, 26], 5, shared_reference=shared), seed=rep,
                           n_boot=1000)
        hits += answer.low <= 17.0 <= answer.high
        finite += math.isfinite(answer.low) and math.isfinite(answer.high)
    assert hits / REPS >= 0.90
    assert finite > 0  # the criterion can fail: some intervals are bounded on both sides


def test_threshold_refuses_few_seeds_and_reports_signs() -> None:
    rng = np.random.default_rng(7)
    few = threshold(_linear_pairs(rng, 17.0, [8, 26], 2))
    assert few.status == "needs_seeds" and few.n0 is None and few.low is None
    clear = threshold(_linear_pairs(rng, 17.0, [8, 26], 10, slope=1.0), seed=1)
    assert clear.signs == {8: "+", 26: "-"} and clear.resolved and 8 < clear.n0 < 26
    with pytest.raises(ValueError, match="two treatments at one depth"):
        threshold(_linear_pairs(rng, 17.0, [8, 8], 5))
