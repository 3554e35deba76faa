"""Child process of `archsearch.train.layout`: time training steps of one network in NCHW, then channels_last.

Run as `python -m archsearch.train.layout_probe NAME C,H,W BATCH THREADS CLASSES`; prints one JSON line. NCHW
runs first so a channels_last crash still leaves its timing measured; the parent treats any death as unsafe.
"""

from __future__ import annotations

import json
import sys
import time

import torch

from archsearch.nn.build import build

STEPS = 3  # after one warm-up step: enough to rank layouts whose difference is worth having


def _time_steps(net: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, channels_last: bool) -> float:
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    net = net.to(memory_format=fmt)
    x = x.contiguous(memory_format=fmt)
    opt = torch.optim.SGD(net.parameters(), lr=0.01)
    best = float("inf")
    for step in range(STEPS + 1):
        start = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(net(x), y).backward()
        opt.step()
        if step:
            best = min(best, time.perf_counter() - start)
    return best


def main(argv: list[str]) -> int:
    name, shape, batch, threads, classes = argv
    torch.set_num_threads(int(threads))
    torch.manual_seed(0)
    c, h, w = (int(v) for v in shape.split(","))
    net = build(name, num_classes=int(classes), strategy="loop").train()
    x = torch.randn(int(batch), c, h, w)
    y = torch.randint(0, int(classes), (int(batch),))
    out: dict[str, object] = {"nchw_s": _time_steps(net, x, y, False)}
    print(json.dumps(out), flush=True)  # a crash below still leaves the NCHW timing
    try:
        out["nhwc_s"] = _time_steps(net, x, y, True)
    except RuntimeError as exc:
        out["error"] = str(exc).splitlines()[0][:200]
    print(json.dumps(out), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
