"""What an answer costs: the race against the full table, by replay over random seed subsets (issue 20).

The design is pre-registered in benchmarks/answer_cost_plan.yaml (committed before the table was trained; this
script reads it and never changes it). Steps:

  1. `--train`: train the table once — the plan's study (every candidate x every seed to its last epoch) — with
     `archsearch run`, then export it with `archsearch curves` to benchmarks/results/answer_cost_table.csv.
  2. Replay (default): the full table's decision = the grid on all its seeds at the plan's confidence. Then, for
     each of the plan's resamples, a random subset of max_seeds seeds in random order is the race's pool; the
     race is replayed on the table (`archsearch.analysis.race`, the code a study runs), beside two baselines on
     the same subset: the grid on the same seeds, a uniform grid of the race's cost (every candidate on the
     first k pool seeds, k = the race's mean seeds per candidate, at least 3), and a uniform low-fidelity grid of
     the race's cost (every candidate on every pool seed, read at the epoch that spends what the race spent).
  3. Reported per method: P(decision == the full table's) over the questions the full table resolves, the rate
     of wrong resolved decisions, and the epochs it trained relative to the full table and to the grid on the same
     seeds; results in benchmarks/results/answer_cost.{json,md}.

    ARCHSEARCH_DATA=/work/shared/data/cifar10-jpg.tar.gz python benchmarks/answer_cost.py --train
    python benchmarks/answer_cost.py [--curves FILE.csv] [--resamples N]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from archsearch.analysis.curves import CurveTable, grid_answers, read_curves  # noqa: E402
from archsearch.analysis.questions import Answer  # noqa: E402
from archsearch.analysis.race import Job, RaceSettings, race  # noqa: E402
from archsearch.space.space import grid  # noqa: E402
from archsearch.study.asked import study_questions  # noqa: E402
from archsearch.study.config import load_study  # noqa: E402
from archsearch.study.lifecycle import load_space_of  # noqa: E402

PLAN = ROOT / "benchmarks" / "answer_cost_plan.yaml"
RESULTS = ROOT / "benchmarks" / "results"
TABLE = RESULTS / "answer_cost_table.csv"


def decision(a: Answer) -> Any:
    """What is compared with the full table: compare sign, best (contender set, resolved), threshold signs."""
    r = a.result
    if a.kind == "compare":
        return r.decision if r is not None else "?"
    if a.kind == "best":
        return (tuple(sorted(map(str, r.contenders))), bool(r.resolved)) if r is not None else ((), False)
    return tuple(sorted(r.signs.items())) if r is not None else ()


def wrong(a: Answer, full: Answer) -> bool:
    """A resolved decision that contradicts the full table's (the pre-registered definition)."""
    if not a.resolved or a.result is None:
        return False
    if a.kind == "compare":
        return a.result.decision in "+-" and full.result.decision in "+-" and a.result.decision != full.result.decision
    if a.kind == "best":
        best = str(full.result.options[0].label)
        return best not in map(str, a.result.contenders)
    mine, theirs = a.result.signs, full.result.signs
    return any(mine[d] in "+-" and theirs.get(d) in "+-" and mine[d] != theirs[d] for d in mine)


def values_of(table: CurveTable, names: list[str], seeds: list[int], epoch: int) -> dict[tuple[str, int], float]:
    return {(n, s): table.value(Job(n, s, epoch)) for n in names for s in seeds}


def train_table(plan: dict[str, Any], table: Path = TABLE) -> None:
    """Run the plan's study and export its curves (the one expensive step)."""
    study = ROOT / plan["study"]
    runs = ROOT / "runs-benchmarks"
    subprocess.run([sys.executable, "-m", "archsearch.cli", "run", str(study), "--runs-dir", str(runs), "--yes"],
                   check=True, cwd=ROOT)
    subprocess.run([sys.executable, "-m", "archsearch.cli", "curves", str(study), "--runs-dir", str(runs),
                    "--out", str(table)], check=True, cwd=ROOT)


def evaluate(plan: dict[str, Any], table: CurveTable, resamples: int) -> dict[str, Any]:
    """The full table's decisions, then the race and the two baselines on each resample (see the docstring)."""
    config = load_study(ROOT / plan["study"])
    questions = study_questions(config, grid(load_space_of(config)))
    names = sorted({n for rq in questions for n in rq.names})
    epochs, seeds = config.max_epochs, [int(s) for s in plan["seeds"]]
    rp = plan["race"]
    settings = RaceSettings(rp["min_seeds"], rp["max_seeds"], rp["confidence"], epochs)
    full = grid_answers(questions, values_of(table, names, seeds, epochs), seeds, rp["confidence"])
    counted = [i for i, a in enumerate(full) if a.resolved]
    grid_full = len(names) * len(seeds) * epochs
    rng = np.random.default_rng(plan["resample_seed"])
    stats: dict[str, dict[str, list]] = defaultdict(lambda: defaultdict(list))
    for _ in range(resamples):
        pool = [int(s) for s in rng.permutation(seeds)[: settings.max_seeds]]
        raced = race(questions, pool, settings, lambda j: table.value(j))
        k = max(3, round(raced.epochs_trained / (len(names) * epochs)))
        e_low = min(epochs, max(1, round(raced.epochs_trained / (len(names) * len(pool)))))
        runs = {"race": (raced.answers, raced.epochs_trained),
                "grid_same_seeds": (grid_answers(questions, values_of(table, names, pool, epochs), pool,
                                                 rp["confidence"]), len(names) * len(pool) * epochs),
                "uniform_grid_race_cost": (grid_answers(questions, values_of(table, names, pool[:k], epochs),
                                                        pool[:k], rp["confidence"]), len(names) * k * epochs),
                "low_fidelity_grid_race_cost": (grid_answers(questions, values_of(table, names, pool, e_low), pool,
                                                             rp["confidence"]), len(names) * len(pool) * e_low)}
        for method, (answers, spent) in runs.items():
            s = stats[method]
            s["epochs"].append(spent)
            for i in counted:
                s[f"match:{full[i].id}"].append(decision(answers[i]) == decision(full[i]))
                s[f"wrong:{full[i].id}"].append(wrong(answers[i], full[i]))
    return summarize(plan, full, counted, stats, grid_full, len(names) * settings.max_seeds * epochs, resamples)


def summarize(plan: dict[str, Any], full: list[Answer], counted: list[int], stats: dict, grid_full: int,
              grid_pool: int, resamples: int) -> dict[str, Any]:
    from archsearch.analysis.questions import as_json

    methods = {}
    for method, s in stats.items():
        match = [v for k, vs in s.items() if k.startswith("match:") for v in vs]
        bad = [v for k, vs in s.items() if k.startswith("wrong:") for v in vs]
        methods[method] = {
            "match_rate": float(np.mean(match)) if match else None,
            "wrong_rate": float(np.mean(bad)) if bad else None,
            "per_question": {full[i].id: {"match": float(np.mean(s[f"match:{full[i].id}"])),
                                          "wrong": float(np.mean(s[f"wrong:{full[i].id}"]))} for i in counted},
            "epochs_mean": float(np.mean(s["epochs"])),
            "epochs_ratio_full_table": float(np.mean(s["epochs"]) / grid_full),
            "epochs_ratio_same_seeds_grid": float(np.mean(s["epochs"]) / grid_pool)}
    crit = plan["success"]
    race_m = methods["race"]
    verdict = {"match": race_m["match_rate"] is not None and race_m["match_rate"] >= crit["match_rate_min"],
               "wrong": race_m["wrong_rate"] is not None and race_m["wrong_rate"] <= crit["wrong_rate_max"],
               "epochs": race_m["epochs_ratio_full_table"] <= crit["epochs_ratio_max"]}
    return {"plan": str(PLAN.relative_to(ROOT)), "resamples": resamples, "full_table": [as_json(a) for a in full],
            "counted_questions": [full[i].id for i in counted],
            "not_counted": [full[i].id for i in range(len(full)) if i not in counted],
            "grid_epochs_full_table": grid_full, "grid_epochs_same_seeds": grid_pool,
            "methods": methods, "criteria": crit, "met": verdict}


def markdown(res: dict[str, Any]) -> str:
    out = [f"# What an answer costs: the race vs the full table (pre-registered: `{res['plan']}`)",
           "", f"{res['resamples']} resamples; full table = every candidate x every seed "
           f"({res['grid_epochs_full_table']} epochs); grid on the same seeds = {res['grid_epochs_same_seeds']} "
           "epochs.", "", "## The full table's decisions", ""]
    out += [f"- `{a['id']}`: {a['text']}" for a in res["full_table"]]
    if res["not_counted"]:
        out += ["", f"Not resolved by the full table, so not evidence either way: {', '.join(res['not_counted'])}."]
    out += ["", "## Methods", "",
            "| method | match | wrong resolved | epochs / full table | epochs / grid same seeds |",
            "|---|---|---|---|---|"]
    for m, r in res["methods"].items():
        out.append(f"| {m} | {r['match_rate']:.3f} | {r['wrong_rate']:.3f} | {r['epochs_ratio_full_table']:.3f} | "
                   f"{r['epochs_ratio_same_seeds_grid']:.3f} |")
    per = res["methods"]["race"]["per_question"].items()
    out += ["", "Per question (race): " + "; ".join(f"`{q}` match {v['match']:.3f}, wrong {v['wrong']:.3f}"
                                                     for q, v in per)]
    c, met = res["criteria"], res["met"]
    out += ["", f"Criteria: match ≥ {c['match_rate_min']} ({'met' if met['match'] else 'NOT met'}), wrong ≤ "
            f"{c['wrong_rate_max']} ({'met' if met['wrong'] else 'NOT met'}), epochs ratio ≤ {c['epochs_ratio_max']} "
            f"of the full table ({'met' if met['epochs'] else 'NOT met'})."]
    return "\n".join(out) + "\n"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--plan", type=Path, default=PLAN, help="the pre-registration (default the first plan)")
    p.add_argument("--train", action="store_true", help="train the table first (the expensive step)")
    p.add_argument("--curves", type=Path, default=TABLE, help=f"the table (default {TABLE.relative_to(ROOT)})")
    p.add_argument("--resamples", type=int, default=None, help="override the plan's resamples (smoke runs only)")
    p.add_argument("--out", type=Path, default=None, help="results stem (.json and .md; default "
                   "benchmarks/results/answer_cost, answer_cost<N> for plan<N>)")
    args = p.parse_args()
    plan = yaml.safe_load(args.plan.read_text())
    table = ROOT / plan["table"] if "table" in plan and args.curves == TABLE else args.curves
    if args.train:
        train_table(plan, table)
    res = evaluate(plan, read_curves(table), args.resamples or plan["resamples"])
    res["plan"] = str(args.plan.resolve().relative_to(ROOT))
    out = args.out or RESULTS / ("answer_cost" + args.plan.stem.removeprefix("answer_cost_plan"))  # plan3: *3
    out.with_suffix(".json").write_text(json.dumps(res, indent=1))
    out.with_suffix(".md").write_text(markdown(res))
    print(markdown(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
