"""Orchestration overhead of `archsearch run`: wall time of a small study vs its trials' training time.

    overhead = 1 − Σ(trial training seconds) / (wall seconds × concurrent trial slots)

"Training seconds" are each trial's epoch times (fit + validation, `epoch_seconds` from
archsearch.train.loop). Everything else counts as overhead: Ray's start and shutdown, actor start-up,
dataset loading and model building in each trial, latency measurement after training, checkpoint
persistence, Optuna writes, and slots left idle (ASHA stops, the study's tail). Two walls are reported:
the whole `run_study` call, and Ray Tune's `fit` alone (what a long study converges to, since Ray's
start-up is paid once). A second figure counts the whole trainable body as useful work, isolating
what Ray + Optuna add around the trials.

Each study runs once per layout `CPUS:RULE` (default `2:stop 1:stop 1:promote` on 2 cores: one
trial at a time with two threads; two at a time with one thread each, under Ray's ASHA stop rule and
under ASHA's published pause-and-promote rule, `asha.rule: promote`). With one slot nothing can sit
idle for lack of a trial; with several, the last trials of an ASHA study run while other slots have
nothing left to start, and the table shows that tail separately from what Ray, Optuna and archsearch
add. A slot is held from a trial's start (or promotion) to its end (or pause at a rung), as the
searcher records it (`slot_spans`); a paused trial holds none.

    ARCHSEARCH_DATA=/work/shared/data/cifar10-jpg.tar.gz python benchmarks/overhead.py
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
SPACE = {"candidates": [{"name": "resnet-8"}, {"name": "multiresnet-8-k2"}, {"name": "dmrnet-8"}]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-trials", type=int, default=16)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--subset", type=int, default=8192, help="training images per trial")
    parser.add_argument("--val-size", type=int, default=1024)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--layouts", nargs="+", default=["2:stop", "1:stop", "1:promote"],
                        help="CPUS:RULE per study: CPUs (= torch threads) per trial, slots = cores / CPUS; "
                             "RULE = asha.rule (stop | promote)")
    parser.add_argument("--asha", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--out", type=Path, default=HERE / "results" / "overhead.json")
    args = parser.parse_args(argv)

    layouts = [(int(c), r) for c, _, r in (x.partition(":") for x in args.layouts)]
    runs = [measure(args, cpus, rule or "stop") for cpus, rule in layouts]
    out = {
        "benchmark": "archsearch run orchestration overhead",
        "definition": "1 - sum(trial training seconds) / (wall seconds x concurrent trial slots)",
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": sys.version.split()[0]},
        "target": TARGET,
        "runs": runs,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    args.out.with_suffix(".md").write_text(markdown(out, argv if argv is not None else sys.argv[1:]))
    for run in runs:
        print(json.dumps({k: v for k, v in run.items() if k != "trials"}, indent=2))
    return 0


TARGET = 0.05


def measure(args: argparse.Namespace, cpus: int, rule: str) -> dict:
    """Run the benchmark study once with `cpus` per trial; its overhead and where the slot-seconds went."""
    from archsearch.orchestrate.run import run_study
    from archsearch.study.config import load_study

    study = {
        "name": "overhead",
        "space": SPACE,
        "sampler": "tpe",
        "n_trials": args.n_trials,
        "asha": {"max_epochs": args.epochs, "grace_period": 1, "reduction_factor": 2, "rule": rule}
        if args.asha else None,
        "resources": {"cpus": cpus, "gpus": 0},
        "train": {"epochs": args.epochs, "subset": args.subset, "val_size": args.val_size,
                  "batch_size": args.batch_size, "eval_batch_size": args.batch_size, "schedule": "cosine"},
    }
    cwd = os.getcwd()
    with tempfile.TemporaryDirectory(prefix="archsearch-overhead-") as tmp:
        os.chdir(tmp)
        try:
            path = Path(tmp) / "overhead.yaml"
            path.write_text(yaml.safe_dump(study, sort_keys=False))
            config = load_study(path)
            t0, t0_epoch = time.perf_counter(), time.time()
            result = run_study(config)
            wall = time.perf_counter() - t0
            states = trial_states(config)
        finally:
            os.chdir(cwd)

    slots = result["slots"]
    times = result["trial_seconds"]  # (number, Σ epoch seconds, seconds inside the trainable)
    train_s = sum(t[1] for t in times)
    body_s = sum(t[2] for t in times)
    fit = result["fit_seconds"]
    held = [(b, e) for _, b, e in result["slot_spans"]]  # start/promotion → end/pause, per trial segment
    busy = sum(e - b for b, e in held)
    first_start = {}
    for n, b, _ in result["slot_spans"]:
        first_start[n] = min(b, first_start.get(n, b))
    last_start = max(first_start.values())  # the last new trial started: after it nothing new can
    end = max(e for _, e in held)
    tail = _idle_after(held, last_start, end, slots)  # slots left idle once no trial was left to start
    segments: dict[int, list[tuple[float, float]]] = {}
    for n, b, e in result["slot_spans"]:
        segments.setdefault(n, []).append((b, e))
    slot_s = wall * slots
    return {
        "study": {k: study[k] for k in ("n_trials", "asha", "resources", "train")},
        "counts": result["counts"],
        "slots": slots,
        "wall_seconds": round(wall, 2),
        "fit_seconds": round(fit, 2),
        "sum_train_seconds": round(train_s, 2),
        "sum_trial_body_seconds": round(body_s, 2),
        "overhead": round(1 - train_s / slot_s, 4),
        "overhead_without_tail": round(1 - train_s / (slot_s - tail), 4),
        "overhead_fit_only": round(1 - train_s / (fit * slots), 4),
        "breakdown_slot_seconds": {
            "ray_start_and_stop": round((wall - fit) * slots, 2),
            "tail_no_trial_left_to_start": round(tail, 2),
            "idle_between_trials": round(fit * slots - busy - tail, 2),
            "per_trial_slot_held_outside_the_trainable": round(busy - body_s, 2),
            "trial_fixed_costs_data_model_latency": round(body_s - train_s, 2),
        },
        "seconds_to_first_trial": round(min(b for b, _ in held) - t0_epoch, 2),
        "seconds_after_last_trial": round(wall - (end - t0_epoch), 2),
        "trials": [{"number": n, "state": states.get(n), "segments": len(segments.get(n, [])),
                    "start": round(first_start[n] - min(b for b, _ in held), 2),
                    "slot_seconds": round(sum(e - b for b, e in segments.get(n, [])), 2),
                    "trial_seconds": round(b, 2), "train_seconds": round(a, 2),
                    "outside_trainable_seconds": round(sum(e - b for b, e in segments.get(n, [])) - b, 2)}
                   for n, a, b in sorted(times)],
    }


def markdown(out: dict, argv: list[str]) -> str:
    """One column per slot layout: the headline figure, then where the other slot-seconds went."""
    runs = out["runs"]
    st = runs[0]["study"]
    pct = TARGET * 100
    asha = {k: v for k, v in st["asha"].items() if k != "rule"} if st["asha"] else "off"

    def row(label: str, cell) -> str:  # noqa: ANN001 - a function of one run
        return f"| {label} | " + " | ".join(cell(r) for r in runs) + " |"

    lines = [
        "# Orchestration overhead of `archsearch run`", "",
        "Command: `python benchmarks/overhead.py" + "".join(f" {a}" for a in argv) + "`", "",
        f"Study: {st['n_trials']} trials (TPE over {', '.join(c['name'] for c in SPACE['candidates'])}), "
        f"{st['train']['epochs']} epochs on {st['train']['subset']} images, validation {st['train']['val_size']}, "
        f"ASHA {asha}; machine: {out['machine']['cpus']} CPUs. The same study once per slot layout.", "",
        "| figure | " + " | ".join(f"{r['slots']} slot(s) × {r['study']['resources']['cpus']} CPU, "
                                   f"ASHA {r['study']['asha']['rule'] if r['study']['asha'] else 'off'}"
                                   for r in runs) + " |",
        "|---|" + "---:|" * len(runs),
        row("trial states", lambda r: ", ".join(f"{v} {k.lower()}" for k, v in r["counts"].items())),
        row("resumes after a pause at a rung", lambda r: str(sum(t["segments"] - 1 for t in r["trials"]))),
        row("wall of `run_study`", lambda r: f"{r['wall_seconds']:.1f} s"),
        row("Σ trial training seconds (epoch fit + validation)", lambda r: f"{r['sum_train_seconds']:.1f} s"),
        row(f"**overhead** = 1 − Σ train / (wall × slots) (target ≤ {pct:.0f} %)",
            lambda r: f"**{100 * r['overhead']:.1f} %**"),
        row("overhead without the tail (slot-seconds no trial was left for)",
            lambda r: f"{100 * r['overhead_without_tail']:.1f} %"),
        row("overhead of Tune's `fit` alone (Ray start/stop excluded)",
            lambda r: f"{100 * r['overhead_fit_only']:.1f} %"),
        row("seconds to the first trial / after the last",
            lambda r: f"{r['seconds_to_first_trial']:.1f} / {r['seconds_after_last_trial']:.1f}"),
    ]
    for key in runs[0]["breakdown_slot_seconds"]:
        lines.append(row(f"slot-seconds: {key.replace('_', ' ')}",
                         lambda r, k=key: f"{r['breakdown_slot_seconds'][k]:.1f}"))
    return "\n".join(lines) + "\n"


def trial_states(config) -> dict[int, str]:  # noqa: ANN001 - a StudyConfig
    """Each trial's final state, from the Optuna storage."""
    import optuna

    study = optuna.load_study(study_name=config.name, storage=config.storage_url)
    return {t.number: t.state.name for t in study.get_trials(deepcopy=False)}


def _idle_after(spans: list[tuple[float, float]], start: float, end: float, slots: int) -> float:
    """Slot-seconds left idle between `start` and `end` (integral of slots − trials holding one)."""
    points = sorted({start, end, *(b for b, _ in spans), *(e for _, e in spans)})
    idle = 0.0
    for a, b in zip(points, points[1:], strict=False):
        if a < start or b > end:
            continue
        mid = (a + b) / 2
        in_flight = sum(s <= mid < e for s, e in spans)
        idle += max(0, slots - in_flight) * (b - a)
    return idle


if __name__ == "__main__":
    sys.exit(main())
