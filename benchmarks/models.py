"""Training-step throughput of every family on this device, per branch strategy.

Prints images/s of a full SGD step (forward + backward + update) at a fixed batch, the forward MACs
per image (fvcore / the warp rule), MACs/s (forward MACs x images/s) and, as the figure that is
comparable across machines, the MACs/s ratio to resnet-20 measured in the same run.

    .venv/bin/python benchmarks/models.py [--batch 128] [--steps 6] [--device cpu] [--amp auto|off]

`--amp auto` (default) trains as the trainer does by default on this device (bf16 autocast and
channels_last where `archsearch.train.precision.resolve_precision` picks them); `--amp off` trains in fp32
(channels_last stays the trainer's default on CPU and CUDA).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from archsearch.nn.build import build
from archsearch.nn.complexity import count
from archsearch.train.config import make_config
from archsearch.train.precision import precision_name, resolve_precision

MODELS = [  # about 0.27-0.39M params, plus resnet-56 (0.85M) for scale
    "resnet-20", "resnet-56", "multiresnet-8-k4", "dvanet-14", "dmrnet-14", "warpnet-19-1-K3", "warpnet-25-1",
]


def steps_per_second(name: str, strategy: str, batch: int, steps: int, device: torch.device,
                     amp: torch.dtype | None = None, channels_last: bool = False) -> float:
    torch.manual_seed(0)
    layout = torch.channels_last if channels_last else torch.contiguous_format
    model = build(name, strategy=strategy).to(device, memory_format=layout)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    x = torch.randn(batch, 3, 32, 32, device=device).contiguous(memory_format=layout)
    y = torch.randint(0, 10, (batch,), device=device)

    def step() -> None:
        with torch.autocast(device.type, dtype=amp or torch.float32, enabled=amp is not None):
            loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(2):  # warm-up (also lets `auto` measure and cache its choice)
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return steps / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--amp", choices=("auto", "off"), default="auto")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "models.json"))
    args = parser.parse_args()
    device = torch.device(args.device)
    amp, channels_last = resolve_precision(make_config(amp=args.amp), device)
    rows = []
    for name in MODELS:
        info = count(name)
        multi = any(len(getattr(u, "functions", [])) > 1 for u in build(name).body) and "warp" not in name
        for strategy in (("loop", "grouped", "auto") if multi else ("loop",)):
            ips = steps_per_second(name, strategy, args.batch, args.steps, device, amp, channels_last) * args.batch
            rows.append({"name": name, "strategy": strategy, "params": info["params"], "macs": info["macs"],
                         "images_per_s": ips, "macs_per_s": ips * info["macs"]})
    reference = next(r for r in rows if r["name"] == "resnet-20")["macs_per_s"]
    setting = f"{precision_name(amp)}, {'channels_last' if channels_last else 'NCHW'}"
    print(f"device {device} ({torch.get_num_threads()} threads, {setting}), batch {args.batch}, "
          f"{args.steps} timed steps")
    print(f"{'model':<20}{'strategy':<10}{'params':>10}{'MMACs':>9}{'img/s':>9}{'GMAC/s':>9}{'vs resnet/MAC':>15}")
    for r in rows:
        r["ratio_to_resnet_per_mac"] = r["macs_per_s"] / reference
        print(f"{r['name']:<20}{r['strategy']:<10}{r['params']:>10,}{r['macs'] / 1e6:>9.1f}"
              f"{r['images_per_s']:>9.1f}{r['macs_per_s'] / 1e9:>9.2f}{r['ratio_to_resnet_per_mac']:>15.2f}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"device": str(device), "threads": torch.get_num_threads(),
                                          "precision": precision_name(amp), "channels_last": channels_last,
                                          "batch": args.batch, "steps": args.steps, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
