"""What an answer costs: the n₀ question by exhaustive grid vs by ASHA, at reduced fidelity.

The Multi-ResNet paper's effective-range question (past which depth do k > 1 residual functions beat
more depth at an equal budget?) is asked at toy scale on real CIFAR-10: a plain resnet-50 (widths
16/16/32, 0.22M params) against Multi-ResNets of depth 14 (k = 4) and 26 (k = 2), the two depths that
bracket the paper's n₀ ≈ 20, with stage widths fitted onto the same count
(search_spaces/answer_cost_bracket.yaml), 5 seeds each, 16 epochs on 4,000 training images (2,000
validation images), precise BN. Two studies run in one invocation, with the same candidates, seeds,
schedule and data split (studies/answer_cost_grid.yaml, studies/answer_cost_asha.yaml):

  (a) grid: every candidate x seed trains all epochs (`sampler: grid`, `asha: null`);
  (b) ASHA: the same trials under ASHA as published (`rule: promote`; grace 1, reduction factor 4:
      rungs at epochs 1 and 4; `--asha-set asha.rule=stop` for Ray's stop rule).

Seeds over depths: the first default, 4 depths (8/14/20/26, search_spaces/answer_cost.yaml) x 3 seeds
at the same training cost, resolved no depth (seed spread 0.3-2.6 points, as large as the effects):
`--set space=../search_spaces/answer_cost.yaml --set "seeds=[0, 1, 2]"` reruns it.

Reported: n₀ with its bootstrap interval and the per-depth sign of Δ = err(multi) − err(plain),
the epochs each study trained (Σ over trials of the epochs reached), the ratio ASHA / grid (target
≤ 1/4 with the same answer), the wall time of each `run_study` call, and caveats when a sign
agreement is no evidence (grid resolves no depth; ASHA read before the grid's answer settles; ASHA
less certain than the grid).

How the ASHA study's answer is derived (archsearch.analysis.estimators feeds answers with full-fidelity trials
only, and under ASHA most trials never finish):
  (i)  "survivors": `archsearch.analysis.estimators.n0_analysis` on the ASHA study as it is, i.e. on the trials
       that ASHA let finish. Usually insufficient or built on one seed of a few candidates.
  (ii) "matched fidelity" (labelled as a multi-fidelity estimate): for each depth d, the multi
       candidate and the plain reference are compared at e_d, the highest epoch that EVERY seed of
       both reached (so each mean is over the same, unselected set of seeds; comparing only the seeds
       ASHA promoted would favour lucky seeds). Δ(d) and its interval use analysis' bootstrap
       (`bootstrap_means`, `interval` with the t-widening, `crossing_depth`), with n₀ interpolated
       across depths whose e_d may differ. A survivor-selected variant (highest epoch where both have
       at least one trial, means over whichever seeds got there) is reported beside it as a
       diagnostic, marked biased.
Whether low rungs can be trusted is read off the grid: `archsearch.analysis.estimators.fidelity_check` (rank
correlation of each rung's error with the final error) and the grid's own Δ signs at each rung epoch.
Training is deterministic on CPU, so an ASHA trial's per-epoch errors equal the grid trial's with the
same (architecture, seed); the benchmark checks that and reports the largest difference. That also
allows an offline what-if: ASHA's decisions replayed on the grid's curves for other reduction factors,
grace periods and candidate orders (validated by replaying the real setting against the real run), under
Ray's rule (stop at once when below the rung's percentile so far) and under the published one (Li et al.
2020: pause at the rung, promote the top 1/rf later), which trains fewer epochs but reads the same rungs.
`--reanalyze WORKDIR` rebuilds the report from a previous run's studies without training.

    ARCHSEARCH_DATA=/work/shared/data/cifar10-jpg.tar.gz python benchmarks/answer_cost.py
    ARCHSEARCH_DATA=... python benchmarks/answer_cost.py --quick    # smoke run (tiny, ~1 min)

Results: benchmarks/results/answer_cost.{json,md} (with --quick: <workdir>/answer_cost_quick.*).
The studies are kept under --workdir (default: a new directory under the system temp dir).
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import math
import os
import platform
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from archsearch.orchestrate.asha import rung_epochs
from archsearch.orchestrate.replay import REPLAYS

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
STUDIES = {"grid": ROOT / "studies" / "answer_cost_grid.yaml", "asha": ROOT / "studies" / "answer_cost_asha.yaml"}
SEED = 0  # bootstrap seed of every interval (training seeds are the studies' `seeds`)
TARGET_RATIO = 0.25
RULES = {"stop": "Ray's: a trial below its rung's top 1/η on arrival stops",
         "promote": "as published, Li et al. 2020: pause at each rung, promote the top 1/η later"}
FACTS = "answer_cost_facts.json"  # per-study run facts kept in the workdir (for --reanalyze)
QUICK = ["train.epochs=3", "train.subset=128", "train.val_size=128", "train.batch_size=32", "seeds=[0, 1]"]


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    workdir, facts = _workdir_and_facts(args)
    out = args.out or (workdir / "answer_cost_quick" if args.quick else HERE / "results" / "answer_cost")
    out = out.resolve()
    configs, records, seconds = _run_studies(args, workdir, facts)
    report = build_report(configs, facts["studies"], records, seconds, seed=args.seed, n_boot=args.n_boot)
    report["branch_strategy_prewarm"] = facts.get("branch_strategy_prewarm")
    report["workdir"] = str(workdir)
    report["quick"] = args.quick
    report["command"] = facts["command"]
    report["ran"] = [facts.get("started"), facts.get("finished")]
    report["reruns"] = facts.get("reruns", [])
    if args.reanalyze is not None:
        report["reanalyzed"] = ("python benchmarks/answer_cost.py --reanalyze WORKDIR "
                                "(the same studies, re-analysed with the current code)")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(report, indent=2, default=_json_default) + "\n")
    md = render_markdown(report)
    out.with_suffix(".md").write_text(md)
    print(md)
    print(f"wrote {out.with_suffix('.json')} and {out.with_suffix('.md')}; studies in {workdir}")
    return 0


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: 3 epochs, 128 images, 2 seeds")
    parser.add_argument("--workdir", type=Path, default=None,
                        help="where runs/<study>/ go (must not hold these studies yet); default: a new temp dir")
    parser.add_argument("--out", type=Path, default=None,
                        help="output path without suffix (default benchmarks/results/answer_cost)")
    parser.add_argument("--seed", type=int, default=SEED, help="bootstrap seed of the analysis")
    parser.add_argument("--n-boot", type=int, default=2000)
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a key of both study files (YAML value), e.g. train.subset=2000")
    parser.add_argument("--asha-set", dest="asha_overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a key of the ASHA study only, e.g. asha.rule=promote (kept for --reanalyze)")
    parser.add_argument("--reanalyze", type=Path, default=None, metavar="WORKDIR",
                        help="no training: rebuild the report from the studies a previous run left in WORKDIR")
    parser.add_argument("--rerun", choices=sorted(STUDIES), action="append", default=[],
                        help="with --reanalyze: train this study again (its old run directory is moved aside)")
    args = parser.parse_args(argv)
    if args.rerun and args.reanalyze is None:
        parser.error("--rerun needs --reanalyze WORKDIR (the run whose other study is kept)")
    return args


def _workdir_and_facts(args: argparse.Namespace) -> tuple[Path, dict[str, Any]]:
    """The run's directory and its facts: read back (and the flags restored) with --reanalyze, else new."""
    if args.reanalyze is not None:
        workdir = args.reanalyze.resolve()
        facts = json.loads((workdir / FACTS).read_text())
        args.quick, args.overrides = facts["quick"], facts["overrides"]
        if "asha" in args.rerun and args.asha_overrides:
            facts["asha_overrides"] = args.asha_overrides
        args.asha_overrides = facts.get("asha_overrides", [])
        return workdir, facts
    workdir = (args.workdir or Path(tempfile.mkdtemp(prefix="archsearch-answer-cost-"))).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    facts = {"quick": args.quick, "overrides": args.overrides, "asha_overrides": args.asha_overrides,
             "studies": {},
             "command": "python benchmarks/answer_cost.py" + (" --quick" if args.quick else "")
             + "".join(f" --set {o}" for o in args.overrides)
             + "".join(f" --asha-set {o}" for o in args.asha_overrides),
             "started": time.strftime("%Y-%m-%d %H:%M:%S")}
    return workdir, facts


def _run_studies(args: argparse.Namespace, workdir: Path, facts: dict[str, Any]) -> tuple[dict, dict, dict]:
    """Load both studies' configs, train those not kept, and read their records (runs/ is under workdir)."""
    import optuna

    from archsearch.analysis.estimators import load_records
    from archsearch.study.config import load_study

    overrides = (QUICK if args.quick else []) + args.overrides
    cwd = os.getcwd()
    records: dict[str, list] = {}
    configs = {}
    os.chdir(workdir)  # runs/<study>/ is relative to the working directory
    try:
        for key, path in STUDIES.items():
            extra = [f"name=answer_cost_{key}" + ("_quick" if args.quick else "")]
            epochs = [o.split("=", 1)[1] for o in overrides if o.replace(" ", "").startswith("train.epochs=")]
            if key == "asha" and epochs:  # the ASHA study's max_epochs follows train.epochs
                extra.append(f"asha.max_epochs={epochs[-1]}")
            if key == "asha":
                extra += args.asha_overrides
            configs[key] = load_study(path, overrides + extra)
        if args.reanalyze is None:
            facts["branch_strategy_prewarm"] = prewarm_branch_strategies(configs["grid"])
            print(f"branch strategies: {facts['branch_strategy_prewarm']}", flush=True)
        for key, config in configs.items():
            if args.reanalyze is None or key in args.rerun:
                _train_study(key, config, args, workdir, facts)
            study = optuna.load_study(study_name=config.name, storage=config.storage_url)
            records[key] = load_records(study)
            if key == "grid":
                seconds = epoch_seconds(study)
    finally:
        os.chdir(cwd)
    return configs, records, seconds


def _train_study(key: str, config: Any, args: argparse.Namespace, workdir: Path, facts: dict[str, Any]) -> None:
    """Run one study (moving an old run aside with --rerun) and keep its run facts in the workdir."""
    from archsearch.orchestrate.run import run_study  # lazy: imports Ray

    if config.run_dir.exists() and key in args.rerun:
        config.run_dir.rename(config.run_dir.with_name(config.run_dir.name + time.strftime(".old-%H%M%S")))
        flags = "".join(f" --asha-set {o}" for o in args.asha_overrides) if key == "asha" else ""
        facts.setdefault("reruns", []).append(f"{key} {time.strftime('%Y-%m-%d %H:%M')}{flags}")
    print(f"== {key}: {config.name} ({config.run_dir})", flush=True)
    load0 = os.getloadavg()[0]
    keys0 = _strategy_keys()
    t0 = time.perf_counter()
    result = run_study(config)
    wall = time.perf_counter() - t0
    facts["studies"][key] = {
        "counts": result["counts"], "wall_seconds": round(wall, 1),
        "fit_seconds": round(result["fit_seconds"], 1),
        "sum_train_seconds": round(sum(t[1] for t in result["trial_seconds"]), 1),
        "slots": result["slots"], "loadavg_before_after": [round(load0, 2), round(os.getloadavg()[0], 2)],
        "branch_strategy_keys_added": len(_strategy_keys() - keys0)}
    facts["finished"] = time.strftime("%Y-%m-%d %H:%M:%S")
    (workdir / FACTS).write_text(json.dumps(facts, indent=2) + "\n")
    print(f"   {result['counts']}  wall {wall:.0f} s", flush=True)


def epoch_seconds(study: Any) -> dict[tuple[str, int], float]:
    """(name, seed) → mean training seconds per epoch of the grid trial (for the offline ASHA replay)."""
    out = {}
    for t in study.get_trials(deepcopy=False):
        ua = t.user_attrs
        if ua.get("train_seconds") and ua.get("epochs"):
            out[(ua["name"], int(ua["seed"]))] = float(ua["train_seconds"]) / int(ua["epochs"])
    return out


def prewarm_branch_strategies(config: Any) -> dict[str, Any]:
    """Fill the `auto` branch-strategy cache for every candidate and batch shape, serially, before any trial.

    `auto` times loop vs grouped execution per (device, threads, input shape) on first use and caches
    the winner. Two trials that meet a new shape at the same time both time it and may choose
    differently (last writer wins in the cache file), and the strategies agree only up to float
    reassociation, which training amplifies. Measuring every shape once here, in one process, makes
    both studies read the same choices, so an ASHA trial replays its grid twin exactly.
    """
    import torch

    from archsearch.nn.build import build
    from archsearch.space.space import grid
    from archsearch.study.storage import load_space_of
    from archsearch.train.loop import resolve_precision

    tc = config.train_config
    amp, channels_last = resolve_precision(tc, torch.device("cpu"))  # time shapes as trials will run them
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    batches = sorted({tc.batch_size, (tc.subset or tc.batch_size) % tc.batch_size} - {0})
    evals = sorted({min(tc.eval_batch_size, tc.val_size), tc.val_size % tc.eval_batch_size} - {0})
    threads = torch.get_num_threads()
    keys0 = _strategy_keys()
    t0 = time.perf_counter()
    torch.set_num_threads(max(1, int(config.resources.cpus)))  # trials run with this many threads
    try:
        for cand in grid(load_space_of(config)):
            net = build(cand.spec).to(memory_format=fmt)
            with torch.autocast("cpu", dtype=amp or torch.bfloat16, enabled=amp is not None):
                net.train()
                for b in batches:
                    net(torch.randn(b, 3, 32, 32).contiguous(memory_format=fmt))
                net.eval()
                with torch.no_grad():
                    for b in evals:
                        net(torch.randn(b, 3, 32, 32).contiguous(memory_format=fmt))
    finally:
        torch.set_num_threads(threads)
    return {"seconds": round(time.perf_counter() - t0, 1), "train_batches": batches, "eval_batches": evals,
            "keys_added": len(_strategy_keys() - keys0)}


def _strategy_keys() -> set[str]:
    from archsearch.nn.branches import _cache_file

    try:
        return set(json.loads(_cache_file().read_text()))
    except (OSError, ValueError):
        return set()


# ----------------------------------------------------------------------------------- analysis
def build_report(configs: dict, runs: dict, records: dict, seconds: dict, *, seed: int,
                 n_boot: int) -> dict[str, Any]:
    from archsearch.analysis.estimators import fidelity_check, n0_analysis

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
    from scipy import stats

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

    Same conventions as `archsearch.analysis.estimators.n0_analysis` (seed-bootstrap of each candidate's mean,
    t-widened percentile interval with df = Σ(seeds − 1), n₀ from the widened Δ replicates, last
    + → ≤ 0 crossing interpolated), but each depth is compared at its own fidelity e_d. Labelled a
    multi-fidelity estimate.
    """
    from archsearch.analysis.estimators import block_of, bootstrap_means, crossing_depth, interval, widened

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
    from archsearch.analysis.estimators import n0_analysis

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


def _json_default(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, tuple | set):
        return list(o)
    return str(o)


# ----------------------------------------------------------------------------------- report
def _fmt_depth(v: float | None, lo: int, hi: int) -> str:
    if v is None:
        return "–"
    if v == -math.inf:
        return f"<{lo}"
    if v == math.inf:
        return f">{hi}"
    return f"{v:.1f}"


def _fmt_n0(ans: dict | None) -> str:
    if not ans or ans.get("status") == "insufficient" or not ans.get("points"):
        return (ans or {}).get("message") or "insufficient"
    lo, hi = ans["points"][0]["depth"], ans["points"][-1]["depth"]
    head = {"crossed": "n₀ = ", "below_range": "n₀ ", "above_range": "n₀ "}[ans["status"]]
    n0 = _fmt_depth(ans["n0"], lo, hi)
    ci = ans.get("ci")
    ci_s = f" (95 % CI {_fmt_depth(ci[0], lo, hi)} – {_fmt_depth(ci[1], lo, hi)})" if ci else ""
    return head + n0 + ci_s


def _fmt_delta(p: dict) -> str:
    lo, hi = p["ci"]
    return f"{p['delta']:+.2f} [{lo:+.2f}, {hi:+.2f}]"


def render_markdown(rep: dict[str, Any]) -> str:
    lines = _md_summary(rep) + _md_settle(rep) + _md_fidelity(rep) + _md_what_if(rep)
    return "\n".join(lines)


def _md_summary(rep: dict[str, Any]) -> list[str]:
    """Title, command, setting, and the grid-vs-ASHA table with Δ per depth."""
    g, a = rep["studies"]["grid"], rep["studies"]["asha"]
    ans = rep["answers"]
    grid, matched = ans["grid"], ans["asha_matched_fidelity"]
    surv = ans["asha_survivors"][0] if ans["asha_survivors"] else None
    t = rep["train"]
    lines = [
        "# Answer cost: n₀ by exhaustive grid vs ASHA" + (" (QUICK SMOKE RUN — not a result)" if rep["quick"] else ""),
        "",
        f"Command: `ARCHSEARCH_DATA=/work/shared/data/cifar10-jpg.tar.gz {rep['command']}` "
        f"({rep['machine']['cpus']} CPU cores, {g['slots']} concurrent trials, no GPU)"
        + "".join(f"; study retrained with `--reanalyze WORKDIR --rerun {r.split()[0]}"
                  f"{''.join(' ' + x for x in r.split()[3:])}` at {' '.join(r.split()[1:3])}"
                  for r in rep.get("reruns") or [])
        + (f"; tables re-analysed from the stored studies with the current code (`{rep['reanalyzed'].split(' (')[0]}`)"
           if rep.get("reanalyzed") else "") + ".",
        "",
        f"Reduced-fidelity n₀ question: plain {rep['candidates'][0]['name']} vs Multi-ResNets at equal params "
        f"({', '.join(c['name'] for c in rep['candidates'][1:])}); {len(rep['seeds'])} seeds "
        f"{rep['seeds']}; {rep['max_epochs']} epochs on {t['subset']} CIFAR-10 training images, "
        f"{t['val_size']} validation images; {t['schedule']} lr {t['lr']}, batch {t['batch_size']}. "
        f"ASHA: rule {a['asha'].get('rule', 'stop')} ({RULES[a['asha'].get('rule', 'stop')]}), "
        f"grace {a['asha']['grace_period']}, reduction factor {a['asha']['reduction_factor']:g}, "
        f"rungs at epochs {rep['asha_rungs']}. Bootstrap seed {rep['bootstrap']['seed']}, "
        f"{rep['bootstrap']['n_boot']} replicates. Δ = err(multi) − err(plain) in points of validation error; "
        "+ means the Multi-ResNet is worse.",
        "",
        "| | (a) grid | (b) ASHA |",
        "|---|---|---|",
        f"| trials (states) | {g['trials']} ({_states(g['counts'])}) | {a['trials']} ({_states(a['counts'])}) |",
        f"| epochs trained (Σ reached) | {g['epochs_trained']} | {a['epochs_trained']} |",
        f"| ratio ASHA / grid | 1 | **{rep['epochs_ratio_asha_over_grid']:.3f}** "
        f"(target ≤ {rep['target_ratio']}: {'met' if rep['ratio_met'] else 'MISSED'}) |",
        f"| wall time of run_study | {g['wall_seconds']:.0f} s | {a['wall_seconds']:.0f} s |",
        f"| Σ trial training seconds | {g['sum_train_seconds']:.0f} s | {a['sum_train_seconds']:.0f} s |",
        f"| n₀ (full-fidelity trials, archsearch.analysis) | {_fmt_n0(grid)} | (i) survivors: {_fmt_n0(surv)} |",
        f"| n₀, multi-fidelity estimate (matched epoch per depth) | – | (ii) {_fmt_n0(matched)} |",
    ]
    grid_pts = {p["depth"]: p for p in (grid or {}).get("points", [])}
    m_pts = {p["depth"]: p for p in matched.get("points", [])}
    s_pts = {p["depth"]: p for p in (surv or {}).get("points", [])}
    for d in sorted(set(grid_pts) | set(m_pts)):
        gp, mp, sp = grid_pts.get(d), m_pts.get(d), s_pts.get(d)
        gcell = f"{_fmt_delta(gp)} **{gp['sign']}**" if gp else "–"
        mcell = f"(ii) @ epoch {mp['epoch']}: {_fmt_delta(mp)} **{mp['sign']}**" if mp else "(ii) –"
        if sp:
            mcell += f"; (i) {_fmt_delta(sp)} {sp['sign']}"
        lines.append(f"| Δ at depth {d} | {gcell} | {mcell} |")
    return lines


def _md_settle(rep: dict[str, Any]) -> list[str]:
    """The verdict, its caveats, and when the grid's answer settles (its trials read at each epoch)."""
    grid = rep["answers"]["grid"]
    grid_pts = {p["depth"]: p for p in (grid or {}).get("points", [])}
    lines: list[str] = []
    v = rep["verdict"]
    lines += [
        "",
        "**Same answer (per-depth sign of Δ, > 0 vs ≤ 0, grid vs ASHA (ii))**: "
        f"{'yes' if v['same_signs_grid_vs_asha_matched'] else 'NO'}; "
        f"same n₀ status: {'yes' if v['same_status'] else 'no'}; ASHA (ii) n₀ inside the grid's CI: "
        f"{'yes' if v['asha_matched_n0_inside_grid_ci'] else 'no'}. "
        f"**Target (same answer at ≤ 1/4 of the grid's epochs): {'MET' if v['target_met'] else 'NOT MET'}.** "
        f"Depths whose Δ interval excludes 0: grid {v['grid_depths_resolved']} of {v['depths']}, "
        f"ASHA (ii) {v['asha_matched_depths_resolved']} of {v['depths']}.",
        "",
        *(["**Caveats**: " + "; ".join(v["caveats"]) + ".", ""] if v.get("caveats") else []),
        "## When does the grid's answer settle? (grid trials read at each epoch)",
        "",
        f"Spearman of each trial's error at that epoch with its final error ({rep['rank_agreement']['trials']} "
        "trials), and of each candidate's seed-mean with its final seed-mean "
        f"({rep['rank_agreement']['candidates']} candidates); then the grid's answer read there.",
        "",
        "| epoch | trial ρ | candidate ρ | n₀ | " + " | ".join(f"Δ({d})" for d in sorted(grid_pts))
        + " | final signs |",
        "|---|---|---|---|" + "---|" * len(grid_pts) + "---|",
    ]
    ra = rep["rank_agreement"]
    agree = {str(row["epoch"]): row for row in ra["rows"]}
    for e, r in list(rep["grid_at_epochs"].items()) + [(str(rep["max_epochs"]), grid)]:
        pts = {p["depth"]: p for p in (r or {}).get("points", [])}
        cells = [f"{pts[d]['delta']:+.2f} {pts[d]['sign']}" if d in pts else "–" for d in sorted(grid_pts)]
        row = agree.get(e)
        label = e + (" (rung)" if int(e) in rep["asha_rungs"] else " (final)" if row is None else "")
        rhos = f"{row['trial_spearman']:.2f} | {row['candidate_spearman']:.2f}" if row else "1 | 1"
        same = ("yes" if row["final_signs"] else "no") if row else "–"
        lines.append(f"| {label} | {rhos} | {_fmt_n0(r)} | " + " | ".join(cells) + f" | {same} |")
    lines += ["", f"The candidates' order (ρ ≥ {ra['stable_rho']}) and the answer's signs hold from epoch "
              f"**{ra['stable_from']}** of {rep['max_epochs']} on. An ASHA rung earlier than that decides on "
              f"noise; one that lets every trial reach it trains ≥ {ra['ratio_floor']:.2f} of the grid's epochs."]
    return lines


def _md_fidelity(rep: dict[str, Any]) -> list[str]:
    """The rung fidelity check, the survivor-selected diagnostic and the determinism check."""
    ans = rep["answers"]
    lines: list[str] = []
    lines += ["", "## Fidelity check (grid: Spearman of each rung's error vs the final error)", "",
              "| family | status | epoch | n | Spearman [95 % CI] | Kendall τ (p) |", "|---|---|---|---|---|---|"]
    for f in rep["fidelity_check"]:
        if not f["rungs"]:
            lines.append(f"| {f['family']} | {f['status']} | – | – | {f['message']} | |")
        for c in f["rungs"]:
            lines.append(f"| {f['family']} | {f['status']} | {c['epoch']} | {c['n']} | {c['spearman']:.2f} "
                         f"[{c['spearman_ci'][0]:.2f}, {c['spearman_ci'][1]:.2f}] | {c['kendall']:.2f} "
                         f"({c['kendall_p']:.3f}) |")
    biased = ans["asha_survivor_selected_deltas"]
    if biased:
        lines += ["", "Survivor-selected diagnostic (biased toward seeds ASHA promoted; not an answer): "
                  + "; ".join(f"depth {b['depth']} @ epoch {b['epoch']}: {b['delta']:+.2f} "
                              f"({b['n_multi']} vs {b['n_plain']} seeds)" for b in biased) + "."]
    det = rep["determinism"]
    lines += ["", f"Determinism: {det['values_compared']} per-epoch errors of {det['pairs']} ASHA trials compared "
              f"with the grid trial of the same (architecture, seed): largest difference "
              f"{det['max_abs_diff'] if det['max_abs_diff'] is not None else '–'} points.",
              ""]
    return lines


def _md_what_if(rep: dict[str, Any]) -> list[str]:
    """Other ASHA settings replayed offline on the grid's curves, and how the ASHA answer is derived."""
    matched = rep["answers"]["asha_matched_fidelity"]
    lines: list[str] = []
    wi = rep["what_if"]
    val = wi["validation"]
    lines += ["## What if: other ASHA settings, replayed offline on the grid's curves", "",
              f"Not a run: {wi['label']}. Validation: replaying the real setting (grace "
              f"{val['setting']['grace_period']}, rf {val['setting']['reduction_factor']:g}, rule "
              f"{val['setting'].get('rule', 'stop')}) reproduces the real "
              f"ASHA run's stopping epoch for {val['trials'] - len(val['mismatches'])} of {val['trials']} trials"
              + (f" (differs: {'; '.join(val['mismatches'])})" if val["mismatches"] else "") + ".", "",
              "| rule | order | rf | grace | rungs | epochs ratio | full-fidelity trials | (ii) epochs compared | "
              "(ii) signs by depth | (ii) n₀ | same signs as grid |",
              "|---|---|---|---|---|---|---|---|---|---|---|"]
    depths = [p["depth"] for p in matched.get("points", [])]
    for w in wi["rows"]:
        mm = w["matched"]
        n0 = _fmt_n0({"status": mm["status"], "n0": mm["n0"], "ci": mm["ci"],
                      "points": [{"depth": d} for d in depths]}) if mm["status"] != "insufficient" else "–"
        lines.append(f"| {w['rule']} | {w['order']} | {w['reduction_factor']:g} | {w['grace_period']} | {w['rungs']} | "
                     f"{w['ratio']:.3f} | {w['full_fidelity_trials']} | {mm['epochs']} | {' '.join(mm['signs'])} | "
                     f"{n0} | {'yes' if w['same_signs'] else 'no'} |")
    lines += ["", "How the ASHA answer is derived: (i) `archsearch.analysis.estimators.n0_analysis` on the ASHA study "
              "(full-fidelity trials only, i.e. those ASHA let finish); (ii) a multi-fidelity estimate: "
              "each depth's multi candidate vs the plain reference at the highest epoch every seed of both "
              "reached, bootstrap over seeds as in archsearch.analysis.estimators. See the module docstring.", ""]
    return lines


def _states(counts: dict[str, int]) -> str:
    return ", ".join(f"{n} {s.lower()}" for s, n in sorted(counts.items()) if n)


if __name__ == "__main__":
    sys.exit(main())
