"""Does bf16 autocast change what a CPU trial measures? fp32 vs bf16 on the same seeds, paired.

The trainer's `amp="auto"` decides the CPU default from this benchmark: bf16 autocast is ~2.4x faster
on CPUs with AMX-bf16 (benchmarks/train.py), but a search compares validation errors, so the
precision must not move them. Each seed trains the same build, data order and augmentation twice
(fp32 and bf16, both channels_last), and we report the paired difference err(bf16) − err(fp32) with a
bootstrap CI over seeds next to the fp32 seed-to-seed spread. Two processes run side by side, one
thread each.

    .venv/bin/python benchmarks/precision.py [--arch resnet-20] [--seeds 5] [--epochs 8] [--subset 5000]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from archsearch.train.loop import train  # noqa: E402


def _run(job: tuple[str, str, int, dict]) -> dict:
    arch, amp, seed, base = job
    r = train(arch, {**base, "amp": amp, "seed": seed, "channels_last": True, "threads": 1},
              data=base_data(), device="cpu")
    return {"arch": arch, "amp": amp, "seed": seed, "val_error": r["val_error"],
            "train_loss": r["train_loss"], "train_seconds": r["train_seconds"],
            "curve": [h["val_error"] for h in r["history"]]}


def base_data():
    from archsearch.train.data import load_dataset

    return load_dataset(os.environ.get("ARCHSEARCH_DATA", "cifar10"), progress=False)


def bootstrap_ci(values: list[float], seed: int = 0, reps: int = 5000) -> tuple[float, float]:
    rng = np.random.default_rng(seed)
    v = np.asarray(values)
    means = v[rng.integers(0, len(v), (reps, len(v)))].mean(1)
    return float(np.quantile(means, 0.025)), float(np.quantile(means, 0.975))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arch", nargs="+", default=["resnet-20"])
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--subset", type=int, default=5000)
    ap.add_argument("--val-size", type=int, default=2000)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "precision.json"))
    args = ap.parse_args(argv)

    base = {"epochs": args.epochs, "subset": args.subset, "val_size": args.val_size, "batch_size": 128,
            "lr": 0.1, "momentum": 0.9, "weight_decay": 5e-4, "schedule": "cosine", "latency": False}
    jobs = [(a, amp, s, base) for a in args.arch for s in range(args.seeds) for amp in ("off", "bf16")]
    t0 = time.perf_counter()
    with ProcessPoolExecutor(args.workers) as pool:
        runs = []
        for r in pool.map(_run, jobs):
            runs.append(r)
            print(f"  {r['arch']} {r['amp']:4s} seed {r['seed']}: val error {r['val_error']:.2f} %"
                  f" ({r['train_seconds']:.0f} s)", flush=True)
    rows = []
    for arch in args.arch:
        by = {(r["amp"], r["seed"]): r for r in runs if r["arch"] == arch}
        fp32 = [by["off", s]["val_error"] for s in range(args.seeds)]
        bf16 = [by["bf16", s]["val_error"] for s in range(args.seeds)]
        diff = [b - f for b, f in zip(bf16, fp32, strict=True)]
        lo, hi = bootstrap_ci(diff)
        speed = statistics.median(by["off", s]["train_seconds"] / by["bf16", s]["train_seconds"]
                                  for s in range(args.seeds))
        rows.append({"arch": arch, "fp32": fp32, "bf16": bf16, "diff": diff,
                     "mean_diff": statistics.mean(diff), "ci95": [lo, hi],
                     "fp32_seed_sd": statistics.stdev(fp32), "bf16_seed_sd": statistics.stdev(bf16),
                     "speedup_train_seconds": speed})
    lines = [f"# fp32 vs bf16 autocast on CPU ({args.seeds} seeds, {args.epochs} epochs, {args.subset} training"
             f" images, {args.val_size} validation images, cosine lr 0.1, batch 128, channels_last)", "",
             "Command: `python benchmarks/precision.py " + " ".join(argv or sys.argv[1:]) + "`", "",
             "| arch | fp32 val error (mean ± sd) | bf16 val error (mean ± sd) | Δ bf16 − fp32 [95 % CI] | speed-up |",
             "|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['arch']} | {statistics.mean(r['fp32']):.2f} ± {r['fp32_seed_sd']:.2f} | "
                     f"{statistics.mean(r['bf16']):.2f} ± {r['bf16_seed_sd']:.2f} | {r['mean_diff']:+.2f} "
                     f"[{r['ci95'][0]:+.2f}, {r['ci95'][1]:+.2f}] | {r['speedup_train_seconds']:.2f}x |")
    lines.append("")
    lines.append(f"Wall time {time.perf_counter() - t0:.0f} s.")
    text = "\n".join(lines) + "\n"
    print(text)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"config": base, "seeds": args.seeds, "rows": rows, "runs": runs}, indent=2) + "\n")
    out.with_suffix(".md").write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
