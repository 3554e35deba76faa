"""Orchestration overhead of `archsearch run`: wall time of a small study vs its trials' training time.

    overhead = 1 − Σ(trial training seconds) / (wall seconds × concurrent trial slots)

"Training seconds" are each trial's epoch times (fit + validation, `epoch_seconds` from
archsearch.train). Everything else counts as overhead: Ray's start and shutdown, actor start-up,
dataset loading and model building in each trial, latency measurement after training, checkpoint
persistence, Optuna writes, and slots left idle (ASHA stops, the study's tail). Two walls are reported:
the whole `run_study` call, and Ray Tune's `fit` alone (what a long study converges to, since Ray's
start-up is paid once). A second figure counts the whole trainable body as useful work, isolating
what Ray + Optuna add around the trials.

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
    parser.add_argument("--n-trials", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--subset", type=int, default=4096, help="training images per trial")
    parser.add_argument("--val-size", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--asha", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--out", type=Path, default=HERE / "results" / "overhead.json")
    args = parser.parse_args(argv)

    from archsearch.study import load_study
    from archsearch.tune import run_study

    study = {
        "name": "overhead",
        "space": SPACE,
        "sampler": "tpe",
        "n_trials": args.n_trials,
        "asha": {"max_epochs": args.epochs, "grace_period": 1, "reduction_factor": 2} if args.asha else None,
        "resources": {"cpus": 1, "gpus": 0},
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
            spans = trial_spans(config)
        finally:
            os.chdir(cwd)

    slots = result["slots"]
    times = result["trial_seconds"]  # (number, Σ epoch seconds, seconds inside the trainable)
    train_s = sum(t[1] for t in times)
    body_s = sum(t[2] for t in times)
    fit = result["fit_seconds"]
    by_number = {n: (b, e, st) for n, b, e, st in spans}
    spans = sorted(by_number.values())
    busy = sum(e - b for b, e, _ in spans)  # ask → tell of every trial
    last_start = max(b for b, _, _ in spans)
    end = max(e for _, e, _ in spans)
    tail = _idle_after(spans, last_start, end, slots)  # slots left idle once no trial was left to start
    out = {
        "benchmark": "archsearch run orchestration overhead",
        "definition": "1 - sum(trial training seconds) / (wall seconds x concurrent trial slots)",
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": sys.version.split()[0]},
        "study": {k: study[k] for k in ("n_trials", "asha", "resources", "train")},
        "counts": result["counts"],
        "slots": slots,
        "wall_seconds": round(wall, 2),
        "fit_seconds": round(fit, 2),
        "sum_train_seconds": round(train_s, 2),
        "sum_trial_body_seconds": round(body_s, 2),
        "overhead": round(1 - train_s / (wall * slots), 4),
        "overhead_fit_only": round(1 - train_s / (fit * slots), 4),
        "orchestration_overhead_fit_only": round(1 - body_s / (fit * slots), 4),
        "breakdown_slot_seconds": {
            "ray_start_and_stop": round((wall - fit) * slots, 2),
            "tail_no_trial_left_to_start": round(tail, 2),
            "idle_between_trials": round(fit * slots - busy - tail, 2),
            "per_trial_ask_to_tell_outside_the_trainable": round(busy - body_s, 2),
            "trial_fixed_costs_data_model_latency": round(body_s - train_s, 2),
        },
        "overhead_fit_only_without_tail": round(1 - train_s / (fit * slots - tail), 4),
        "target": 0.05,
        "seconds_to_first_trial": round(spans[0][0] - t0_epoch, 2),
        "seconds_after_last_trial": round(wall - (end - t0_epoch), 2),
        "trials": [{"number": n, "state": by_number[n][2], "start": round(by_number[n][0] - spans[0][0], 2),
                    "ask_to_tell_seconds": round(by_number[n][1] - by_number[n][0], 2),
                    "trial_seconds": round(b, 2), "train_seconds": round(a, 2),
                    "outside_trainable_seconds": round(by_number[n][1] - by_number[n][0] - b, 2)}
                   for n, a, b in sorted(times)],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    args.out.with_suffix(".md").write_text(markdown(out, argv if argv is not None else sys.argv[1:]))
    print(json.dumps({k: v for k, v in out.items() if k != "trials"}, indent=2))
    return 0


def markdown(out: dict, argv: list[str]) -> str:
    """The result as a short table: the headline figure, then where the other slot-seconds went."""
    st, slot_s = out["study"], out["wall_seconds"] * out["slots"]
    lines = [
        "# Orchestration overhead of `archsearch run`", "",
        "Command: `python benchmarks/overhead.py" + "".join(f" {a}" for a in argv) + "`", "",
        f"Study: {st['n_trials']} trials, {st['train']['epochs']} epochs on {st['train']['subset']} images, "
        f"ASHA {st['asha']}, {out['slots']} slots of {st['resources']['cpus']} CPU; states {out['counts']}.", "",
        "| figure | value |", "|---|---|",
        f"| wall of `run_study` | {out['wall_seconds']:.1f} s ({slot_s:.1f} slot-s) |",
        f"| Σ trial training seconds (epoch fit + validation) | {out['sum_train_seconds']:.1f} s |",
        f"| **overhead** = 1 − Σ train / (wall × slots) | **{100 * out['overhead']:.1f} %** "
        f"(target ≤ {100 * out['target']:.0f} %) |",
        f"| overhead of Tune's `fit` alone (Ray start/stop excluded) | {100 * out['overhead_fit_only']:.1f} % |",
        f"| seconds to the first trial / after the last | {out['seconds_to_first_trial']:.1f} s / "
        f"{out['seconds_after_last_trial']:.1f} s |",
    ]
    lines += [f"| slot-seconds: {k.replace('_', ' ')} | {v:.1f} |" for k, v in out["breakdown_slot_seconds"].items()]
    return "\n".join(lines) + "\n"


def trial_spans(config) -> list[tuple[int, float, float, str]]:  # noqa: ANN001 - a StudyConfig
    """(number, start, end, state) of every finished trial, from the Optuna storage (ask → tell)."""
    import optuna

    study = optuna.load_study(study_name=config.name, storage=config.storage_url)
    return [(t.number, t.datetime_start.timestamp(), t.datetime_complete.timestamp(), t.state.name)
            for t in study.get_trials(deepcopy=False) if t.datetime_complete is not None]


def _idle_after(spans: list[tuple[float, float, str]], start: float, end: float, slots: int) -> float:
    """Slot-seconds left idle between `start` and `end` (integral of slots − trials in flight)."""
    points = sorted({start, end, *(b for b, _, _ in spans), *(e for _, e, _ in spans)})
    idle = 0.0
    for a, b in zip(points, points[1:], strict=False):
        if a < start or b > end:
            continue
        mid = (a + b) / 2
        in_flight = sum(s <= mid < e for s, e, _ in spans)
        idle += max(0, slots - in_flight) * (b - a)
    return idle


if __name__ == "__main__":
    sys.exit(main())
