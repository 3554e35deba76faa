"""Model-parallel branches vs the data-parallel deeper ResNet of equal size: time per SGD step.

Multi-ResNet (Table V) and WarpNet claim speed from placing a unit's parallel functions on different GPUs:
a Multi-ResNet with k functions per unit, split over the GPUs by `train.model_parallel`
(`archsearch.nn.parallel.place`), against the deeper ResNet of (about) the same parameter count, trained
data-parallel over the same GPUs (`torch.nn.DataParallel`: each GPU runs half the batch). Multi-ResNet
reports up to 15 % less time per step. Both sides: same batch (128 CIFAR-sized images), SGD with
momentum, fp32, NCHW, median of timed steps after warm-up, run side by side in one process; the Multi-ResNet's
stage widths are fitted onto the ResNet's parameter count (`archsearch.arch.fit.fit_widths`, +-3 %).

    python benchmarks/parallel.py [--pairs resnet-110:multiresnet-26-k4 ...] [--steps 30]

With fewer than two GPUs it says so and exits 0 (nothing to measure). Results:
benchmarks/results/parallel.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch
from torch import nn

from archsearch.arch.fit import Target, fit_widths
from archsearch.arch.spec import as_spec
from archsearch.nn.build import build
from archsearch.nn.complexity import count
from archsearch.nn.parallel import place

PAIRS = ["resnet-56:multiresnet-20-k3", "resnet-110:multiresnet-26-k4", "resnet-110:multiresnet-14-k8"]
OUT = Path(__file__).resolve().parent / "results" / "parallel.json"


def step_time(model: nn.Module, device: torch.device, batch: int, steps: int, warmup: int = 5) -> float:
    """Median seconds of one SGD step (forward, backward, update) on random CIFAR-sized data."""
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x = torch.randn(batch, 3, 32, 32, device=device)
    y = torch.randint(0, 10, (batch,), device=device)
    times = []
    for i in range(warmup + steps):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
        torch.cuda.synchronize()
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def measure(pair: str, devices: list[str], batch: int, steps: int) -> dict:
    deep_name, multi_name = pair.split(":")
    deep = as_spec(deep_name)
    target = Target("params", count(deep)["params"], 0.03)
    multi = fit_widths(as_spec(multi_name), target).spec
    home = torch.device(devices[0])
    deep_net = nn.DataParallel(build(deep, strategy="loop").to(home), device_ids=[torch.device(d) for d in devices])
    multi_net = place(build(multi, strategy="loop"), devices)
    t_deep = step_time(deep_net, home, batch, steps)
    t_multi = step_time(multi_net, home, batch, steps)
    return {"deeper": deep.name, "deeper_params": target.value, "multi": multi.name,
            "multi_params": count(multi)["params"], "devices": devices, "batch": batch,
            "deeper_data_parallel_step_s": t_deep, "multi_model_parallel_step_s": t_multi,
            "multi_over_deeper": t_multi / t_deep}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", nargs="+", default=PAIRS, metavar="DEEPER:MULTI")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--steps", type=int, default=30)
    args = parser.parse_args(argv)
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if gpus < 2:
        print(f"benchmarks/parallel.py: model parallelism needs at least 2 GPUs, this machine has {gpus}; "
              "nothing measured")
        return 0
    devices = [f"cuda:{i}" for i in range(gpus)]
    rows = []
    for pair in args.pairs:
        row = measure(pair, devices, args.batch, args.steps)
        rows.append(row)
        print(f"{row['multi']} ({row['multi_params']:,} params, model-parallel on {gpus} GPUs): "
              f"{1000 * row['multi_model_parallel_step_s']:.1f} ms/step; {row['deeper']} ({row['deeper_params']:,}, "
              f"data-parallel): {1000 * row['deeper_data_parallel_step_s']:.1f} ms/step; "
              f"ratio {row['multi_over_deeper']:.2f}")
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps({"gpus": torch.cuda.get_device_name(0), "count": gpus, "rows": rows}, indent=1) + "\n")
    print(f"wrote {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
