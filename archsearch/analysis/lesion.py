"""The seeds' own analyses of a trained network: test-time lesions and effective paths.

Veit et al. (and after them Multi-ResNet) delete residual units of a trained network at test time and
read the ensemble view off the errors: one deletion barely hurts, the error grows smoothly with the
number deleted. `lesion_study` measures exactly that: the error with nothing removed, after each single
deletion (`archsearch.nn.lesion.deletable_parts`: units, functions, branches, streams, warp terms), and
after n random whole-unit deletions for n = 1..N (several seeded draws), beside the surviving paths.
BN statistics stay the trained ones (the papers' protocol) unless `recalibrate` gives images to
re-estimate them on for every lesioned network.

`effective_paths` is Veit et al.'s sampling method: for each path length l, sample paths that pass the
residual branch of l units and the shortcut of the rest, backpropagate along that path only, and take
the gradient's norm at the body's input; times the number of paths of length l, normalised, it is the
share of the gradient carried by paths of each length.
"""

from __future__ import annotations

import contextlib
import math
import random
import statistics
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from archsearch.nn.lesion import (
    Part,
    deletable_parts,
    lesion,
    route_gradient,
    single_functions,
    surviving_paths,
    whole_units,
)
from archsearch.nn.norm import batch_norm_layers
from archsearch.train.augment import Normalizer
from archsearch.train.evaluate import evaluate, recalibrate_bn

Progress = Callable[[str], None]


class Evaluator:
    """Validation error of one network under changing lesions, BN kept trained or recalibrated per lesion."""

    def __init__(self, net: nn.Module, images: Tensor, labels: Tensor, normalize: Normalizer, *,
                 batch_size: int = 500, recalibrate: Tensor | None = None, bn_batch_size: int = 128) -> None:
        self.net, self.images, self.labels, self.normalize = net, images, labels, normalize
        self.batch_size = batch_size
        self.recalibrate = recalibrate
        self.bn_batch_size = bn_batch_size
        self.evaluations = 0

    def error(self, parts: Sequence[Part] = ()) -> float:
        """Error in percent with `parts` deleted."""
        self.evaluations += 1
        with lesion(self.net, parts), self._bn():
            return evaluate(self.net, self.images, self.labels, self.normalize, batch_size=self.batch_size)[1]

    @contextlib.contextmanager
    def _bn(self) -> Iterator[None]:
        if self.recalibrate is None:
            yield
            return
        saved = [{k: b.clone() for k, b in bn.named_buffers(recurse=False)} for bn in batch_norm_layers(self.net)]
        try:
            recalibrate_bn(self.net, self.recalibrate, self.normalize, batch_size=self.bn_batch_size)
            yield
        finally:
            with torch.no_grad():
                for bn, buffers in zip(batch_norm_layers(self.net), saved, strict=True):
                    for key, b in bn.named_buffers(recurse=False):
                        b.copy_(buffers[key])


def draw_deletions(units: int, n: int, draws: int, seed: int) -> list[tuple[int, ...]]:
    """`draws` distinct sets of n unit indices (fewer when fewer exist), reproducible from `seed`."""
    rng = random.Random(f"lesion:{seed}:{units}:{n}")
    wanted = min(draws, math.comb(units, n))
    out: list[tuple[int, ...]] = []
    while len(out) < wanted:
        pick = tuple(sorted(rng.sample(range(units), n)))
        if pick not in out:
            out.append(pick)
    return out


def _part_row(part: Part, error: float) -> dict[str, Any]:
    return {"stage": part.stage, "unit": part.unit, "part": part.part, "downsampling": part.downsampling,
            "error": error}


def lesion_study(evaluator: Evaluator, *, draws: int = 5, seed: int = 0, max_removed: int | None = None,
                 remove: str = "units", progress: Progress | None = None) -> dict[str, Any]:
    """Base error, every single deletion, and error vs number of whole units (or single residual functions,
    `remove="functions"`) removed at random, mean ± std over draws."""
    net = evaluator.net
    say = progress or (lambda _msg: None)
    parts = deletable_parts(net)
    units = whole_units(net) if remove == "units" else single_functions(net)
    base = evaluator.error()
    say(f"no deletion: {base:.2f} % error")
    single = []
    for i, part in enumerate(parts, start=1):
        single.append(_part_row(part, evaluator.error([part])))
        say(f"single deletion {i}/{len(parts)}: {part.label()}: {single[-1]['error']:.2f} %")
    removed = []
    top = len(units) if max_removed is None else min(max_removed, len(units))
    for n in range(1, top + 1):
        errors, paths = [], []
        for pick in draw_deletions(len(units), n, draws, seed):
            chosen = [units[i] for i in pick]
            errors.append(evaluator.error(chosen))
            with lesion(net, chosen):
                paths.append(surviving_paths(net))
        removed.append({"n": n, "error_mean": statistics.fmean(errors),
                        "error_std": statistics.stdev(errors) if len(errors) > 1 else 0.0,
                        "draws": len(errors), "paths": paths[0] if len(set(paths)) == 1 else statistics.fmean(paths)})
        say(f"{n} of {len(units)} {remove} removed: {removed[-1]['error_mean']:.2f} ± {removed[-1]['error_std']:.2f} %")
    return {"base_error": base, "paths": surviving_paths(net), "units": len(whole_units(net)), "remove": remove,
            "removable": len(units), "single": single,
            "removed": removed, "bn": "trained" if evaluator.recalibrate is None else "recalibrated"}


def path_counts(functions_per_unit: Sequence[int]) -> list[int]:
    """Paths through n units by their number of residual units passed: coefficients of prod(1 + k_u z).

    For n units of k functions each this is the binomial law C(n, l) k^l (Veit et al., Multi-ResNet).
    """
    counts = [1]
    for k in functions_per_unit:
        counts = [a + k * b for a, b in zip([*counts, 0], [0, *counts], strict=True)]
    return counts


def effective_paths(net: nn.Module, images: Tensor, labels: Tensor, normalize: Normalizer, *,
                    samples: int = 3, batch_size: int = 64, seed: int = 0,
                    progress: Progress | None = None) -> dict[str, Any]:
    """Gradient share carried by paths of each length (in residual units), Veit et al.'s sampling.

    For each length l and each of `samples` draws: l random units pass the gradient through one random
    function (the others and the shortcut detached), the rest through their shortcut only; the gradient
    norm of the loss at the body's input (the stem's output) on one batch is that path's magnitude.
    Trained BN statistics (eval mode). `share[l]` = paths(l) x mean magnitude(l), normalised to sum to 1.
    """
    say = progress or (lambda _msg: None)
    units = list(net.body)
    ks = [len(u.functions) for u in units]
    counts = path_counts(ks)
    rng = random.Random(f"paths:{seed}")
    x = normalize(images[:batch_size])
    y = labels[:batch_size]
    was_training = net.training
    net.eval()
    magnitude = []
    try:
        for length in range(len(units) + 1):
            norms = []
            for _ in range(samples):
                on = set(rng.sample(range(len(units)), length))
                route = [rng.randrange(k) if i in on else None for i, k in enumerate(ks)]
                norms.append(_path_gradient(net, x, y, route))
            magnitude.append(statistics.fmean(norms))
            say(f"paths of length {length}/{len(units)}: gradient {magnitude[-1]:.3g}")
    finally:
        net.train(was_training)
    total = [c * m for c, m in zip(counts, magnitude, strict=True)]
    shares = [t / sum(total) for t in total]
    convs = getattr(units[0], "convs", 2)
    return {"units": len(units), "convs_per_function": convs, "lengths": list(range(len(units) + 1)),
            "paths": counts, "gradient": magnitude, "share": shares, "range": effective_range(shares)}


def _path_gradient(net: nn.Module, x: Tensor, y: Tensor, route: list[int | None]) -> float:
    with torch.enable_grad(), route_gradient(net, route):
        h = net.stem(x).detach().requires_grad_()
        loss = nn.functional.cross_entropy(net.head(net.body(h)), y)
        (grad,) = torch.autograd.grad(loss, h)
    return float(grad.norm())


def effective_range(shares: Sequence[float], mass: float = 0.9) -> tuple[int, int]:
    """The central lengths [lo, hi] holding `mass` of the gradient (5 %..95 % quantiles for 0.9)."""
    tail = (1 - mass) / 2
    cumulative, lo, hi = 0.0, None, len(shares) - 1
    for length, share in enumerate(shares):
        cumulative += share
        if lo is None and cumulative > tail:
            lo = length
        if cumulative >= 1 - tail - 1e-12:
            hi = length
            break
    return (lo or 0, hi)
