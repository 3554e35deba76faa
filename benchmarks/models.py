"""Training-step throughput of every family on this device, per branch strategy, eager and compiled.

Prints images/s of a full SGD step (forward + backward + update) at a fixed batch, the forward MACs
per image (fvcore / the warp rule), MACs/s (forward MACs x images/s) and, as the figure that is
comparable across machines, the MACs/s ratio to resnet-20 measured in the same run. Every row is timed
in round-robin rounds; the ratios (to resnet-20, compiled to eager) are taken within each round and their
median kept, so load from other processes that drifts between rounds cancels out.
`--compile` also times each network's step through `torch.compile` (the trainer's `compile: auto` on a
long fp32 CPU trial), with its one-off compile seconds and its speed over the eager step.

    .venv/bin/python benchmarks/models.py [--batch 128] [--steps 4] [--rounds 3] [--device cpu]
        [--amp auto|off] [--compile] [--only resnet-20,warpnet-25-1]

`--amp auto` (default) trains as the trainer does by default on this device (bf16 autocast where
`archsearch.train.precision.resolve_precision` picks it, channels_last on CUDA); `--amp off` in fp32.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

from archsearch.nn.build import build
from archsearch.nn.complexity import count
from archsearch.train.compiling import compile_module
from archsearch.train.config import make_config
from archsearch.train.precision import precision_name, resolve_precision

MODELS = [  # about 0.27-0.39M params, plus resnet-56 (0.85M) for scale
    "resnet-20", "resnet-56", "multiresnet-8-k4", "dvanet-14", "dmrnet-14", "warpnet-19-1-K3", "warpnet-25-1",
]


def make_step(name: str, strategy: str, batch: int, device: torch.device, amp: torch.dtype | None = None,
              channels_last: bool = False, compiled: bool = False) -> tuple[Callable[[], None], float]:
    """A training step of a freshly seeded network, warmed up; and the warm-up's seconds (the compile)."""
    torch.manual_seed(0)
    layout = torch.channels_last if channels_last else torch.contiguous_format
    model = build(name, strategy=strategy).to(device, memory_format=layout)
    run = compile_module(model) if compiled else model  # as the trainer compiles
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    x = torch.randn(batch, 3, 32, 32, device=device).contiguous(memory_format=layout)
    y = torch.randint(0, 10, (batch,), device=device)

    def step() -> None:
        with torch.autocast(device.type, dtype=amp or torch.float32, enabled=amp is not None):
            loss = F.cross_entropy(run(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    start = time.perf_counter()
    for _ in range(2):  # warm-up (compiles; lets `auto` measure and cache its choice)
        step()
    _sync(device)
    return step, time.perf_counter() - start


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _time(step: Callable[[], None], steps: int, device: torch.device) -> float:
    start = time.perf_counter()
    for _ in range(steps):
        step()
    _sync(device)
    return steps / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--steps", type=int, default=1, help="timed steps per row and round")
    parser.add_argument("--rounds", type=int, default=12, help="round-robin rounds; medians are kept")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--amp", choices=("auto", "off"), default="auto")
    parser.add_argument("--compile", action="store_true", help="also time every step through torch.compile")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--only", default="", help="comma-separated networks (default: all; resnet-20 always)")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "models.json"))
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    amp, channels_last = resolve_precision(make_config(amp=args.amp), device)
    names = [n for n in MODELS if not args.only or n == "resnet-20" or n in args.only.split(",")]
    rows, steps = [], []
    for name in names:
        info = count(name)
        multi = any(len(getattr(u, "functions", [])) > 1 for u in build(name).body) and "warp" not in name
        for strategy in (("loop", "grouped", "auto") if multi else ("loop",)):
            default = strategy == ("auto" if multi else "loop")  # compiled: the trainer's default strategy only
            for compiled in (False, True) if args.compile and default else (False,):
                step, warm_s = make_step(name, strategy, args.batch, device, amp, channels_last, compiled)
                rows.append({"name": name, "strategy": strategy, "compiled": compiled, "params": info["params"],
                             "macs": info["macs"], "warm_up_seconds": warm_s, "images_per_s_rounds": []})
                steps.append(step)
                print(f"  ready: {name} {strategy}{' compiled' if compiled else ''} ({warm_s:.1f} s)", flush=True)
    load0 = os.getloadavg()[0]
    for r in range(args.rounds):
        order = list(range(len(rows)))
        order = order[r % len(order):] + order[: r % len(order)]  # rotated: no row always runs first
        for i in order:
            rows[i]["images_per_s_rounds"].append(_time(steps[i], args.steps, device) * args.batch)
    for r in rows:
        r["images_per_s"] = statistics.median(r["images_per_s_rounds"])
        r["macs_per_s"] = r["images_per_s"] * r["macs"]
    _report(rows, device, amp, channels_last, args, load0)


def _report(rows: list[dict], device: torch.device, amp: torch.dtype | None, channels_last: bool,
            args: argparse.Namespace, load0: float) -> None:
    reference = {c: next(r for r in rows if r["name"] == "resnet-20" and r["compiled"] == c)
                 for c in {r["compiled"] for r in rows}}
    eager = {(r["name"], r["strategy"]): r for r in rows if not r["compiled"]}

    def per_round(r: dict, ref: dict) -> float:  # the median of the within-round ratios of images/s
        return statistics.median(a / b for a, b in zip(r["images_per_s_rounds"], ref["images_per_s_rounds"],
                                                       strict=True))

    setting = f"{precision_name(amp)}, {'channels_last' if channels_last else 'NCHW'}"
    print(f"device {device} ({torch.get_num_threads()} threads, {setting}), batch {args.batch}, {args.steps} timed "
          f"steps x {args.rounds} rounds (median), load average {load0:.1f} -> {os.getloadavg()[0]:.1f}")
    print(f"{'model':<18}{'strategy':<9}{'step':<9}{'params':>9}{'MMACs':>7}{'img/s':>8}{'GMAC/s':>8}"
          f"{'vs resnet/MAC':>14}{'vs eager':>9}{'compile s':>10}")
    for r in rows:
        ref = reference[r["compiled"]]
        r["ratio_to_resnet_per_mac"] = per_round(r, ref) * r["macs"] / ref["macs"]
        r["speedup_over_eager"] = per_round(r, eager[(r["name"], r["strategy"])])
        print(f"{r['name']:<18}{r['strategy']:<9}{'compiled' if r['compiled'] else 'eager':<9}{r['params']:>9,}"
              f"{r['macs'] / 1e6:>7.1f}{r['images_per_s']:>8.1f}{r['macs_per_s'] / 1e9:>8.2f}"
              f"{r['ratio_to_resnet_per_mac']:>14.2f}{r['speedup_over_eager']:>9.2f}"
              f"{r['warm_up_seconds'] if r['compiled'] else 0:>10.1f}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({
        "device": str(device), "threads": torch.get_num_threads(), "precision": precision_name(amp),
        "channels_last": channels_last, "batch": args.batch, "steps": args.steps, "rounds": args.rounds,
        "torch": torch.__version__, "load_average_start": load0, "load_average_end": os.getloadavg()[0],
        "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
