"""answer_cost's analysis: the grid's and ASHA's n₀ answers, when the grid's answer settles, and what-if replays.

See benchmarks/answer_cost.py for the question and how the ASHA study's answer is derived. The
replays are `archsearch.orchestrate.replay`, on the same rung and promotion rules as the schedulers.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import os
import platform
import sys
from collections import defaultdict
from typing import Any

import numpy as np
from scipy import stats

from archsearch.analysis.candidates import block_of
from archsearch.analysis.contrasts import crossing_depth
from archsearch.analysis.fidelity import fidelity_check
from archsearch.analysis.stats import bootstrap_means, interval, widened
from archsearch.analysis.threshold import n0_analysis
from archsearch.orchestrate.asha import rung_epochs
from archsearch.orchestrate.replay import REPLAYS

TARGET_RATIO = 0.25


def build_report(configs: dict, runs: dict, records: dict, seconds: dict, *, seed: int,
                 n_boot: int) -> dict[str, Any]:
    grid_cfg, asha_cfg = configs["grid"], configs["asha"]
    E = grid_cfg.max_epochs
    a = asha_cfg.asha
    rungs = rung_epochs(asha_cfg.max_epochs, a.grace_period, a.reduction_factor)
    grid_recs, asha_recs = records["grid"], records["asha"]
    studies = {key: _study_facts(configs[key], runs[key], records[key]) for key in ("grid", "asha")}
    ratio = studies["asha"]["epochs_trained"] / studies["grid"]["epochs_trained"]

    grid_n0 = _one(n0_analysis(grid_recs, seed=seed, n_boot=n_boot))
    grid_by_epoch = {e: _one(n0_analysis(_at_epoch(grid_recs, e), seed=seed, n_boot=n_boot)) for e in range(1, E)}
    survivors = n0_analysis(asha_recs, seed=seed, n_boot=n_boot)
    matched = matched_fidelity_n0(asha_recs, seeds=asha_cfg.seed_list, seed=seed, n_boot=n_boot)
    biased = survivor_deltas(asha_recs)
    fidelity = fidelity_check(grid_recs, rungs=rungs, seed=seed, n_boot=n_boot)

    # a study whose trials failed trained few epochs for no answer: its ratio meets nothing
    ratio_met = 0 < ratio <= TARGET_RATIO and not any(r.state == "FAIL" for r in asha_recs)
    agreement = rank_agreement(grid_recs, grid_by_epoch, grid_n0, max_epochs=E)
    return {
        "benchmark": "answer cost: n0 by exhaustive grid vs ASHA (reduced fidelity, CPU)",
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": sys.version.split()[0]},
        "question": "n0: the Multi-ResNet depth past which k > 1 functions beat a deeper plain ResNet at equal params",
        "candidates": _candidates(grid_recs),
        "train": grid_cfg.train_config.model_dump(mode="json"),
        "seeds": grid_cfg.seed_list,
        "max_epochs": E,
        "asha_rungs": rungs,
        "bootstrap": {"seed": seed, "n_boot": n_boot, "level": 0.95},
        "studies": studies,
        "epochs_ratio_asha_over_grid": round(ratio, 4),
        "target_ratio": TARGET_RATIO,
        "ratio_met": ratio_met,
        "answers": {
            "grid": _n0_json(grid_n0),
            "asha_survivors": [_n0_json(r) for r in survivors],
            "asha_matched_fidelity": matched,
            "asha_survivor_selected_deltas": biased,
        },
        "grid_at_epochs": {str(e): _n0_json(r) for e, r in grid_by_epoch.items()},
        "rank_agreement": agreement,
        "fidelity_check": [dataclasses.asdict(f) for f in fidelity],
        "determinism": determinism(grid_recs, asha_recs),
        "what_if": what_if(grid_recs, asha_recs, seconds, max_epochs=E, slots=studies["asha"]["slots"],
                           seeds=asha_cfg.seed_list, seed=seed, n_boot=n_boot,
                           real=(a.grace_period, a.reduction_factor, a.rule)),
        "verdict": verdict(grid_n0, matched, survivors, agreement, ratio_met=ratio_met),
        "trials": {key: [_trial_json(r) for r in sorted(records[key], key=lambda r: r.number)] for key in records},
    }


def _study_facts(config: Any, run: dict[str, Any], records: list) -> dict[str, Any]:
    """One study's row: its trials, the epochs they trained (Σ reached) out of the most possible, run facts."""
    return {
        "name": config.name,
        "trials": len(records),
        "epochs_trained": sum(_reached(r) for r in records),
        "epochs_max": len(records) * config.max_epochs,
        **run,
        "asha": None if config.asha is None else config.asha.model_dump(),
    }


def verdict(grid_n0: Any, matched: dict[str, Any], survivors: list, agreement: dict[str, Any], *,
            ratio_met: bool) -> dict[str, Any]:
    """Does ASHA (ii) give the grid's answer (per-depth signs, n₀ inside the grid's CI), and is it evidence?"""
    grid_signs = _signs(grid_n0)
    matched_signs = {p["depth"]: p["delta"] > 0 for p in matched["points"]}
    same_signs = bool(grid_signs) and grid_signs == matched_signs
    survivors_one = survivors[0] if survivors else None
    grid_ci = grid_n0.ci if grid_n0 and grid_n0.ci else None
    n0_in_ci = (matched["n0"] is not None and grid_ci is not None
                and _le(grid_ci[0], matched["n0"]) and _le(matched["n0"], grid_ci[1]))
    grid_resolved = _resolved(grid_n0.points if grid_n0 else [])
    return {
        "same_signs_grid_vs_asha_matched": same_signs,
        "asha_matched_n0_inside_grid_ci": n0_in_ci,
        "same_status": bool(grid_n0) and grid_n0.status == matched["status"],
        "asha_survivors_status": survivors_one.status if survivors_one else None,
        "target_met": same_signs and ratio_met,
        "grid_depths_resolved": grid_resolved,
        "asha_matched_depths_resolved": _resolved(matched["points"]),
        "depths": len(grid_n0.points) if grid_n0 else 0,
        "caveats": evidence_caveats(grid_resolved, grid_n0, matched, agreement),
    }


def evidence_caveats(grid_resolved: int, grid_n0: Any, matched: dict[str, Any],
                     agreement: dict[str, Any]) -> list[str]:
    """Why a sign agreement may not be evidence: the criterion compares signs, and two noisy readings can
    agree by chance or by a bias shared at every depth (shallow nets ahead early), not by prediction.

    ASHA's matched-fidelity answer is the grid's answer read at an early epoch (training is
    deterministic), so it predicts the final answer only if the grid's answer has settled there: the
    candidates' order and Δ's signs hold at that epoch and at every later one (`stable_from`). One
    epoch that happens to agree while later ones flip is a coincidence, not a prediction.
    """
    caveats = []
    if grid_n0 and grid_n0.points and not grid_resolved:
        caveats.append("the grid resolves no depth (every Δ interval spans 0), so the signs compared are those "
                       "of unresolved estimates")
    rho = {row["epoch"]: row["trial_spearman"] for row in agreement["rows"]}
    read = sorted({p["epoch"] for p in matched["points"] if p["epoch"] in rho})  # rows stop before the last epoch
    early = [e for e in read if e < agreement["stable_from"]]
    if early:
        caveats.append(f"ASHA (ii) reads epoch {', '.join(map(str, early))}, before the grid's answer settles "
                       f"(its candidate order and signs hold from epoch {agreement['stable_from']} on; trial "
                       f"ρ with the final errors at epoch {', '.join(map(str, early))}: "
                       f"{', '.join(f'{rho[e]:.2f}' for e in early)}): an agreement there is not a prediction "
                       "of the final answer")
    asha_resolved = _resolved(matched["points"])
    if asha_resolved < grid_resolved:
        caveats.append(f"ASHA (ii) is less certain: its Δ intervals exclude 0 at {asha_resolved} of "
                       f"{len(matched['points'])} depths, the grid's at {grid_resolved}")
    return caveats


STABLE_RHO = 0.9  # candidate-level Spearman: 5 candidates, at most one adjacent swap; 3, the exact order


def rank_agreement(records: list, by_epoch: dict[int, Any], final: Any, *, max_epochs: int) -> dict[str, Any]:
    """How early the grid's ranking and answer settle: per epoch, Spearman of each trial's error with its
    final error, of each candidate's seed-mean with its final seed-mean, and whether Δ has the final
    signs at every depth. `stable_from` is the first epoch from which every later epoch has candidate
    ρ ≥ STABLE_RHO and the final signs; a multi-fidelity study deciding earlier decides on noise, and
    one that lets every trial reach it trains at least stable_from / max_epochs of the grid's epochs.
    """
    final_signs = _signs(final)
    full = [r for r in records if max_epochs in r.intermediate]
    names = sorted({r.name for r in full})
    rows = []
    for e in sorted(by_epoch):
        at = [r for r in full if e in r.intermediate]
        trial_rho = float(stats.spearmanr([r.intermediate[e] for r in at], [r.value for r in at]).statistic)
        means = [(np.mean([r.intermediate[e] for r in at if r.name == n]),
                  np.mean([r.value for r in at if r.name == n])) for n in names]
        cand_rho = float(stats.spearmanr(*zip(*means, strict=True)).statistic)
        rows.append({"epoch": e, "trial_spearman": round(trial_rho, 3), "candidate_spearman": round(cand_rho, 3),
                     "final_signs": bool(final_signs) and _signs(by_epoch[e]) == final_signs})
    stable_from = max_epochs
    for row in reversed(rows):
        if not row["candidate_spearman"] >= STABLE_RHO or not row["final_signs"]:  # NaN: no ranking
            break
        stable_from = row["epoch"]
    return {"rows": rows, "trials": len(full), "candidates": len(names), "stable_rho": STABLE_RHO,
            "stable_from": stable_from,
            "ratio_floor": round(stable_from / max_epochs, 4)}


def _reached(r: Any) -> int:
    """Epochs a trial trained: its `epochs` attribute, else its last reported epoch."""
    if r.epochs is not None:
        return int(r.epochs)
    return max(r.intermediate, default=0)


def _one(results: list) -> Any:
    """The single (budget, block) n₀ result of this one-budget space."""
    return results[0] if results else None


def _at_epoch(records: list, epoch: int) -> list:
    """Records as if training had stopped after `epoch` (value = that epoch's error), for the grid."""
    return [dataclasses.replace(r, value=r.intermediate[epoch], state="COMPLETE", full_fidelity=True)
            for r in records if epoch in r.intermediate]


def _sign(delta: float, ci: tuple[float, float] | None) -> str:
    s = "+" if delta > 0 else "-" if delta < 0 else "0 (tie)"
    if ci is not None and ci[0] <= 0 <= ci[1]:
        s += " (CI spans 0)"
    return s


def _signs(result: Any) -> dict[int, bool]:
    """Depth → multi worse (Δ > 0)? n₀ is the last + → ≤ 0 crossing, so a tie counts with "better"."""
    if result is None:
        return {}
    return {p.depth: p.delta > 0 for p in result.points}


def _resolved(points: list) -> int:
    """Depths whose Δ interval excludes 0 (a sign the data can vouch for)."""
    cis = [p["ci"] if isinstance(p, dict) else p.ci for p in points]
    return sum(not (lo <= 0 <= hi) for lo, hi in cis)


def _le(a: float, b: float) -> bool:
    return a <= b or (math.isinf(a) and math.isinf(b) and a == b)


def matched_fidelity_n0(records: list, *, seeds: list[int], seed: int, n_boot: int,
                        level: float = 0.95) -> dict[str, Any]:
    """Δ(d) = err(multi_d) − err(plain) at e_d, the highest epoch EVERY seed of both reached; n₀ across d.

    Same conventions as `archsearch.analysis.threshold.n0_analysis` (seed-bootstrap of each candidate's mean,
    t-widened percentile interval with df = Σ(seeds − 1), n₀ from the widened Δ replicates, last
    + → ≤ 0 crossing interpolated), but each depth is compared at its own fidelity e_d. Labelled a
    multi-fidelity estimate.
    """
    trials = [r for r in records if r.state in ("COMPLETE", "PRUNED") and r.intermediate
              and r.family in ("resnet", "multiresnet") and block_of(r.name) != "wide"]
    by_name: dict[str, list] = defaultdict(list)
    for r in trials:
        by_name[r.name].append(r)
    complete = {n: rs for n, rs in by_name.items() if sorted(r.seed for r in rs) == sorted(seeds)}
    plain = [n for n, rs in complete.items() if (rs[0].branches or 1) == 1]
    multi: dict[int, list[str]] = defaultdict(list)
    for n, rs in complete.items():
        if (rs[0].branches or 1) > 1 and rs[0].depth is not None:
            multi[rs[0].depth].append(n)
    base = {"label": "multi-fidelity estimate: each depth compared with the plain reference at the highest "
                     "epoch every seed of both reached", "n0": None, "ci": None, "status": "insufficient",
            "p_crossed": None, "points": []}
    if len(plain) != 1 or not multi:
        base["message"] = f"needs exactly one plain candidate with all seeds (got {plain}) and a multi one"
        return base
    ref = plain[0]
    rng = np.random.default_rng([seed, 71])
    points, boots = [], []
    for depth in sorted(multi):
        names = multi[depth]
        e = min(max(r.intermediate) for n in [*names, ref] for r in by_name[n])
        vals = {n: np.array([r.intermediate[e] for r in by_name[n]], dtype=float) for n in [*names, ref]}
        bs = {n: bootstrap_means(v, n_boot, rng) for n, v in vals.items()}
        point = float(np.mean([vals[n].mean() for n in names]) - vals[ref].mean())
        boot = np.mean([bs[n] for n in names], axis=0) - bs[ref]
        df = sum(len(v) - 1 for v in vals.values())
        ci = interval(boot, level, point=point, df=df)
        points.append({"depth": depth, "epoch": e, "delta": point, "ci": list(ci), "sign": _sign(point, None),
                       "sign_note": _sign(point, ci), "multi": names, "plain": ref,
                       "multi_mean": float(np.mean([vals[n].mean() for n in names])),
                       "plain_mean": float(vals[ref].mean()), "n_seeds": min(len(v) for v in vals.values())})
        boots.append(widened(boot, point, df, level))  # n₀'s interval as wide as the Δ ones
    depths = np.array([p["depth"] for p in points], dtype=float)
    n0 = float(crossing_depth(depths, np.array([[p["delta"] for p in points]]))[0])
    boot_n0 = crossing_depth(depths, np.stack(boots, axis=1))
    status = "crossed" if math.isfinite(n0) else ("below_range" if n0 < 0 else "above_range")
    ci = interval(boot_n0, level)
    base.update(n0=n0, ci=list(ci), status=status, p_crossed=float(np.isfinite(boot_n0).mean()), points=points,
                epochs_compared=sorted({p["epoch"] for p in points}))
    return base


def what_if(grid: list, asha: list, seconds: dict, *, max_epochs: int, slots: int, seeds: list[int],
            seed: int, n_boot: int, real: tuple[int, float, str]) -> dict[str, Any]:
    """Replay the real ASHA setting under its rule (validation against the real run), then other settings/orders."""
    grid_signs = _signs(_one(n0_analysis(grid, seed=seed, n_boot=n_boot)))
    by_number = sorted(grid, key=lambda r: r.number)
    names = list(dict.fromkeys(r.name for r in by_number))
    orders = {"as run (plain first)": by_number,
              "plain last": sorted(by_number, key=lambda r: (-names.index(r.name), r.seed))}
    actual = {(r.name, r.seed): _reached(r) for r in asha}
    _, replay_real = REPLAYS[real[2]]
    check = replay_real(grid, seconds, max_epochs=max_epochs, grace=real[0], rf=real[1], slots=slots,
                        order=by_number)
    mismatches = [f"{r.name} seed {r.seed}: replay {r.epochs}, real {actual.get((r.name, r.seed))}"
                  for r in check if actual.get((r.name, r.seed)) != r.epochs]
    rows = []
    total = sum(_reached(r) for r in grid)
    for (rule, replay), (label, order) in itertools.product(REPLAYS.values(), orders.items()):
        for rf in (3, 4):
            for grace in (1, 2, 3):
                recs = replay(grid, seconds, max_epochs=max_epochs, grace=grace, rf=rf, slots=slots, order=order)
                m = matched_fidelity_n0(recs, seeds=seeds, seed=seed, n_boot=n_boot)
                signs = {p["depth"]: p["delta"] > 0 for p in m["points"]}
                rows.append({
                    "rule": rule, "order": label, "reduction_factor": rf, "grace_period": grace,
                    "rungs": rung_epochs(max_epochs, grace, rf),
                    "ratio": round(sum(r.epochs for r in recs) / total, 4),
                    "full_fidelity_trials": sum(r.full_fidelity for r in recs),
                    "matched": {"status": m["status"], "n0": m["n0"], "ci": m["ci"],
                                "epochs": [p["epoch"] for p in m["points"]],
                                "signs": ["+" if p["delta"] > 0 else "-" if p["delta"] < 0 else "0"
                                          for p in m["points"]]},
                    "same_signs": bool(signs) and signs == grid_signs,
                })
    return {"label": "offline replay of ASHA on the grid's per-epoch errors (simulated order; not a run)",
            "validation": {"setting": {"grace_period": real[0], "reduction_factor": real[1], "rule": real[2]},
                           "trials": len(check), "mismatches": mismatches},
            "rows": rows}


def survivor_deltas(records: list) -> list[dict[str, Any]]:
    """Diagnostic, biased: Δ at the highest epoch where both have ≥ 1 trial, over whichever seeds got there."""
    trials = [r for r in records if r.state in ("COMPLETE", "PRUNED") and r.intermediate
              and r.family in ("resnet", "multiresnet")]
    by_name: dict[str, list] = defaultdict(list)
    for r in trials:
        by_name[r.name].append(r)
    plain = [n for n, rs in by_name.items() if (rs[0].branches or 1) == 1]
    if len(plain) != 1:
        return []
    ref = plain[0]
    out = []
    for n, rs in sorted(by_name.items(), key=lambda kv: kv[1][0].depth or 0):
        if n == ref:
            continue
        e = min(max(max(r.intermediate) for r in rs), max(max(r.intermediate) for r in by_name[ref]))
        m = [r.intermediate[e] for r in rs if e in r.intermediate]
        p = [r.intermediate[e] for r in by_name[ref] if e in r.intermediate]
        d = float(np.mean(m) - np.mean(p))
        out.append({"depth": rs[0].depth, "name": n, "epoch": e, "delta": d, "sign": _sign(d, None),
                    "n_multi": len(m), "n_plain": len(p)})
    return out


def determinism(grid: list, asha: list) -> dict[str, Any]:
    """Largest |error difference| between an ASHA trial and the grid trial with the same (name, seed)."""
    ref = {(r.name, r.seed): r.intermediate for r in grid}
    diffs, pairs = [], 0
    for r in asha:
        g = ref.get((r.name, r.seed))
        if g is None:
            continue
        common = [e for e in r.intermediate if e in g]
        pairs += bool(common)
        diffs += [abs(r.intermediate[e] - g[e]) for e in common]
    return {"pairs": pairs, "values_compared": len(diffs), "max_abs_diff": max(diffs) if diffs else None}


def _candidates(records: list) -> list[dict[str, Any]]:
    seen = {}
    for r in records:
        seen.setdefault(r.name, {"name": r.name, "family": r.family, "depth": r.depth, "k": r.branches,
                                 "params": r.params, "macs": r.macs, "budget": r.budget})
    return sorted(seen.values(), key=lambda c: ((c["k"] or 1) > 1, c["depth"] or 0))


def _n0_json(r: Any) -> dict[str, Any] | None:
    if r is None:
        return None
    return {
        "budget": r.budget, "block": r.block, "status": r.status, "n0": r.n0,
        "ci": list(r.ci) if r.ci else None, "p_crossed": r.p_crossed, "min_seeds": r.min_seeds,
        "describe": r.describe(), "message": r.message,
        "points": [{"depth": p.depth, "delta": p.delta, "ci": list(p.ci), "sign": _sign(p.delta, None),
                    "sign_note": _sign(p.delta, p.ci), "multi": p.multi, "plain": p.plain} for p in r.points],
    }


def _trial_json(r: Any) -> dict[str, Any]:
    return {"number": r.number, "name": r.name, "seed": r.seed, "state": r.state, "epochs": _reached(r),
            "value": r.value, "intermediate": {str(k): round(v, 3) for k, v in sorted(r.intermediate.items())}}


