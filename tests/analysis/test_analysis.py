"""Analysis on synthetic studies with planted truth: n₀, best K, intervals, exclusions, EDFs, fidelity.

The coverage checks run the analysis on in-memory records (no Optuna), so 200 replicates take a
second or two; `load_records` is checked once on a real SQLite study.
"""

from __future__ import annotations

import math
from dataclasses import asdict

import numpy as np
import optuna
import pytest

from archsearch.analysis.answers import analyze
from archsearch.analysis.best import best_k, wrn_analysis
from archsearch.analysis.contrasts import crossing_depth
from archsearch.analysis.fidelity import fidelity_check
from archsearch.analysis.landscape import edfs, pareto
from archsearch.analysis.threshold import n0_analysis
from archsearch.study.records import TrialRecord, load_records

K_TRUTH = {1: 6.0, 2: 5.5, 4: 5.8, 8: 6.3}  # DMRNet Fig. 7's shape: K = 2 best


class Population:
    """Builds TrialRecords with consecutive trial numbers."""

    def __init__(self, rng: np.random.Generator, sigma: float = 0.2, seeds: int = 5) -> None:
        self.rng, self.sigma, self.seeds, self.records = rng, sigma, seeds, []

    def add(self, name, family, depth, k, mean, budget="1.7M", *, seeds=None, state="COMPLETE", full=True,
            **kw) -> None:
        for s in range(self.seeds if seeds is None else seeds):
            value = mean + self.rng.normal(0, self.sigma)
            self.records.append(TrialRecord(
                number=len(self.records), state=state, value=value, name=name, family=family, depth=depth,
                branches=k, budget=budget, seed=s, full_fidelity=full, **kw))


def n0_population(rng, *, n0=17.0, slope=0.1, sigma=0.2, seeds=5, depths=(8, 14, 20, 26, 32)):
    """One budget: resnet-110 at 6.0 %, Multi-ResNets with Δ(d) = slope·(n0 − d) (linear, so the
    interpolated crossing of the true curve is exactly n0)."""
    pop = Population(rng, sigma, seeds)
    pop.add("resnet-110", "resnet", 110, 1, 6.0)
    for d in depths:
        pop.add(f"multiresnet-{d}-k4", "multiresnet", d, 4, 6.0 + slope * (n0 - d))
    return pop


def k_population(rng, *, sigma=0.2, seeds=5, truth=K_TRUTH):
    pop = Population(rng, sigma, seeds)
    for k, mean in truth.items():
        name, fam = (f"dmrnet-50-K{k}", "dmrnet") if k > 1 else ("postresnet-98", "postresnet")
        pop.add(name, fam, 50, k, mean)
    return pop


def test_crossing_depth_interpolates_and_censors():
    depths = np.array([8, 20, 30])
    delta = np.array([[1.53, 0.04, -0.13], [1.0, -0.5, -1.0], [-0.1, -0.2, -0.3], [1.0, 0.5, 0.1],
                      [1.0, -0.2, 0.3], [1.0, -0.2, 0.0]])
    out = crossing_depth(depths, delta)
    assert out[0] == pytest.approx(20 + 10 * 0.04 / 0.17)  # Table II medians: ≈ 22.4
    assert out[1] == pytest.approx(8 + 12 * 1.0 / 1.5)
    assert out[2] == -math.inf and out[3] == math.inf  # multi better everywhere / never better
    assert out[4] == math.inf  # worse again at the deepest depth: no crossing that holds
    assert out[5] == pytest.approx(8 + 12 / 1.2)  # Δ = 0 exactly at the deepest depth counts as ≤ 0


def test_planted_n0_is_recovered():
    pop = n0_population(np.random.default_rng(0), sigma=0.05)
    (r,) = n0_analysis(pop.records, seed=0)
    assert r.status == "crossed" and r.budget == "1.7M" and r.block == "basic"
    assert r.n0 == pytest.approx(17.0, abs=1.0)
    assert r.ci[0] <= 17.0 <= r.ci[1]
    assert [p.depth for p in r.points] == [8, 14, 20, 26, 32]
    assert all(p.plain == "resnet-110" for p in r.points)
    assert r.min_seeds == 5 and r.p_crossed > 0.99
    assert r.describe().startswith("n₀ = ")


def test_n0_interval_covers_truth():
    rng = np.random.default_rng(1)
    hits = []
    for rep in range(200):
        (r,) = n0_analysis(n0_population(rng).records, seed=rep, n_boot=1000)
        hits.append(r.ci[0] <= 17.0 <= r.ci[1])
    assert np.mean(hits) >= 0.90


def test_n0_across_budgets_reads_table_ii():
    """One pair per budget, as in the Multi-ResNet paper: only the joined curve has a crossing."""
    pop = Population(np.random.default_rng(2), sigma=0.03)
    for name, fam, d, k, err, budget in [
        ("resnet-24-u4.4.3", "resnet", 24, 1, 7.75, "0.29M"), ("multiresnet-8-k4", "multiresnet", 8, 4, 9.28, "0.29M"),
        ("resnet-68", "resnet", 68, 1, 6.27, "1.0M"), ("multiresnet-20-k4", "multiresnet", 20, 4, 6.31, "1.0M"),
        ("resnet-110", "resnet", 110, 1, 6.02, "1.7M"), ("multiresnet-30-k4", "multiresnet", 30, 4, 5.89, "1.7M"),
    ]:
        pop.add(name, fam, d, k, err, budget)
    results = {r.budget: r for r in n0_analysis(pop.records, seed=0)}
    assert list(results) == ["0.29M", "1.0M", "1.7M", "all"]
    assert results["0.29M"].status == "above_range" and "n₀ > 8" in results["0.29M"].describe()
    assert results["1.7M"].status == "below_range"
    joined = results["all"]
    assert joined.status == "crossed" and 20 < joined.n0 < 26
    assert [p.depth for p in joined.points] == [8, 20, 30]


def test_n0_interval_is_as_wide_as_the_delta_intervals():
    """A censored n₀ ("multi better at every depth") must not look resolved while the deepest Δ's
    interval spans 0: n₀'s replicates come from the same t-widened Δ replicates, so its interval
    reaches past the deepest depth exactly when that Δ interval's upper end is above 0."""
    seen = set()
    for rep in range(12):
        pop = Population(np.random.default_rng(100 + rep), sigma=1.0, seeds=3)
        pop.add("resnet-50", "resnet", 50, 1, 44.0)
        pop.add("multiresnet-14-k4", "multiresnet", 14, 4, 40.5)
        pop.add("multiresnet-26-k2", "multiresnet", 26, 2, 42.5)
        (r,) = n0_analysis(pop.records, seed=rep, n_boot=1000)
        deepest = r.points[-1]
        assert (r.ci[1] == math.inf) == (deepest.ci[1] > 0), (rep, r.ci, deepest.ci)
        if r.status == "below_range":
            seen.add(deepest.ci[1] > 0)
    assert seen == {True, False}  # both cases occurred: censored n₀ resolved, and not


def test_n0_that_never_crosses_says_so():
    pop = n0_population(np.random.default_rng(3), n0=60.0, sigma=0.05)  # multi worse at every depth
    (r,) = n0_analysis(pop.records, seed=0)
    assert r.status == "above_range" and r.n0 == math.inf
    assert r.describe().startswith("n₀ > 32")


def test_planted_best_k_is_recovered_with_probabilities():
    (r,) = best_k(k_population(np.random.default_rng(4)).records, seed=0)
    assert r.status == "ok" and r.family == "dmrnet" and r.budget == "1.7M"
    assert r.best.value == 2 and r.best.label == "K=2"
    probs = {o.value: o.p_best for o in r.options}
    assert sum(probs.values()) == pytest.approx(1.0)
    assert probs[2] > 0.9 and probs[8] < 0.01
    assert r.best.ci[0] <= K_TRUTH[2] <= r.best.ci[1]


def test_best_k_interval_covers_truth():
    rng = np.random.default_rng(5)
    hits, right = [], []
    for rep in range(200):
        (r,) = best_k(k_population(rng).records, seed=rep, n_boot=1000)
        right.append(r.best.value == 2)
        hits.append(r.best.ci[0] <= K_TRUTH[r.best.value] <= r.best.ci[1])
    assert np.mean(right) >= 0.95
    assert np.mean(hits) >= 0.90


def test_wrn_width_against_depth():
    pop = Population(np.random.default_rng(6), sigma=0.1)
    pop.add("wrn-40-1", "wrn", 40, 1, 6.9, width=16)
    pop.add("wrn-28-2", "wrn", 28, 1, 5.6, width=32)
    pop.add("wrn-16-4", "wrn", 16, 1, 5.9, width=64)
    pop.add("resnet-110", "resnet", 110, 1, 6.4, width=16)
    (r,) = wrn_analysis(pop.records, seed=0)
    assert r.status == "ok" and r.best.name == "wrn-28-2"
    assert {o.name for o in r.options} == {"wrn-40-1", "wrn-28-2", "wrn-16-4", "resnet-110"}
    assert r.best.p_best > 0.9


def test_pruned_and_reduced_fidelity_trials_never_count():
    pop = k_population(np.random.default_rng(7))
    before = best_k(pop.records, seed=0)[0]
    # Tempting low errors that must be ignored: ASHA-pruned, and COMPLETE below full fidelity.
    pop.add("dmrnet-50-K8", "dmrnet", 50, 8, 1.0, state="PRUNED", full=False)
    pop.add("dmrnet-50-K8", "dmrnet", 50, 8, 1.0, state="COMPLETE", full=False)
    pop.add("dmrnet-50-K8", "dmrnet", 50, 8, 1.0, state="FAIL", full=False)
    after = best_k(pop.records, seed=0)[0]
    assert asdict(after) == asdict(before)
    (k8,) = [c for c in analyze(pop.records, n_boot=200).candidates if c.name == "dmrnet-50-K8"]
    assert k8.n == 5 and k8.n_pruned == 5 and k8.n_failed == 5 and k8.mean > 6.0


def test_family_without_full_fidelity_trials_says_so():
    pop = k_population(np.random.default_rng(8))
    pop.add("multiresnet-20-k4", "multiresnet", 20, 4, 6.0, state="PRUNED", full=False)
    pop.add("resnet-110", "resnet", 110, 1, 6.0, state="COMPLETE", full=False)
    pop.add("wrn-28-2", "wrn", 28, 1, 5.6, state="PRUNED", full=False)
    a = analyze(pop.records, n_boot=200)
    (n0,) = a.n0
    assert n0.status == "insufficient" and "no full-fidelity COMPLETE" in n0.message
    assert n0.n0 is None and n0.describe() == n0.message
    by_family = {r.family: r for r in a.best_k}
    assert by_family["multiresnet"].status == "insufficient"
    assert "5 pruned" in by_family["multiresnet"].message
    assert by_family["dmrnet"].status == "ok"
    (w,) = a.wrn
    assert w.status == "insufficient" and w.best is None


def test_one_option_is_not_a_comparison():
    pop = Population(np.random.default_rng(9))
    pop.add("dmrnet-50-K2", "dmrnet", 50, 2, 5.5)
    (r,) = best_k(pop.records)
    assert r.status == "insufficient" and "only one option" in r.message


def test_edf_weights_match_complexity_across_families():
    """Family a sampled mostly the small budget, b mostly the large: after normalisation each budget
    carries half of each family's mass."""
    pop = Population(np.random.default_rng(10), sigma=0.1)
    for fam, n_small, n_large in (("resnet", 8, 2), ("wrn", 2, 8)):
        pop.add(f"{fam}-small", fam, 20, 1, 8.0, "0.3M", seeds=n_small)
        pop.add(f"{fam}-large", fam, 50, 1, 5.0, "1.7M", seeds=n_large)
    pop.add("dmrnet-only-large", "dmrnet", 50, 2, 5.0, "1.7M", seeds=3)
    curves = {c.family: c for c in edfs(pop.records)}
    assert curves["resnet"].bins == ["1.7M"]  # the one bin every family shares
    pop.records = [r for r in pop.records if r.family != "dmrnet"]
    curves = {c.family: c for c in edfs(pop.records)}
    for c in curves.values():
        assert c.normalized and c.bins == ["0.3M", "1.7M"] and c.cdf[-1] == pytest.approx(1.0)
        mass_small = c.cdf[int(np.sum(np.array(c.errors) < 6.5)) - 1]  # small budget = high errors
        assert 1 - mass_small == pytest.approx(0.5)
        assert np.all(np.diff(c.errors) >= 0) and np.all(np.diff(c.cdf) > 0)


def test_pareto_front():
    recs = [TrialRecord(i, "COMPLETE", e, n, "resnet", params=p, full_fidelity=True)
            for i, (n, e, p) in enumerate([("a", 7.0, 1e5), ("b", 6.0, 3e5), ("c", 6.5, 5e5), ("d", 5.0, 9e5)])]
    f = pareto(recs, "params")
    assert f.front == ["a", "b", "d"]
    assert pareto(recs, "latency_b1_ms").points == []


def test_fidelity_check_flags_untrustworthy_rungs():
    rng = np.random.default_rng(11)
    recs = []
    for i in range(30):
        final = rng.normal(6.0, 0.5)
        inter = {1: 50 + rng.normal(0, 5), 4: final + 3 + rng.normal(0, 0.1), 16: final}
        recs.append(TrialRecord(i, "COMPLETE", final, f"resnet-{i}", "resnet", full_fidelity=True,
                                epochs=16, max_epochs=16, intermediate=inter))
    for i in range(30, 40):  # pruned trials tell where the rungs are
        stop = 1 if i < 35 else 4
        recs.append(TrialRecord(i, "PRUNED", None, f"resnet-{i}", "resnet", epochs=stop, max_epochs=16,
                                intermediate={e: 60.0 for e in range(1, stop + 1)}))
    checks = {c.family: c for c in fidelity_check(recs, seed=0)}
    assert set(checks) == {"resnet"}  # "all" only when several families share the rungs
    rungs = {r.epoch: r for r in checks["resnet"].rungs}
    assert sorted(rungs) == [1, 4]
    assert rungs[1].warn and not rungs[4].warn
    assert rungs[4].spearman > 0.9 and rungs[4].kendall > 0.8 and rungs[4].spearman_ci[0] > 0.5
    assert checks["resnet"].status == "warn" and "epoch 1" in checks["resnet"].message
    few = fidelity_check(recs[:3], rungs=[4])
    assert all(c.status == "insufficient" for c in few)


def test_bootstrap_is_seeded():
    recs = n0_population(np.random.default_rng(12)).records + k_population(np.random.default_rng(13)).records
    a, b = analyze(recs, seed=3, n_boot=500), analyze(recs, seed=3, n_boot=500)
    assert asdict(a) == asdict(b)
    c = analyze(recs, seed=4, n_boot=500)
    assert c.n0[0].ci != a.n0[0].ci and c.n0[0].n0 == a.n0[0].n0


def test_load_records_from_an_optuna_study(tmp_path):
    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 'study.db'}", study_name="s")
    attrs = {"name": "dmrnet-50-K2", "family": "dmrnet", "depth": 50, "branches": 2, "budget": "1.7M",
             "params": 1515994, "macs": 2.3e8, "seed": 0, "max_epochs": 8, "latency_b1_ms": 3.5,
             "path_length_mean": 11.0}
    study.add_trial(optuna.trial.create_trial(
        state=optuna.trial.TrialState.COMPLETE, value=5.5, intermediate_values={1: 40.0, 8: 5.5},
        user_attrs={**attrs, "epochs": 8, "full_fidelity": True}))
    study.add_trial(optuna.trial.create_trial(
        state=optuna.trial.TrialState.PRUNED, intermediate_values={1: 60.0},
        user_attrs={**attrs, "seed": 1, "epochs": 1, "full_fidelity": False}))
    study.add_trial(optuna.trial.create_trial(  # no full_fidelity attribute: epochs >= max_epochs decides
        state=optuna.trial.TrialState.COMPLETE, value=5.7, user_attrs={**attrs, "seed": 2, "epochs": 8}))
    recs = load_records(optuna.load_study(study_name="s", storage=f"sqlite:///{tmp_path / 'study.db'}"))
    assert [r.state for r in recs] == ["COMPLETE", "PRUNED", "COMPLETE"]
    assert [r.usable for r in recs] == [True, False, True]
    assert recs[0].intermediate == {1: 40.0, 8: 5.5} and recs[1].intermediate == {1: 60.0}
    assert recs[0].branches == 2 and recs[0].params == 1515994 and recs[0].budget == "1.7M"
    assert recs[1].value is None


def test_load_records_multi_objective_keeps_epochs_in_user_attrs(tmp_path):
    study = optuna.create_study(directions=["minimize", "minimize"])
    study.add_trial(optuna.trial.create_trial(
        state=optuna.trial.TrialState.COMPLETE, values=[5.5, 2e8],
        user_attrs={"name": "resnet-20", "family": "resnet", "full_fidelity": True,
                    "intermediate_values": {"1": 50.0, "2": 30.0}}))
    (r,) = load_records(study)
    assert r.value == 5.5 and r.intermediate == {1: 50.0, 2: 30.0}
