# The earlier ASHA-vs-grid design of the answer-cost benchmark, superseded by benchmarks/answer_cost.py (the race).
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

How the ASHA study's answer is derived (archsearch.analysis feeds answers with full-fidelity trials
only, and under ASHA most trials never finish):
  (i)  "survivors": `archsearch.analysis.threshold.n0_analysis` on the ASHA study as it is, i.e. on the trials
       that ASHA let finish. Usually insufficient or built on one seed of a few candidates.
  (ii) "matched fidelity" (labelled as a multi-fidelity estimate): for each depth d, the multi
       candidate and the plain reference are compared at e_d, the highest epoch that EVERY seed of
       both reached (so each mean is over the same, unselected set of seeds; comparing only the seeds
       ASHA promoted would favour lucky seeds). Δ(d) and its interval use analysis' bootstrap
       (`bootstrap_means`, `interval` with the t-widening, `crossing_depth`), with n₀ interpolated
       across depths whose e_d may differ. A survivor-selected variant (highest epoch where both have
       at least one trial, means over whichever seeds got there) is reported beside it as a
       diagnostic, marked biased.
Whether low rungs can be trusted is read off the grid: `archsearch.analysis.fidelity.fidelity_check` (rank
correlation of each rung's error with the final error) and the grid's own Δ signs at each rung epoch.
Training is deterministic on CPU, so an ASHA trial's per-epoch errors equal the grid trial's with the
same (architecture, seed); the benchmark checks that and reports the largest difference. That also
allows an offline what-if: ASHA's decisions replayed on the grid's curves for other reduction factors,
grace periods and candidate orders (validated by replaying the real setting against the real run), under
Ray's rule (stop at once when below the rung's percentile so far) and under the published one (Li et al.
2020: pause at the rung, promote the top 1/rf later), which trains fewer epochs but reads the same rungs.
The replays are `archsearch.orchestrate.replay`, on the schedulers' own rules (`archsearch.orchestrate.asha`);
the analysis is in answer_cost_analysis.py, the Markdown in answer_cost_report.py.
`--reanalyze WORKDIR` rebuilds the report from a previous run's studies without training.

    ARCHSEARCH_DATA=/work/shared/data/cifar10-jpg.tar.gz python benchmarks/asha_answer_cost.py
    ARCHSEARCH_DATA=... python benchmarks/asha_answer_cost.py --quick    # smoke run (tiny, ~1 min)

Results: benchmarks/results/answer_cost_asha.{json,md} (older: answer_cost_4depth_*)
(--quick: <workdir>/answer_cost_quick.*).
The studies are kept under --workdir (default: a new directory under the system temp dir).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from answer_cost_analysis import build_report
from answer_cost_report import render_markdown

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
STUDIES = {"grid": ROOT / "studies" / "answer_cost_grid.yaml", "asha": ROOT / "studies" / "answer_cost_asha.yaml"}
SEED = 0  # bootstrap seed of every interval (training seeds are the studies' `seeds`)
FACTS = "answer_cost_facts.json"  # per-study run facts kept in the workdir (for --reanalyze)
QUICK = ["train.epochs=3", "train.subset=128", "train.val_size=128", "train.batch_size=32", "seeds=[0, 1]"]


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    workdir, facts = _workdir_and_facts(args)
    out = args.out or (workdir / "answer_cost_quick" if args.quick else HERE / "results" / "answer_cost_asha")
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
        report["reanalyzed"] = ("python benchmarks/asha_answer_cost.py --reanalyze WORKDIR "
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
             "command": "python benchmarks/asha_answer_cost.py" + (" --quick" if args.quick else "")
             + "".join(f" --set {o}" for o in args.overrides)
             + "".join(f" --asha-set {o}" for o in args.asha_overrides),
             "started": time.strftime("%Y-%m-%d %H:%M:%S")}
    return workdir, facts


def _run_studies(args: argparse.Namespace, workdir: Path, facts: dict[str, Any]) -> tuple[dict, dict, dict]:
    """Load both studies' configs, train those not kept, and read their records (runs/ is under workdir)."""
    import optuna

    from archsearch.study.config import load_study
    from archsearch.study.records import load_records

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
    from archsearch.study.lifecycle import load_space_of
    from archsearch.train.precision import resolve_precision

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


def _json_default(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, tuple | set):
        return list(o)
    return str(o)


if __name__ == "__main__":
    sys.exit(main())
