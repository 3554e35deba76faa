"""What a GPU gives a study: bf16 vs fp32 and channels_last per family, 1/2/4 trials packed on one GPU, training MAC/s.

    .venv/bin/python benchmarks/gpu.py [--batch 128] [--steps 20] [--pack-arch resnet-20] [--seconds 20]

1. Per family and setting (fp32/bf16 × NCHW/channels_last): images/s of a full SGD step and training MAC/s
   (3 × forward MACs per image — the factor the studies' GPU-hour comments assume — × images/s), timed by
   `archsearch.train.calibrate.time_network`, the same code `run --dry-run` calibrates with.
2. Packing: 1, 2 and 4 processes training `--pack-arch` at once on GPU 0 (as `resources.gpus: 1/2/4`
   places trials) for `--seconds` each; total and per-trial images/s, and the speed-up over one trial.
3. The studies' assumption: the measured training MAC/s against the 5e12 MAC/s their comments assumed.

Without CUDA it says so and exits 0 (nothing to measure). Results: benchmarks/results/gpu.json.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import sys
from pathlib import Path
from typing import Any

import torch

from archsearch.arch.cost import cost
from archsearch.train.calibrate import time_network
from archsearch.train.config import make_config

FAMILIES = ["resnet-20", "resnet-56", "wrn-16-4", "multiresnet-8-k4", "dvanet-14", "dmrnet-14", "warpnet-19-1-K3"]
SETTINGS = [("fp32", False), ("fp32", True), ("bf16", False), ("bf16", True)]  # (precision, channels_last)
ASSUMED_TRAIN_MACS_PER_S = 5e12  # what the studies' GPU-hour comments assumed before this was measured


def _config(precision: str, channels_last: bool, batch: int) -> Any:
    return make_config(amp="off" if precision == "fp32" else "bf16", channels_last=channels_last, batch_size=batch)


def per_family(batch: int, steps: int) -> list[dict[str, Any]]:
    device = torch.device("cuda")
    rows = []
    for name in FAMILIES:
        macs = cost(name).macs
        for precision, cl in SETTINGS:
            t = time_network(name, _config(precision, cl, batch), device, steps=steps)
            ips = 1.0 / t["train_s_per_image"]
            rows.append({"name": name, "precision": precision, "channels_last": cl, "macs": macs,
                         "images_per_s": ips, "train_macs_per_s": 3 * macs * ips})
            print(f"{name:<20}{precision:<6}{'NHWC' if cl else 'NCHW':<6}{ips:>10.0f} img/s"
                  f"{3 * macs * ips / 1e12:>8.2f} TMAC/s", flush=True)
    return rows


def _packed_worker(name: str, batch: int, seconds: float, start: Any, out: Any) -> None:
    """One packed trial: warm up, size the run to `seconds`, then train together with the others."""
    device = torch.device("cuda")
    config = _config("bf16", True, batch)
    warm = time_network(name, config, device, steps=5)  # also cuDNN autotune and the allocator
    steps = max(5, int(seconds / (warm["train_s_per_image"] * batch)))
    start.wait()
    out.put(1.0 / time_network(name, config, device, steps=steps)["train_s_per_image"])


def packing(name: str, batch: int, seconds: float) -> list[dict[str, Any]]:
    ctx = mp.get_context("spawn")
    rows = []
    for n in (1, 2, 4):
        start, out = ctx.Barrier(n), ctx.Queue()
        procs = [ctx.Process(target=_packed_worker, args=(name, batch, seconds, start, out)) for _ in range(n)]
        for p in procs:
            p.start()
        speeds = [out.get() for _ in procs]
        for p in procs:
            p.join()
        rows.append({"trials_per_gpu": n, "total_images_per_s": sum(speeds), "per_trial_images_per_s": speeds})
        print(f"{n} trial(s) of {name} per GPU: {sum(speeds):.0f} img/s in total", flush=True)
    base = rows[0]["total_images_per_s"]
    for r in rows:
        r["speedup_over_one"] = r["total_images_per_s"] / base
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--pack-arch", default="resnet-20")
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "gpu.json"))
    args = ap.parse_args(argv)
    if not torch.cuda.is_available():
        print("benchmarks/gpu.py: no CUDA device here (torch.cuda.is_available() is False); nothing measured")
        return 0
    print(f"device {torch.cuda.get_device_name(0)}, batch {args.batch}, {args.steps} timed steps")
    families = per_family(args.batch, args.steps)
    packed = packing(args.pack_arch, args.batch, args.seconds)
    best = max(r["train_macs_per_s"] for r in families)
    print(f"training MAC/s: best {best / 1e12:.2f} T (the studies assumed {ASSUMED_TRAIN_MACS_PER_S / 1e12:.0f} T)")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({
        "device": torch.cuda.get_device_name(0), "torch": torch.__version__, "batch": args.batch,
        "families": families, "packing": packed, "assumed_train_macs_per_s": ASSUMED_TRAIN_MACS_PER_S}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
