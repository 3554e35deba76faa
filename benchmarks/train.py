"""Trainer speed: one training epoch of resnet-20, our tensor pipeline vs the textbook DataLoader loop.

Both sides train the same weights (one seeded build, deep-copied), at the same batch size, with the
same SGD settings, on the same training images (the trainer's split: 45,000 CIFAR-10 images, or
`--subset`). The naive side is the torchvision tutorial loop with defaults: a CIFAR10-style dataset
holding HWC uint8 arrays, PIL transforms per image (RandomCrop(32, padding=4), RandomHorizontalFlip,
ToTensor, Normalize) and `DataLoader(shuffle=True)`. Ours is `archsearch.train.loop.train` (decode-once
uint8 tensors, batched crop/flip/normalise) with its defaults for a `--trial-epochs` trial (`amp: auto`:
bf16 autocast on AMX CPUs, fp32 elsewhere; NCHW on CPU; `compile: auto`: compiled in fp32 on CPU when the
trial is long enough to pay the compile back), and eager fp32 NCHW and channels_last. `--compile` adds
a row compiled in fp32 NCHW whatever `auto` says. A compiled row's one-off compile (timed apart by the
trainer, before the epoch) is reported with the epochs it takes to pay back against eager fp32 NCHW.
Reports images/s, the speed-up over the naive loop, and the share of the epoch spent outside
forward/backward/step. Targets: >= 1.3x naive (>= 1.5x in fp32 for the default), overhead <= 5 %.

    .venv/bin/python benchmarks/train.py [--subset 10000] [--repeats 3] [--arch resnet-20] [--compile]
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
from torch import nn  # noqa: E402

from archsearch.arch.spec import as_spec  # noqa: E402
from archsearch.nn.build import build  # noqa: E402
from archsearch.train import make_config, train  # noqa: E402
from archsearch.train.data import load_dataset, split_indices  # noqa: E402

TARGET_SPEEDUP = 1.3
TARGET_FP32_DEFAULT = 1.5  # issue 22: the default CPU pipeline in fp32
TARGET_OVERHEAD = 0.05


class TutorialCIFAR(torch.utils.data.Dataset):
    """What `torchvision.datasets.CIFAR10` does per item: HWC uint8 array → PIL image → transform."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, transform) -> None:
        self.data = images.permute(0, 2, 3, 1).contiguous().numpy()
        self.targets = labels.tolist()
        self.transform = transform

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, i: int):
        from PIL import Image

        return self.transform(Image.fromarray(self.data[i])), self.targets[i]


def naive_epoch(model: nn.Module, images, labels, mean, std, config) -> dict:
    """The textbook loop; time inside forward/backward/step is measured separately."""
    from torchvision import transforms

    tf = transforms.Compose([
        transforms.RandomCrop(32, padding=4),
        transforms.RandomHorizontalFlip(),
        transforms.ToTensor(),
        transforms.Normalize(mean, std),
    ])
    torch.manual_seed(config.seed)
    loader = torch.utils.data.DataLoader(TutorialCIFAR(images, labels, tf), batch_size=config.batch_size,
                                         shuffle=True)
    opt = torch.optim.SGD(model.parameters(), lr=config.lr, momentum=config.momentum,
                          nesterov=config.nesterov, weight_decay=config.weight_decay)
    criterion = nn.CrossEntropyLoss()
    model.train()
    seen, step_s = 0, 0.0
    start, cpu_start = time.perf_counter(), time.process_time()
    for x, y in loader:
        t0 = time.perf_counter()
        loss = criterion(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        step_s += time.perf_counter() - t0
        seen += len(y)
    total, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    return {"images": seen, "seconds": total, "images_per_s": seen / total, "overhead": 1 - step_s / total,
            "cpu_seconds": cpu, "images_per_cpu_s": seen / cpu, "final_loss": loss.item()}


def ours_epoch(model: nn.Module, data, config) -> dict:
    """One `train` epoch; with val_size=0 the CPU time up to the report covers setup + the epoch only."""
    marks = []
    cpu_start = time.process_time()
    r = train(model, config, data=data, device="cpu", report=lambda e, m: marks.append(time.process_time()))
    h = r["history"][0]
    seen = r["train_images"] // config.batch_size * config.batch_size
    cpu = marks[0] - cpu_start
    return {"images": seen, "seconds": h["fit_seconds"], "images_per_s": h["images_per_s"],
            "overhead": 1 - h["step_seconds"] / h["fit_seconds"], "data_share": h["data_seconds"] / h["fit_seconds"],
            "cpu_seconds": cpu, "images_per_cpu_s": seen / cpu, "final_loss": h["train_loss"],
            "precision": r["precision"], "channels_last": r["channels_last"], "compiled": r["compiled"],
            "compile_reason": r["compile_reason"], "compile_seconds": r["compile_seconds"], "threads": r["threads"]}


def warm_up(model: nn.Module, batch: int) -> None:
    """A few steps in every memory format / precision used, so no side pays oneDNN's first-call setup."""
    opt = torch.optim.SGD(model.parameters(), lr=0.0)
    x, y = torch.randn(batch, 3, 32, 32), torch.randint(0, 10, (batch,))
    for cl, bf16 in ((False, False), (True, False), (True, True)):
        m = model.to(memory_format=torch.channels_last if cl else torch.contiguous_format)
        xx = x.contiguous(memory_format=torch.channels_last) if cl else x
        for _ in range(3):
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                loss = nn.functional.cross_entropy(m(xx), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.to(memory_format=torch.contiguous_format)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arch", default="resnet-20")
    ap.add_argument("--subset", type=int, default=None, help="training images (default: all 45,000)")
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--data", default=os.environ.get("ARCHSEARCH_DATA", "/work/shared/data/cifar10-jpg.tar.gz"))
    ap.add_argument("--repeats", type=int, default=1, help="round-robin rounds; the fastest of each is kept")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads for every side")
    ap.add_argument("--compile", action="store_true", help="also time our pipeline compiled in fp32 NCHW")
    ap.add_argument("--trial-epochs", type=int, default=200,
                    help="the trial length whose defaults the default row uses (compile: auto)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "train.json"))
    args = ap.parse_args(argv)

    if args.threads:
        torch.set_num_threads(args.threads)
    data = load_dataset(args.data)
    base = make_config({"epochs": 1, "batch_size": args.batch_size, "subset": args.subset, "lr": 0.1,
                        "momentum": 0.9, "weight_decay": 5e-4, "val_size": 5000, "latency": False,
                        "seed": 0})
    train_idx, _ = split_indices(len(data.train_x), base.val_size, seed=base.split_seed, subset=base.subset)
    torch.manual_seed(0)
    model0 = build(args.arch, num_classes=data.num_classes)
    warm_up(copy.deepcopy(model0), args.batch_size)
    load0 = os.getloadavg()[0]

    from archsearch.train.compiling import resolve_compile
    from archsearch.train.precision import resolve_precision

    amp, cl = resolve_precision(base, torch.device("cpu"))
    steps = args.trial_epochs * (len(train_idx) // args.batch_size)
    compiled, _ = resolve_compile(base.compile, torch.device("cpu"), amp, steps, as_spec(args.arch, 10).family)
    default = (f"ours, defaults ({'fp32' if amp is None else 'bf16'}{' + channels_last' if cl else ''}"
               f"{' + compile' if compiled else ''}, {args.trial_epochs}-ep trial)")
    variants = [(default, {"compile": compiled}), ("ours fp32 NCHW (eager)", {"amp": "off", "channels_last": False,
                                                                             "compile": False}),
                ("ours fp32 + channels_last (eager)", {"amp": "off", "channels_last": True, "compile": False})]
    if args.compile:
        variants.append(("ours fp32 NCHW + compile", {"amp": "off", "channels_last": False, "compile": True}))
    runs: list[tuple[str, object]] = [
        ("naive DataLoader + PIL transforms",
         lambda: naive_epoch(copy.deepcopy(model0), data.train_x[train_idx], data.train_y[train_idx],
                             data.mean, data.std, base))]
    for label, extra in variants:
        # the same number of training images as the naive side, and no validation pass to time
        ours = make_config(base, val_size=0, subset=len(train_idx), **extra)
        runs.append((label, lambda ours=ours: ours_epoch(copy.deepcopy(model0), data, ours)))
    # Round-robin repeats, order rotated each round: other load on a shared machine hits every
    # pipeline alike; the fastest round is the least disturbed one, and CPU time (not wall time)
    # is what other processes cannot inflate (with one thread: no OpenMP spinning either).
    samples: dict[str, list[dict]] = {label: [] for label, _ in runs}
    for r in range(args.repeats):
        for label, fn in runs[r % len(runs):] + runs[: r % len(runs)]:
            samples[label].append(fn())
            print(f"  round {r + 1}: {label}: {samples[label][-1]['images_per_s']:.1f} images/s", flush=True)
    rows = []
    for label, _ in runs:
        best = max(samples[label], key=lambda s: s["images_per_s"])
        rows.append({"pipeline": label, **best,
                     "images_per_s_all": [s["images_per_s"] for s in samples[label]],
                     "images_per_cpu_s_median": statistics.median(s["images_per_cpu_s"] for s in samples[label])})
    for row in rows:
        row["speedup_wall"] = row["images_per_s"] / rows[0]["images_per_s"]
        row["speedup_cpu"] = row["images_per_cpu_s_median"] / rows[0]["images_per_cpu_s_median"]
        row["speedup_over_fp32_nchw"] = row["images_per_s"] / rows[2]["images_per_s"]
        # the median of the ratios within each round: load that drifts between rounds cancels out
        row["speedup_round_all"] = [a / b for a, b in zip(row["images_per_s_all"], rows[0]["images_per_s_all"],
                                                          strict=True)]
        row["speedup_round_median"] = statistics.median(row["speedup_round_all"])
        if row.get("compiled"):  # the one-off compile against the eager fp32 NCHW epoch: epochs to pay it back
            saved = len(train_idx) * (1 / rows[2]["images_per_s"] - 1 / row["images_per_s"])
            seconds = [s["compile_seconds"] for s in samples[row["pipeline"]]]
            row["compile_seconds_all"] = seconds
            row["payback_epochs"] = statistics.median(seconds) / saved if saved > 0 else None

    print(f"{args.arch}, batch {args.batch_size}, {rows[0]['images']} training images, "
          f"{torch.get_num_threads()} CPU threads, {args.repeats} rounds, "
          f"load average {load0:.1f} → {os.getloadavg()[0]:.1f}")
    print(f"{'pipeline':40s} {'images/s':>9s} {'(rounds)':>10s} {'speed-up':>9s} {'img/CPU-s':>10s} "
          f"{'speed-up':>9s} {'outside step':>13s} {'vs fp32 NCHW':>13s} {'compile s':>10s}")
    for r in rows:
        spread = f"{min(r['images_per_s_all']):.0f}-{max(r['images_per_s_all']):.0f}"
        comp = f"{statistics.median(r['compile_seconds_all']):.0f}" if r.get("compiled") else "-"
        print(f"{r['pipeline']:40s} {r['images_per_s']:9.1f} {spread:>10s} {r['speedup_wall']:8.2f}x "
              f"{r['images_per_cpu_s_median']:10.1f} {r['speedup_cpu']:8.2f}x {100 * r['overhead']:12.1f}% "
              f"{r['speedup_over_fp32_nchw']:12.2f}x {comp:>10s}")
    for r in rows:
        if r.get("payback_epochs") is not None:
            comp = statistics.median(r["compile_seconds_all"])
            print(f"{r['pipeline']}: compile {comp:.0f} s pays back after {r['payback_epochs']:.2f} epochs of "
                  f"{len(train_idx)} images")
    print("images/s: fastest round (wall clock); img/CPU-s: median over rounds of images per process CPU-second,"
          " insensitive to other load when threads = 1")
    met = {label: {"speedup_wall": r["speedup_wall"] >= TARGET_SPEEDUP,
                   "speedup_cpu": r["speedup_cpu"] >= TARGET_SPEEDUP,
                   "overhead": r["overhead"] <= TARGET_OVERHEAD}
           for label, r in ((r["pipeline"], r) for r in rows[1:])}
    for label, m in met.items():
        verdict = ", ".join(f"{k} {'met' if v else 'missed'}" for k, v in m.items())
        print(f"targets (>= {TARGET_SPEEDUP}x, <= {100 * TARGET_OVERHEAD:.0f}% outside step) for {label}: {verdict}")
    out = {
        "arch": args.arch, "batch_size": args.batch_size, "train_images": rows[0]["images"],
        "device": "cpu", "cpu": platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
        "torch": torch.__version__, "load_average_start": load0, "load_average_end": os.getloadavg()[0],
        "repeats": args.repeats, "trial_epochs": args.trial_epochs, "rows": rows,
        "targets": {"speedup": TARGET_SPEEDUP, "overhead": TARGET_OVERHEAD, "fp32_default": TARGET_FP32_DEFAULT},
        "met": met,
        # met: the fastest rounds AND the median of the within-round ratios (one lucky round is not enough)
        "fp32_default_met": rows[1]["precision"] == "fp32" and rows[1]["speedup_wall"] >= TARGET_FP32_DEFAULT
        and rows[1]["speedup_round_median"] >= TARGET_FP32_DEFAULT,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    Path(args.out).with_suffix(".md").write_text(markdown(out))
    return 0


def markdown(out: dict) -> str:
    """The results as a Markdown table (written next to the JSON)."""
    lines = [f"# Trainer speed: {out['arch']}, batch {out['batch_size']}, {out['train_images']} training images",
             "",
             f"{out['threads']} CPU thread(s), torch {out['torch']}, {out['repeats']} round-robin rounds (fastest "
             f"kept), load average {out['load_average_start']:.1f} -> {out['load_average_end']:.1f}."
             f" Default row: `train` defaults for a {out.get('trial_epochs', '?')}-epoch trial.",
             "",
             "| pipeline | images/s | rounds | vs naive | vs naive, per round | vs fp32 NCHW eager | outside step |"
             " compile s | payback |",
             "|---|---:|---|---:|---:|---:|---:|---:|---:|"]
    for r in out["rows"]:
        rounds = ", ".join(f"{v:.0f}" for v in r["images_per_s_all"])
        comp = ", ".join(f"{v:.0f}" for v in r.get("compile_seconds_all", [])) or "-"
        payback = f"{r['payback_epochs']:.2f} ep" if r.get("payback_epochs") is not None else "-"
        lines.append(f"| {r['pipeline']} | {r['images_per_s']:.1f} | {rounds} | {r['speedup_wall']:.2f}x | "
                     f"{r['speedup_round_median']:.2f}x | {r['speedup_over_fp32_nchw']:.2f}x | "
                     f"{100 * r['overhead']:.1f} % | {comp} | {payback} |")
    per_round = ", ".join(f"{v:.2f}x" for v in out["rows"][1].get("speedup_round_all", []))
    lines += ["", f"fp32 default >= {out['targets'].get('fp32_default', 1.5)}x naive (fastest rounds and the median "
              f"round): {'met' if out.get('fp32_default_met') else 'missed'}; 'vs naive, per round': the median of "
              f"the ratios within each round (the default row's rounds: {per_round or '-'}).", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
